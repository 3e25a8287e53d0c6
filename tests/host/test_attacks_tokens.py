"""Attack catalogue for bearer tokens (issue #7), run through the whole pure gateway.

Every case goes through `Gateway.handle` exactly as the Worker calls it: the real compiled
policy from policies/, the mock Entra tenant over HTTP for discovery and keys, and the host
RSA verifier. A forged or malformed token must end in a 401 answer (never an exception,
never a forward); a genuine token that is merely not entitled ends in a 403.
tests/host/test_tokens.py covers the validator's rules one by one; this file attacks them.

Every refusal is asserted with the check that made it (`Gate.refused(token, detail)`: the
error code and the exact detail), and every attack is built so that the check it targets is
the only one that can refuse it: genuinely signed, right audience, issuer, tenant and times,
unless the attack is on one of those. So removing a check fails the test that names it,
instead of the attack being caught by whichever check happens to come later.
"""

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from pathlib import Path
from urllib.parse import unquote

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from entragate_mocks.mock_entra import DEFAULT_GROUPS, DEFAULT_TENANT_ID, DEFAULT_USER_OID, MockTenant

from entragate.config import Config
from entragate.credential import MAX_TOKEN_BYTES
from entragate.errors import CAUSES, GatewayError, InvalidToken, MalformedCredential
from entragate.assertion import parse_signing_key
from entragate.gateway import Forward, IncomingRequest, assemble, decision_audit_line
from entragate.tokens import _decode as read_token
from entragate.upstream import referenced_groups
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import HostSigner, HostVerifier, new_assertion_key
from entragate_tools.host_io import MemoryStore, UrllibHttp, wall_clock
from fixtures.examples import EXAMPLE_POLICIES
from fixtures.host_gateway import SIGNIN_ENV, signin_platform

COMPILED = compile_policies(EXAMPLE_POLICIES)
PLATFORM_ADMINS = "11111111-1111-4111-8111-111111111111"
API_WRITERS = "22222222-2222-4222-8222-222222222222"
OTHER_TENANT = "0a0b0c0d-1111-4222-8333-444455556666"
GRAPH = "00000003-0000-0000-c000-000000000000"
FF, NUL = b"\xff", b"\x00"


def b64(data) -> str:
    if not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# The checks, by the detail their refusal carries (tokens.py, claims.py, credential.py).
CREDENTIAL = "malformed_credential"
NOT_COMPACT = "token is not a single compact JWS"  # credential.py, with code CREDENTIAL
ALG = "signing algorithm not allowed"
TYP = "token type must be JWT"
NO_KID = "token has no usable kid"
NO_KEY = "signing key not found"
SIGNATURE = "signature verification failed"
VERSION = "token version not accepted"
NO_TID = "token has no valid tid"
TENANT = "tenant not allowed"
AUDIENCE = "token is not for this audience"
ISSUER = "issuer mismatch"
EXPIRED = "token expired"
NOT_YET = "token not yet valid"
PYJWT = "malformed token"  # PyJWT's own reader refused (its message is not passed on)
# The audit line's `cause` for each of them (errors.CAUSES; docs/DENIALS.md, "The audit line").
CAUSE_OF = {
    NOT_COMPACT: "not_compact_jws", ALG: "algorithm", TYP: "token_type", NO_KID: "kid", NO_KEY: "unknown_key",
    SIGNATURE: "signature", VERSION: "version", NO_TID: "tenant_id", TENANT: "tenant_not_allowed",
    AUDIENCE: "audience", ISSUER: "issuer", EXPIRED: "expired", NOT_YET: "not_yet_valid", PYJWT: "malformed",
}


def forbidden(name: str) -> str:
    return f"header parameter {name} not allowed"


def strict(rule: str) -> str:
    """A refusal by the gateway's strict reader (tokens.py, pyjwt.py)."""
    return f"malformed token: {rule}"


@pytest.fixture(scope="module")
def tenant():
    with MockTenant() as running:
        yield running


class Gate:
    """The pure gateway wired as the Worker wires it, with host adapters."""

    def __init__(self, tenant, compiled=COMPILED, signer=None, **overrides):
        env = {
            "ORIGIN_URL": "http://origin.invalid",
            "ENTRA_TENANT_ID": tenant.tenant_id,
            "ENTRA_AUTHORITY": tenant.authority,
            "ENTRA_AUDIENCES": f"{tenant.client_id},{tenant.app_id_uri}",
            **(SIGNIN_ENV if compiled.policy.has_login_routes else {}),
            **overrides,
        }
        self.tenant = tenant
        self.config = Config.from_env(env.get)
        self.http = UrllibHttp()
        self.logs = []
        self.gateway = assemble(
            self.config, compiled.policy, http=self.http, store=MemoryStore(), verifier=HostVerifier(),
            clock=wall_clock, log=self.logs.append, policy_groups=referenced_groups(compiled.data), signer=signer,
            platform=signin_platform(compiled.policy),
        )

    def handle(self, authorization=None, *, method="GET", path="/api/items", host="gw.example"):
        names = ("host",) + (("authorization",) if authorization is not None else ())
        request = IncomingRequest(method, f"https://{host}{path}", "req-1", names, authorization=authorization)

        async def run():
            deferred = []
            try:
                return await self.gateway.handle(request, deferred.append)
            finally:
                for coroutine in deferred:
                    await coroutine

        return asyncio.run(run())

    def status(self, token, **kwargs):
        """(status, reason code, rule); a forward is reported as 200 'forward'."""
        result = self.handle(None if token is None else f"Bearer {token}", **kwargs)
        if isinstance(result, Forward):
            return 200, "forward", result.rule
        return result.status, result.code, result.rule

    def refused(self, token, detail, code="invalid_token", **kwargs):
        """Assert that `token` gets a 401 from the check named by `code` and `detail` (the
        problem JSON's `detail`, also the challenge's error_description): which check refused,
        not merely that one did."""
        result = self.handle(None if token is None else f"Bearer {token}", **kwargs)
        assert not isinstance(result, Forward), f"forwarded by {result.rule}; expected a refusal: {detail}"
        got = (result.status, result.code, json.loads(result.body)["detail"])
        assert got == (401, code, detail), got
        # The audit line names the check too, as a stable code (never anything from the token).
        assert result.cause in CAUSES, (result.cause, detail)
        if detail in CAUSE_OF:
            assert result.cause == CAUSE_OF[detail], (result.cause, detail)

    def refusal(self, token, **kwargs) -> str:
        """The error_description of the 401 a token gets (asserting that it is one)."""
        result = self.handle(f"Bearer {token}", **kwargs)
        assert not isinstance(result, Forward) and (result.status, result.code) == (401, "invalid_token"), result
        challenge = dict(result.headers)["www-authenticate"]
        return challenge.partition('error_description="')[2].rstrip('"')

    def validate(self, token):
        async def run():
            deferred = []
            try:
                return await self.gateway.validator.validate(token, deferred.append)
            finally:
                for coroutine in deferred:
                    await coroutine

        return asyncio.run(run())


@pytest.fixture(scope="module")
def gate(tenant):
    gate = Gate(tenant)
    assert gate.status(tenant.mint()) == (200, "forward", "api-read"), "the control token must pass"
    return gate


@pytest.fixture(scope="module")
def private_key(tenant):
    return serialization.load_pem_private_key(tenant.private_key_pem().encode(), None)


@pytest.fixture(scope="module")
def attacker_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rs256(key, signing_input: str) -> str:
    return b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))


def signed(key, header, payload) -> str:
    """Sign raw header/payload (bytes kept byte for byte, dicts serialised) with RS256."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    return f"{signing_input}.{rs256(key, signing_input)}"


def parts(tenant, **mint):
    header, payload, _ = tenant.mint(**mint).split(".")
    return unb64(header), unb64(payload)


# --- the signature: none, stripped, empty, psychic ------------------------------------------

@pytest.mark.parametrize("alg", [
    "none", "None", "NONE", "nOnE", "NoNe", " none", "none ", "none\u0000", "RS256 ", " RS256", "rs256",
    "Rs256", "RS256\u0000", "RS2\u200b56", "HS256", "HS384", "HS512", "ES256", "ES384", "PS256", "EdDSA",
    "", None, 256, ["RS256"], {"alg": "RS256"}, True,
])
def test_alg_none_and_every_lookalike_is_401(tenant, gate, private_key, alg):
    header, payload = parts(tenant)
    header["alg"] = alg
    token = signed(private_key, header, payload)  # a valid RS256 signature: only alg is wrong
    gate.refused(token, ALG)
    none_header = b64(dict(header))
    gate.refused(f"{none_header}.{b64(payload)}.", NOT_COMPACT, CREDENTIAL)  # no signature at all
    gate.refused(f"{none_header}.{b64(payload)}", NOT_COMPACT, CREDENTIAL)


def test_stripped_empty_and_substituted_signatures_are_401(tenant, gate):
    header, payload, signature = tenant.mint().split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    other = tenant.mint(claims={"oid": "00000000-0000-4000-8000-000000000000"}).split(".")[2]
    for forged in [f"{header}.{payload}.", f"{header}.{payload}"]:
        gate.refused(forged, NOT_COMPACT, CREDENTIAL)
    for forged in [
        f"{header}.{payload}.{b64(bytes(len(raw)))}",  # all zero bytes
        f"{header}.{payload}.{b64(FF * len(raw))}",
        f"{header}.{payload}.{b64(raw[:-1])}",  # one byte short
        f"{header}.{payload}.{b64(raw + NUL)}",  # one byte long
        f"{header}.{payload}.{b64(raw[:1])}",
        f"{header}.{payload}.{other}",  # a real signature over other claims
        f"{header}.{payload}.{b64(bytes([raw[0] ^ 1]) + raw[1:])}",
    ]:
        gate.refused(forged, SIGNATURE)


@pytest.mark.parametrize("signature", [
    bytes(64),  # r = s = 0 (CVE-2022-21449, "psychic signatures"), raw IEEE P1363 form
    bytes.fromhex("3006020100020100"),  # the same in DER
    bytes(96), bytes(132),
])
@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "RS256"])
def test_ecdsa_psychic_signatures_are_401(tenant, gate, signature, alg):
    header, payload = parts(tenant)
    header["alg"] = alg
    gate.refused(f"{b64(header)}.{b64(payload)}.{b64(signature)}", SIGNATURE if alg == "RS256" else ALG)


# --- algorithm confusion: the public key as an HMAC secret ----------------------------------

def public_key_forms(tenant):
    jwk = tenant.public_jwk()
    public = serialization.load_pem_private_key(tenant.private_key_pem().encode(), None).public_key()
    cert = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    pkcs1 = serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    return {
        "pem-spki": public.public_bytes(*spki),
        "pem-spki-no-newline": public.public_bytes(*spki).rstrip(b"\n"),
        "pem-pkcs1": public.public_bytes(*pkcs1),
        "der-spki": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der-pkcs1": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1),
        "openssh": public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "jwk-json-n-e": json.dumps({"kty": "RSA", "n": jwk["n"], "e": jwk["e"]}).encode(),
        "jwk-n": jwk["n"].encode(),
        "cert-pem": cert.public_bytes(serialization.Encoding.PEM),
        "cert-der": cert.public_bytes(serialization.Encoding.DER),
        "x5c-base64": jwk["x5c"][0].encode(),
        "empty": b"",
    }


@pytest.mark.parametrize("alg,digest", [("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)])
def test_rs256_to_hmac_confusion_with_every_public_key_form_is_401(tenant, gate, alg, digest):
    header, payload = parts(tenant)
    for name, secret in public_key_forms(tenant).items():
        for kid in (header["kid"], None):
            forged_header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
            signing_input = f"{b64(forged_header)}.{b64(payload)}"
            signature = b64(hmac.new(secret, signing_input.encode(), digest).digest())
            gate.refused(f"{signing_input}.{signature}", ALG)


# --- header parameters that bring their own key or change processing ------------------------

def attacker_jwk(key, kid="attacker"):
    numbers = key.public_key().public_numbers()
    as_b64 = lambda value: b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))  # noqa: E731
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": as_b64(numbers.n), "e": as_b64(numbers.e)}


def test_embedded_jwk_signed_by_the_attacker_is_401(tenant, gate, attacker_key):
    header, payload = parts(tenant)
    jwk = attacker_jwk(attacker_key)
    for kid in ("attacker", header["kid"]):
        gate.refused(signed(attacker_key, {**header, "kid": kid, "jwk": jwk}, payload), forbidden("jwk"))
    # Without the jwk, still the attacker's key: unknown kid, or a known kid it did not sign for.
    gate.refused(signed(attacker_key, {**header, "kid": "attacker"}, payload), NO_KEY)
    gate.refused(signed(attacker_key, header, payload), SIGNATURE)
    # The genuine key's own token with an embedded jwk is refused for the jwk alone.
    gate.refused(tenant.mint(headers={"jwk": tenant.public_jwk()}), forbidden("jwk"))


@pytest.mark.parametrize("param", ["jku", "x5u"])
def test_jku_and_x5u_are_never_followed(tenant, gate, attacker_key, param):
    header, payload = parts(tenant)
    before = list(gate.http.requests)
    jwks_url = tenant.discovery_url().replace(".well-known/openid-configuration", "discovery/v2.0/keys")
    targets = [
        "https://attacker.example/keys.json", "http://127.0.0.1:1/keys", "file:///etc/passwd",
        jwks_url,  # even the tenant's own key URL: key locations never come from a token
        "//attacker.example/keys", "data:application/json,{}",
    ]
    for url in targets:
        gate.refused(signed(attacker_key, {**header, param: url, "kid": "attacker"}, payload), forbidden(param))
        gate.refused(tenant.mint(headers={param: url}), forbidden(param))  # genuinely signed, still refused
    assert gate.http.requests == before, "no URL from a token header was fetched"


def test_x5c_with_the_attackers_certificate_is_401(tenant, gate, attacker_key):
    header, payload = parts(tenant)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "accounts.accesscontrol.windows.net")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(attacker_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(attacker_key, hashes.SHA256())
    )
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    gate.refused(signed(attacker_key, {**header, "x5c": x5c}, payload), forbidden("x5c"))
    gate.refused(tenant.mint(headers={"x5c": tenant.public_jwk()["x5c"]}), forbidden("x5c"))  # even the genuine one


KID_ATTACKS = [
    "../../../../../../dev/null", "/dev/null", "..\\..\\windows\\win.ini", "file:///etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "' OR '1'='1", "1; DROP TABLE keys; --", "\" OR \"\"=\"",
    "$(id)", "`id`", "| cat /etc/passwd", "; rm -rf /", "a\r\nX-Injected: 1", "a\u0000b", "\u202e",
    "k" * 128, "{{7*7}}", "${jndi:ldap://127.0.0.1:1/a}", "__proto__", "constructor", "hasOwnProperty",
]


def test_kid_injection_values_are_401_and_buy_no_key_fetches(tenant, gate):
    real = tenant.signing_kid
    before = len(gate.http.requests)
    for kid in KID_ATTACKS + [real.upper(), real + " ", " " + real, real + "\u0000", real[:-1]]:
        gate.refused(tenant.mint(headers={"kid": kid}), NO_KEY)
    gate.refused(tenant.mint(headers={"kid": tenant.public_jwk()["x5t"]}), NO_KEY)  # the thumbprint is not the kid
    assert len(gate.http.requests) == before, "unknown kids within the cooldown fetch nothing"


def test_a_kid_that_is_missing_empty_or_longer_than_any_key_is_refused_before_any_lookup(tenant, gate, private_key):
    before = len(gate.http.requests)
    header, payload = parts(tenant)
    del header["kid"]
    gate.refused(signed(private_key, header, payload), NO_KID)
    for kid in ("", "k" * 129):
        gate.refused(tenant.mint(headers={"kid": kid}), NO_KID)
    for kid in (None, 5, ["k"]):  # PyJWT's own reader refuses a kid that is not a string
        gate.refused(tenant.mint(headers={"kid": kid}), PYJWT)
    assert len(gate.http.requests) == before


@pytest.mark.parametrize("extra,detail", [
    # PyJWT itself refuses a `crit` it does not support and b64=false (RFC 7797) without a
    # detached payload; the gateway's own refusal of both is the second layer, below.
    ({"crit": ["exp"]}, PYJWT), ({"crit": []}, PYJWT), ({"crit": "b64"}, PYJWT),
    ({"crit": ["b64"], "b64": False}, PYJWT), ({"b64": False}, PYJWT),
    # What PyJWT lets through: refused by the gateway's list of forbidden header parameters
    # (a `crit` PyJWT takes names b64, which must then be present and sorts first).
    ({"crit": ["b64"], "b64": True}, forbidden("b64")), ({"b64": True}, forbidden("b64")),
    ({"cty": "JWT"}, forbidden("cty")), ({"cty": "jwt"}, forbidden("cty")), ({"zip": "DEF"}, forbidden("zip")),
    ({"enc": "A256GCM"}, forbidden("enc")),
    ({"typ": "at+jwt"}, TYP), ({"typ": "JWE"}, TYP), ({"typ": ["JWT"]}, TYP), ({"typ": ""}, TYP),
])
def test_processing_changing_header_parameters_are_401(tenant, gate, extra, detail):
    gate.refused(tenant.mint(headers=extra), detail)


def test_detached_b64_false_token_is_401(tenant, gate, private_key):
    header, payload = parts(tenant)
    header.update(b64=False, crit=["b64"])
    signing_input = f"{b64(header)}.{json.dumps(payload)}"  # RFC 7797: the payload is not encoded
    signature = rs256(private_key, signing_input)
    gate.refused(f"{b64(header)}..{signature}", NOT_COMPACT, CREDENTIAL)  # detached: an empty segment
    gate.refused(f"{b64(header)}.{b64(payload)}.{signature}", PYJWT)  # PyJWT: b64=false needs a detached payload


def test_nested_jwt_is_401(tenant, gate, private_key):
    inner = tenant.mint()
    header, payload = parts(tenant)
    outer_header = {**header, "cty": "JWT"}
    signing_input = f"{b64(outer_header)}.{b64(inner.encode())}"
    gate.refused(f"{signing_input}.{rs256(private_key, signing_input)}", strict("payload is not valid JSON"))
    # Without cty the payload is a JSON-less string: also refused, never unwrapped.
    signing_input = f"{b64(header)}.{b64(inner.encode())}"
    gate.refused(f"{signing_input}.{rs256(private_key, signing_input)}", strict("payload is not valid JSON"))
    signing_input = f"{b64(header)}.{b64(json.dumps(inner).encode())}"  # a JSON string
    gate.refused(f"{signing_input}.{rs256(private_key, signing_input)}", strict("payload is not a JSON object"))
    # cty on an otherwise genuine token: refused for the header parameter itself.
    gate.refused(signed(private_key, outer_header, payload), forbidden("cty"))


# --- JSON: duplicates, nesting, size --------------------------------------------------------

def _raw_object(pairs) -> bytes:
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()


def _raw_object_text(pairs) -> str:
    """A JSON object from (raw key text, value) pairs: duplicates and escapes kept as written."""
    return "{" + ",".join(f"{key}:{json.dumps(value)}" for key, value in pairs) + "}"


@pytest.mark.parametrize("where,name,first,second", [
    ("header", "alg", "none", "RS256"),
    ("header", "alg", "RS256", "none"),
    ("header", "kid", "attacker", None),  # None: the genuine value
    ("header", "kid", None, "attacker"),
    ("payload", "aud", GRAPH, None),
    ("payload", "aud", None, GRAPH),
    ("payload", "tid", OTHER_TENANT, None),
    ("payload", "roles", ["Gateway.Invoke"], ["Reader"]),
    ("payload", "exp", 1, None),
    ("payload", "exp", None, 1),
    ("payload", "oid", "00000000-0000-4000-8000-000000000000", None),
])
@pytest.mark.parametrize("escaped", [False, True])
def test_duplicate_members_are_401_whichever_comes_first(tenant, gate, private_key, where, name, first, second, escaped):
    header, payload = parts(tenant)
    target = header if where == "header" else payload
    genuine = target.get(name)
    first = genuine if first is None else first
    second = genuine if second is None else second
    # The second spelling may use a JSON escape ("\u0061lg" is "alg"): still a duplicate.
    second_key = '"' + "".join(f"\\u{ord(c):04x}" for c in name) + '"' if escaped else json.dumps(name)
    pairs = [(json.dumps(k), v) for k, v in target.items() if k != name]
    raw = _raw_object_text(pairs + [(json.dumps(name), first), (second_key, second)]).encode()
    assert json.loads(raw)[name] == second
    token = signed(private_key, raw, payload) if where == "header" else signed(private_key, header, raw)
    gate.refused(token, strict(f"{where} holds a member name twice"))


def test_duplicate_members_deep_inside_claims_are_401(tenant, gate, private_key):
    header, payload = parts(tenant)
    raw = _raw_object(payload.items()).decode()[:-1] + ',"_claim_names":{"groups":"a","groups":"b"}}'
    gate.refused(signed(private_key, header, raw.encode()), strict("payload holds a member name twice"))


@pytest.mark.parametrize("where", ["header", "payload"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
def test_json_not_in_plain_utf8_is_401(tenant, gate, private_key, where, encoding):
    """RFC 7519 §7.2: the JSON is UTF-8. Python's json.loads(bytes) would also read UTF-16/32
    and a UTF-8 byte-order mark, so a signed token in those encodings must still be refused."""
    header, payload = parts(tenant)
    target = header if where == "header" else payload
    raw = json.dumps(target).encode(encoding)
    assert json.loads(raw) == target, "Python's own reader would accept it"
    token = signed(private_key, raw, payload) if where == "header" else signed(private_key, header, raw)
    gate.refused(token, strict(f"{where} is not valid JSON"))


@pytest.mark.parametrize("where", ["header", "payload"])
@pytest.mark.parametrize("depth", [100, 1_000, 5_000])
def test_deeply_nested_json_is_read_or_refused_not_a_crash(tenant, gate, private_key, where, depth):
    """Genuinely signed: nesting a reader copes with is an unknown member like any other (the
    token passes); deeper nesting is refused by the reader that gives up, never a crash."""
    header, payload = parts(tenant)
    nested = "[" * depth + "]" * depth
    target = header if where == "header" else payload
    raw = _raw_object(target.items()).decode()[:-1] + f',"x":{nested}}}'
    token = signed(private_key, raw.encode(), payload) if where == "header" else signed(private_key, header, raw.encode())
    assert len(token) <= MAX_TOKEN_BYTES, "within the size limit: the parser must cope"
    if depth <= 100:
        assert gate.status(token) == (200, "forward", "api-read")
    else:  # PyJWT reads the header first; the payload is read by the gateway's strict reader
        gate.refused(token, PYJWT if where == "header" else strict("payload is not valid JSON"))


def test_nesting_beyond_the_recursion_limit_is_invalid_token_in_the_validator(tenant, gate, private_key):
    header, payload = parts(tenant)
    depth = 200_000  # far past the credential limit; the validator must still not crash
    raw = _raw_object(payload.items()).decode()[:-1] + ',"x":' + "[" * depth + "]" * depth + "}"
    with pytest.raises(InvalidToken) as refusal:
        gate.validate(signed(private_key, header, raw.encode()))
    assert refusal.value.detail == strict("payload is not valid JSON")
    raw_header = _raw_object(header.items()).decode()[:-1] + ',"x":' + "{\"a\":" * depth + "1" + "}" * depth + "}"
    with pytest.raises(InvalidToken) as refusal:
        gate.validate(signed(private_key, raw_header.encode(), payload))
    assert refusal.value.detail == PYJWT


def test_size_limit_is_exact_and_a_genuine_large_token_still_passes(tenant, gate):
    small = tenant.mint()
    filler = MAX_TOKEN_BYTES - len(small)
    # Grow a genuinely signed token to just under / just over the limit.
    for pad in range(filler * 3 // 4 - 40, filler * 3 // 4 + 40):
        token = tenant.mint(claims={"pad": "x" * pad})
        if len(token) in (MAX_TOKEN_BYTES, MAX_TOKEN_BYTES + 1):
            break
    under = tenant.mint(claims={"pad": "x" * (pad - 8)})
    assert len(under) <= MAX_TOKEN_BYTES and gate.status(under)[0] == 200
    over = tenant.mint(claims={"pad": "x" * (pad + 8)})
    assert len(over) > MAX_TOKEN_BYTES
    gate.refused(over, f"token longer than {MAX_TOKEN_BYTES} bytes", CREDENTIAL)
    gate.refused(small + "A" * 1_000_000, f"token longer than {MAX_TOKEN_BYTES} bytes", CREDENTIAL)


def test_the_size_limit_counts_the_token_alone_to_the_byte():
    from entragate.credential import extract_bearer

    exact = "a" * MAX_TOKEN_BYTES
    assert extract_bearer(f"Bearer {exact}") == exact
    assert extract_bearer(f" Bearer   {exact}  ") == exact  # the spaces around it are not counted
    with pytest.raises(MalformedCredential) as refusal:
        extract_bearer(f"Bearer {exact}a")
    assert refusal.value.detail == f"token longer than {MAX_TOKEN_BYTES} bytes"


def test_only_spaces_around_the_credential_are_trimmed():
    from entragate.credential import extract_bearer

    assert extract_bearer("Bearer  XaX.XbX.XcX ") == "XaX.XbX.XcX"
    assert extract_bearer("\tBearer e30.e30.AA\t") == "e30.e30.AA"


def answer_detail(result) -> tuple:
    assert not isinstance(result, Forward), result
    return result.status, result.code, json.loads(result.body)["detail"]


def test_no_credential_or_another_scheme_is_refused_by_the_credential_checks(tenant, gate):
    token = tenant.mint()
    for authorization in (None, "", " \t "):
        assert answer_detail(gate.handle(authorization)) == (401, "missing_token", "no bearer token")
    for authorization in (f"Basic {token}", f"Token {token}", f"Bearer{token}", f"Bearerx {token}", f"XBearer {token}",
                          f"Bearer\t{token}", f"DPoP {token}", token):
        assert answer_detail(gate.handle(authorization)) == (
            401, CREDENTIAL, "authorization scheme must be Bearer"), authorization
    for authorization in ("Bearer", "Bearer ", "bearer     "):
        assert answer_detail(gate.handle(authorization)) == (401, CREDENTIAL, "empty bearer token")
    assert gate.status(token, host="gw.example") == (200, "forward", "api-read")
    assert isinstance(gate.handle(f"bEaReR {token}"), Forward)  # the scheme is case-insensitive (RFC 9110 §11.1)


# --- encoding: non-canonical base64url and segment counts -----------------------------------

def encoding_variants(token):
    header, payload, signature = token.split(".")
    variants = {
        "pad-header": f"{header}=.{payload}.{signature}",
        "pad-signature-1": f"{header}.{payload}.{signature}=",
        "pad-signature-2": f"{header}.{payload}.{signature}==",
        "pad-signature-4": f"{header}.{payload}.{signature}====",
        "std-alphabet": token.replace("-", "+").replace("_", "/"),
        "space-inside": f"{header}.{payload[:10]} {payload[10:]}.{signature}",
        "tab-inside": f"{header}.{payload}.{signature[:10]}\t{signature[10:]}",
        "newline-inside": f"{header}.{payload}.{signature[:10]}\n{signature[10:]}",
        "crlf-inside": f"{header}.\r\n{payload}.{signature}",
        "trailing-newline": token + "\n",
        "stray-bang": f"{header}.{payload}.{signature}!",
        "stray-percent": f"{header}.{payload}.%{signature}",
        "stray-star": f"{header}.{payload}*.{signature}",
        "stray-nul": f"{header}.{payload}.{signature}\u0000",
        "non-ascii": f"{header}.{payload}.{signature[:-1]}\u00e9",
        "fullwidth-dot": f"{header}\uff0e{payload}.{signature}",
        "quoted": f'"{token}"',
        "comma-second-token": f"{token}, {token}",
        "leading-dot": "." + token,
        "trailing-dot": token + ".",
    }
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(signature[-1])
    for j in range(index & ~3, (index & ~3) + 4):  # same bytes, other unused trailing bits
        if j != index:
            variants[f"trailing-bits-{alphabet[j]}"] = f"{header}.{payload}.{signature[:-1]}{alphabet[j]}"
    return variants


def test_non_canonical_base64url_is_401_at_the_gateway(tenant, gate):
    """The shape check (credential.py) refuses every spelling with a character that is not
    base64url or a segment too many; the one that passes it, other unused trailing bits in
    the last character, is refused by the strict segment reader (pyjwt.py)."""
    token = tenant.mint()
    for name, variant in encoding_variants(token).items():
        if name.startswith("trailing-bits-"):
            gate.refused(variant, strict("signature segment is not canonical base64url"))
        else:
            gate.refused(variant, NOT_COMPACT, CREDENTIAL)


def test_validator_alone_refuses_non_canonical_segments(tenant, gate):
    """Defence in depth: the validator refuses another spelling of a genuine token (the shape
    check it runs first names it a malformed credential), and the token reader under it
    refuses it as well without that check (or a particular PyJWT version's own)."""
    token = tenant.mint()
    assert gate.validate(token).oid == tenant.user_oid
    for name, variant in encoding_variants(token).items():
        with pytest.raises((InvalidToken, MalformedCredential)):
            gate.validate(variant)
        with pytest.raises(InvalidToken, match="malformed token"):
            read_token(variant, 60)
        assert name


@pytest.mark.parametrize("shape", ["1", "2", "4", "5", "empty", "dots", "jwe"])
def test_wrong_segment_counts_are_401(tenant, gate, shape):
    header, payload, signature = tenant.mint().split(".")
    jwe_header = b64({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": tenant.signing_kid})
    token = {
        "1": header,
        "2": f"{header}.{payload}",
        "4": f"{header}.{payload}.{signature}.{signature}",
        "5": f"{header}.{payload}.{payload}.{payload}.{signature}",
        "empty": "",
        "dots": "....",
        "jwe": f"{jwe_header}.{b64(b'k' * 256)}.{b64(b'i' * 12)}.{payload}.{b64(b't' * 16)}",
    }[shape]
    gate.refused(token, NOT_COMPACT if token else "empty bearer token", CREDENTIAL)
    if token:
        with pytest.raises(MalformedCredential):
            gate.validate(token)
        with pytest.raises(InvalidToken, match="malformed token"):
            read_token(token, 60)  # and the reader alone, without the shape check


# --- time claims ----------------------------------------------------------------------------

@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("raw", [
    "Infinity", "-Infinity", "NaN", "1e400", "-1e400", "100000000000000000000", "18446744073709551616",
    "253402300800", '"2999-01-01T00:00:00Z"', '"0x7fffffff"', "[]", "{}", "null", "true", '""', "-0.0e0",
])
def test_time_claims_of_every_odd_type_are_401(tenant, gate, private_key, claim, raw):
    header, payload = parts(tenant)
    body = _raw_object([(k, v) for k, v in payload.items() if k != claim]).decode()[:-1] + f',"{claim}":{raw}}}'
    token = signed(private_key, header, body.encode())
    if raw == "-0.0e0":  # a number: for nbf/iat simply in the past, for exp long expired
        if claim == "exp":
            gate.refused(token, EXPIRED)
        else:
            assert gate.status(token)[0] == 200
    elif raw.startswith(('"', "[", "{", "null", "true")):
        gate.refused(token, strict(f"claim {claim} must be a number"))
    else:
        gate.refused(token, strict(f"claim {claim} is out of range"))


def test_the_last_numeric_date_is_a_time_and_the_next_is_out_of_range(tenant, gate):
    from entragate.tokens import MAX_NUMERIC_DATE

    assert gate.status(tenant.mint(claims={"exp": MAX_NUMERIC_DATE})) == (200, "forward", "api-read")
    gate.refused(tenant.mint(claims={"exp": MAX_NUMERIC_DATE + 1}), strict("claim exp is out of range"))
    gate.refused(tenant.mint(claims={"iat": 0, "nbf": -1}), strict("claim nbf is out of range"))


def test_float_times_are_read_as_numbers_not_truncated(tenant, gate):
    now = time.time()
    assert gate.status(tenant.mint(claims={"exp": now + 600.5, "nbf": now - 0.5, "iat": now - 0.5}))[0] == 200
    skew = gate.config.clock_skew
    gate.refused(tenant.mint(claims={"exp": now - skew - 0.5}), EXPIRED)  # int(exp) would not matter here either
    gate.refused(tenant.mint(claims={"nbf": now + skew + 2.9}), NOT_YET)


@pytest.fixture
def frozen_now(monkeypatch):
    """Pin the clock PyJWT reads, so boundaries can be hit to the second (tokens are minted at
    the pinned time too: their iat and nbf must not tick past it under load)."""
    now = int(time.time())

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.fromtimestamp(now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Frozen)
    return now


def test_exp_boundary_is_exactly_now_minus_skew(tenant, gate, frozen_now):
    skew = gate.config.clock_skew
    assert gate.validate(tenant.mint(claims={"exp": frozen_now - skew + 1}, now=frozen_now))
    gate.refused(tenant.mint(claims={"exp": frozen_now - skew}, now=frozen_now), EXPIRED)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_nbf_and_iat_boundary_is_exactly_now_plus_skew(tenant, gate, frozen_now, claim):
    skew = gate.config.clock_skew
    assert gate.validate(tenant.mint(claims={claim: frozen_now + skew}, now=frozen_now))
    gate.refused(tenant.mint(claims={claim: frozen_now + skew + 1}, now=frozen_now), NOT_YET)


def test_zero_skew_is_honoured_at_the_boundary(tenant, frozen_now):
    gate = Gate(tenant, CLOCK_SKEW_SECONDS="0")
    assert gate.validate(tenant.mint(claims={"exp": frozen_now + 1, "nbf": frozen_now}, now=frozen_now))
    gate.refused(tenant.mint(claims={"exp": frozen_now}, now=frozen_now), EXPIRED)
    gate.refused(tenant.mint(claims={"nbf": frozen_now + 1}, now=frozen_now), NOT_YET)


# --- audience, issuer, tenant, version ------------------------------------------------------

def audience_attacks(tenant):
    client, uri = tenant.client_id, tenant.app_id_uri
    return [
        [client], [client, GRAPH], [GRAPH, client], [], [uri], {"aud": client}, 0, True,
        client.upper(), client + " ", " " + client, client + "\u0000", "{" + client + "}", client[:-1],
        client.replace("-", ""), uri.upper(), "API://" + client, uri + "//", uri + "/x", uri + "?",
        uri + "#", "api:/" + client, "https://" + client, "spn:" + client, uri.replace("api://", "api://x"),
        GRAPH, "https://graph.microsoft.com", "https://graph.microsoft.com/", "https://management.azure.com/",
        tenant.client_app_id, "",
    ]


def test_audience_lists_empty_lists_and_near_misses_are_401(tenant, gate):
    for aud in audience_attacks(tenant):
        for version in ("1.0", "2.0"):
            gate.refused(tenant.mint(version=version, claims={"aud": aud}), AUDIENCE)


def issuer_attacks(tid):
    return [
        f"https://login.microsoftonline.com/{tid}/v2.0/",
        f"https://login.microsoftonline.com/{tid}/v2.0 ",
        f"https://login.microsoftonline.com/{tid.upper()}/v2.0",
        f"https://Login.MicrosoftOnline.com/{tid}/v2.0",
        f"http://login.microsoftonline.com/{tid}/v2.0",
        f"https://login.microsoftonline.com:443/{tid}/v2.0",
        f"https://login.microsoftonline.com/{tid}/v2.0/.",
        f"https://login.microsoftonline.com/{tid}/v2.0?",
        f"https://login.microsoftonline.com//{tid}/v2.0",
        f"https://login.microsoftonline.com/{tid}",
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        "https://login.microsoftonline.com/common/v2.0",
        "https://login.microsoftonline.com/organizations/v2.0",
        f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0",
        f"https://login.microsoftonline.us/{tid}/v2.0",  # US Government
        f"https://login.chinacloudapi.cn/{tid}/v2.0",  # operated by 21Vianet
        f"https://login.partner.microsoftonline.cn/{tid}/v2.0",
        f"https://login.microsoftonline.de/{tid}/v2.0",
        f"https://login.microsoftonline.com.attacker.example/{tid}/v2.0",
        f"https://attacker.example/{tid}/v2.0",
        f"https://sts.windows.net/{tid}/",  # the v1 issuer on a v2 token
        f"https://sts.windows.net/{tid}",
        f"https://sts.chinacloudapi.cn/{tid}/",
        f"https://login.microsoftonline.com/{tid}/v2.0".encode().hex(),
        None, 7, [f"https://login.microsoftonline.com/{tid}/v2.0"], "",
    ]


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_issuer_variants_are_401(tenant, gate, version):
    correct = tenant.issuer(version)
    for issuer in issuer_attacks(tenant.tenant_id):
        if issuer == correct:
            continue
        claims = {"iss": issuer} if issuer is not None else {}
        token = tenant.mint(version=version, claims=claims, omit=() if issuer is not None else ("iss",))
        gate.refused(token, ISSUER)
    if version == "1.0":  # v1 issuers end in a slash; without it they are another string
        gate.refused(tenant.mint(version="1.0", claims={"iss": correct.rstrip("/")}), ISSUER)


@pytest.mark.parametrize("tid", [
    None, "", "not-a-guid", "{tenantid}", "common", "organizations", 7, ["x"], OTHER_TENANT,
    "4B1C7F3E-8D2A-4E6B-9C5F-0A1D2E3F4A5B", "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b ", "{4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b}",
    "4b1c7f3e8d2a4e6b9c5f0a1d2e3f4a5b",
])
def test_tid_missing_malformed_or_mismatched_is_401(tenant, gate, tid):
    """The issuer names our tenant; only the tid claim is wrong. A GUID of another tenant is
    refused by the tenant check; anything that is not a lower-case GUID (even our own tenant
    in capitals) by the format check before it."""
    token = tenant.mint(claims={"tid": tid}, omit=("tid",) if tid is None else ())
    gate.refused(token, TENANT if tid == OTHER_TENANT else NO_TID)


def test_tid_and_issuer_must_name_the_same_tenant_in_multi_tenant_mode(tenant):
    gate = Gate(tenant, ENTRA_TENANT_ID="organizations", ENTRA_ALLOWED_TENANTS=f"{tenant.tenant_id},{OTHER_TENANT}")
    assert gate.status(tenant.mint(tid=OTHER_TENANT))[0] == 200
    ours = f"https://login.microsoftonline.com/{tenant.tenant_id}/v2.0"
    gate.refused(tenant.mint(tid=OTHER_TENANT, claims={"iss": ours}), ISSUER)
    gate.refused(tenant.mint(tid="12345678-aaaa-4bbb-8ccc-1234567890ab"), TENANT)  # valid GUID, not listed
    gate.refused(tenant.mint(claims={"tid": "12345678-aaaa-4bbb-8ccc-1234567890ab", "iss": ours}), TENANT)
    gate.refused(tenant.mint(tid=OTHER_TENANT.upper()), NO_TID)  # a listed tenant, but not a lower-case GUID


@pytest.mark.parametrize("ver", [["2.0"], {"v": "2.0"}, 2.0, 2, "2", "2.0 ", "v2.0", "3.0", "", True, None])
def test_version_claim_of_any_other_shape_is_401_not_a_crash(tenant, gate, ver):
    """`ver` is looked up in a dict before the signature is checked: an unhashable value (a
    list or object) from an unsigned token must be a 401, not a TypeError (HTTP 500)."""
    token = tenant.mint(claims={"ver": ver}, omit=("ver",) if ver is None else ())
    gate.refused(token, VERSION)
    header, payload, _ = token.split(".")
    gate.refused(f"{header}.{payload}.{b64(b'unsigned')}", VERSION)


def test_graph_tokens_are_401(tenant, gate):
    for aud in (GRAPH, "https://graph.microsoft.com", "https://graph.microsoft.com/"):
        claims = {"aud": aud, "scp": "User.Read Mail.Read access_as_user"}
        gate.refused(tenant.mint(claims=claims), AUDIENCE)
        gate.refused(tenant.mint(claims=claims, headers={"nonce": "Graph-style-nonce"}), AUDIENCE)
        gate.refused(tenant.mint(version="1.0", claims=claims), AUDIENCE)


# --- claim types and shapes -----------------------------------------------------------------

@pytest.mark.parametrize("claim,value", [
    ("roles", "Gateway.Invoke"), ("roles", ["Gateway.Invoke", 1]), ("roles", {"Gateway.Invoke": True}),
    ("groups", PLATFORM_ADMINS), ("groups", [[PLATFORM_ADMINS]]), ("scp", ["access_as_user"]),
    ("scp", 1), ("idtyp", "APP"), ("idtyp", ["app"]), ("idtyp", ""), ("oid", ["x"]), ("sub", 5),
    ("azp", {"a": 1}), ("hasgroups", "true"), ("_claim_names", "groups"), ("_claim_names", ["groups"]),
    ("preferred_username", 5), ("name", ["a"]),
])
def test_wrongly_typed_claims_are_401_through_the_gateway(tenant, gate, claim, value):
    path, method, kind = "/api/items", "GET", "user"
    if claim == "roles":
        path, method, kind = "/internal/jobs", "POST", "app"
    # azp names the client of a v2.0 token (checked before claim types): a v1.0 token has appid.
    version = "1.0" if claim == "azp" else "2.0"
    if claim in ("roles", "groups"):
        detail = f"claim {claim} must be a list of strings"
    elif claim == "_claim_names":
        detail = "claim _claim_names must be an object"
    elif claim == "hasgroups":
        detail = "claim hasgroups must be a boolean"
    elif claim == "idtyp" and isinstance(value, str):
        detail = "claim idtyp must be 'app' or 'user'"
    else:
        detail = f"claim {claim} must be a string"
    gate.refused(tenant.mint(kind=kind, version=version, claims={claim: value}), detail, method=method, path=path)


# --- token type: access tokens only ---------------------------------------------------------
# Entra signs the ID tokens of a sign-in with the same keys and issuer as access tokens, and an
# ID token's aud is the app's client id, one of this API's audiences. Every kind of condition a
# route can test on who the caller is would otherwise hold for one.

BLOCKED_USER = "99999999-9999-4999-8999-999999999999"
ROUTE_KINDS = {
    "by-group": f'groups = ["{DEFAULT_GROUPS[0]}"]',
    "by-role": 'roles = ["Gateway.Write"]',
    "by-user": f'users = ["{DEFAULT_USER_OID}"]',
    "by-tenant": f'tenants = ["{DEFAULT_TENANT_ID}"]',
    "any-token": "authenticated = true",
    "by-kind": 'kind = "user"',
    "not-blocked": f'not = {{ users = ["{BLOCKED_USER}"] }}',
}


@pytest.fixture(scope="module")
def kinds_gate(tenant, tmp_path_factory):
    """A gateway whose policy has one route per kind of identity condition, each of which the
    default user's ID token would meet: /<route>/x."""
    policies = tmp_path_factory.mktemp("route-kinds")
    (policies / "kinds.toml").write_text("".join(
        f'[[routes]]\nname = "{name}"\npaths = ["/{name}/**"]\nallow = {{ {condition} }}\n\n'
        for name, condition in ROUTE_KINDS.items()
    ))
    return Gate(tenant, compile_policies(policies))


@pytest.mark.parametrize("route", sorted(ROUTE_KINDS))
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_id_tokens_of_this_app_are_401_on_every_kind_of_route(tenant, kinds_gate, version, route):
    """The user's access token passes the route; the same user's ID token, with the same
    groups and app roles, is refused as a token, with or without a nonce."""
    who = {"roles": ["Gateway.Write"]}
    access = tenant.mint(version=version, claims=who)
    assert kinds_gate.status(access, path=f"/{route}/x") == (200, "forward", route)
    client_claim = "appid" if version == "1.0" else "azp"
    for id_token in (tenant.mint_id_token(version=version, claims=who),
                     tenant.mint_id_token(version=version, claims=who, omit=("nonce",))):
        detail = kinds_gate.refusal(id_token, path=f"/{route}/x")
        assert detail == f"not an access token: a v{version} access token names its client in {client_claim}"


@pytest.mark.parametrize("marker", ["nonce", "at_hash", "c_hash"])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_id_token_claims_refuse_a_token_that_also_names_its_client(tenant, kinds_gate, version, marker):
    """The second marker: an ID token that carried a client claim and a scope would still be
    refused for a claim only ID tokens have; without it the same token passes."""
    client_claim = "appid" if version == "1.0" else "azp"
    like_access = {client_claim: tenant.client_app_id, "scp": "access_as_user"}
    others = tuple(name for name in ("nonce",) if name != marker)  # the default nonce, unless it is the marker
    token = tenant.mint_id_token(version=version, claims={**like_access, marker: "x"}, omit=others)
    assert kinds_gate.refusal(token, path="/any-token/x") == f"not an access token: claim {marker} is only in ID tokens"
    passes = tenant.mint_id_token(version=version, claims=like_access, omit=("nonce",))
    assert kinds_gate.status(passes, path="/any-token/x")[0] == 200


def test_an_access_token_names_its_client_in_its_own_versions_claim(tenant, gate):
    """appid in v1.0, azp in v2.0: the other version's claim does not stand in for it, and the
    client the policy and the origin see is the version's own."""
    app = tenant.client_app_id
    for version, own, other in (("2.0", "azp", "appid"), ("1.0", "appid", "azp")):
        for token in (tenant.mint(version=version, omit=(own,)),
                      tenant.mint(version=version, claims={other: app}, omit=(own,)),
                      tenant.mint(version=version, claims={own: ""}),
                      tenant.mint(version=version, claims={own: None})):
            assert gate.refusal(token) == f"not an access token: a v{version} access token names its client in {own}"
        both = tenant.mint(version=version, claims={other: "44444444-4444-4444-8444-444444444444"})
        result = gate.handle(f"Bearer {both}")
        assert isinstance(result, Forward) and result.identity.client_id == app
        assert ("x-entragate-client-id", app) in result.add


@pytest.mark.parametrize("grantless", [
    {"omit": ("scp",)}, {"claims": {"scp": ""}}, {"claims": {"scp": "   "}}, {"claims": {"scp": None}},
    {"kind": "app", "omit": ("roles",)}, {"kind": "app", "claims": {"roles": []}},
    {"kind": "app", "claims": {"roles": [""]}}, {"kind": "app", "claims": {"roles": None}},
], ids=["no-scp", "empty-scp", "blank-scp", "null-scp", "no-roles", "empty-roles", "empty-role", "null-roles"])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_tokens_granting_no_scope_and_no_role_are_401_on_every_kind_of_route(tenant, kinds_gate, version, grantless):
    """As Microsoft.Identity.Web refuses them by default (IDW10201): any app of the tenant can
    get a token for the API, granted nothing, and it would pass every route that asks only who
    the caller is. A scope alone or a role alone is enough."""
    token = tenant.mint(version=version, **grantless)
    for route in ROUTE_KINDS:
        assert kinds_gate.refusal(token, path=f"/{route}/x") == "token grants no delegated scope (scp) and no app role (roles)"
    extra = {"roles": ["Gateway.Write"]} if "kind" not in grantless else {"scp": "access_as_user"}
    granted = tenant.mint(version=version, **{**grantless, "claims": {**grantless.get("claims", {}), **extra}})
    assert kinds_gate.status(granted, path="/any-token/x")[0] == 200


# --- Unicode in claims -----------------------------------------------------------------------
# JSON's "\ud800" decodes to a lone surrogate, a Python str that cannot be encoded as UTF-8:
# carried into a header, the assertion or a log line, it was an exception, answered with 500.

ASSERTION_KEY = new_assertion_key()
NOT_UNICODE = "token {} holds a string that is not Unicode (a lone surrogate)"
# JSON string texts that decode to a lone surrogate, escaped in either case.
LONE_SURROGATES = ('"\\ud800"', '"\\udfff"', '"\\ude00\\ud83d"', '"a\\uDBFFb"', '"\\ud83d"')
PLACEHOLDER = "@@not-unicode@@"


@pytest.fixture(scope="module")
def signing_gate(tenant):
    """The gateway with the signed assertion on: every place a claim string is carried to."""
    return Gate(tenant, signer=HostSigner(parse_signing_key(ASSERTION_KEY)[0]), ASSERTION_SIGNING_KEY=ASSERTION_KEY)


def with_raw_string(part: dict, raw: str) -> bytes:
    """`part` as JSON with PLACEHOLDER (a value, a list item or a member name) replaced by the
    raw JSON string text `raw`, which json.dumps would never write."""
    return json.dumps(part).replace(json.dumps(PLACEHOLDER), raw).encode()


@pytest.mark.parametrize("where,name", [
    ("payload", claim) for claim in (
        "oid", "tid", "sub", "name", "preferred_username", "upn", "unique_name", "azp", "appid", "scp", "idtyp",
        "ver", "iss", "aud", "uti", "roles", "groups", "member name",
    )
] + [("header", name) for name in ("kid", "typ", "alg", "member name")])
def test_lone_surrogates_anywhere_in_a_token_are_401_not_500(tenant, signing_gate, private_key, where, name):
    """Refused once, as the token is read, whether the gateway reads the string or not; an
    unsigned copy is refused the same way."""
    version = "1.0" if name in ("upn", "unique_name", "appid") else "2.0"
    header, payload = parts(tenant, version=version)
    target = header if where == "header" else payload
    if name == "member name":
        target[PLACEHOLDER] = "x"
    elif name in ("roles", "groups"):
        target[name] = ["Gateway.Invoke", PLACEHOLDER]
    else:
        target[name] = PLACEHOLDER
    for raw in LONE_SURROGATES:
        encoded = {"header": json.dumps(header).encode(), "payload": json.dumps(payload).encode()}
        encoded[where] = with_raw_string(target, raw)
        token = signed(private_key, encoded["header"], encoded["payload"])
        assert signing_gate.refusal(token) == NOT_UNICODE.format(where), raw
        unsigned = token.rpartition(".")[0] + "." + b64(b"unsigned")
        assert signing_gate.refusal(unsigned) == NOT_UNICODE.format(where), raw
    assert not any("internal error" in line for line in signing_gate.logs)


@pytest.mark.parametrize("ascii_json", [True, False], ids=["escaped", "utf-8"])
def test_odd_but_valid_unicode_in_claims_is_carried_safely(tenant, signing_gate, private_key, ascii_json):
    """Surrogate pairs (non-BMP), NUL, controls, line separators, `%`, commas, markup and the
    six characters of a surrogate escape as plain text: forwarded, percent-encoded in the
    identity headers (one unquote gives the claim back), exact in the signed assertion and
    the audit line."""
    odd = "Ada \U0001F600 \x00\r\n\u2028\ufeff<b>&amp;\"%41,\\ud800 \U0010FFFF"
    claims = {"name": odd, "preferred_username": odd + "@x", "roles": [odd, "r,s"], "scp": f"access_as_user {odd}"}
    header, payload = parts(tenant, claims=claims)
    encode = lambda part: json.dumps(part, ensure_ascii=ascii_json).encode()  # noqa: E731
    assert ("\\ud83d\\ude00" in encode(payload).decode()) == ascii_json  # the pair really is escaped
    request = IncomingRequest("GET", "https://gw.example/api/items", "req-odd", ("authorization",),
                              authorization=f"Bearer {signed(private_key, encode(header), encode(payload))}")
    result = asyncio.run(signing_gate.gateway.handle(request, lambda coroutine: coroutine.close()))
    assert isinstance(result, Forward), result
    added = dict(result.add)
    assert all(0x20 <= ord(ch) <= 0x7E for name, value in result.add for ch in name + value)
    assert unquote(added["x-entragate-name"], errors="strict") == odd
    assert unquote(added["x-entragate-username"], errors="strict") == odd + "@x"
    assert [unquote(item, errors="strict") for item in added["x-entragate-roles"].split(",")] == [odd, "r,s"]
    public = parse_signing_key(ASSERTION_KEY)[1]
    assertion = jwt.decode(added["x-entragate-assertion"], jwt.PyJWK(public).key, algorithms=["ES256"],
                           audience="http://origin.invalid")
    assert assertion["name"] == odd and assertion["roles"] == [odd, "r,s"] and assertion["scp"] == f"access_as_user {odd}"
    line = decision_audit_line(request, result, 200, 1.0, time.time())
    assert line.isascii() and json.loads(line)["oid"] == tenant.user_oid


# --- genuine tokens that are not entitled: 403, never allowed -------------------------------

def test_app_only_tokens_cannot_use_user_only_routes(tenant, gate):
    admin_groups = {"groups": [PLATFORM_ADMINS]}
    # A service principal in platform-admins, with or without the optional idtyp claim.
    for token in (tenant.mint(kind="app", claims=admin_groups),
                  tenant.mint(kind="app", claims=admin_groups, omit=("idtyp",)),
                  tenant.mint(kind="app", version="1.0", claims=admin_groups)):
        assert gate.status(token, path="/admin/users")[:2] == (403, "condition_not_met")
    assert gate.status(tenant.mint(claims=admin_groups), path="/admin/users") == (200, "forward", "admin")


def test_without_idtyp_a_scope_or_a_sub_other_than_the_oid_makes_a_token_no_app_token(tenant, gate):
    """The app-only rule without idtyp (no scp, oid == sub), each way round, on the app-only
    route: the service principal's token passes; with a scope, or a sub that is not its oid,
    the same token is a user's and refused."""
    invoke = {"roles": ["Gateway.Invoke"]}
    app = tenant.mint(kind="app", claims=invoke, omit=("idtyp",))
    assert gate.status(app, method="POST", path="/internal/jobs") == (200, "forward", "internal")
    for claims in ({"scp": "access_as_user"}, {"sub": "pairwise-subject"}):
        token = tenant.mint(kind="app", claims={**invoke, **claims}, omit=("idtyp",))
        assert gate.status(token, method="POST", path="/internal/jobs") == (403, "condition_not_met", "internal")


def test_user_tokens_cannot_use_app_only_routes_even_with_the_role(tenant, gate):
    token = tenant.mint(claims={"roles": ["Gateway.Invoke"]})
    assert gate.status(token, method="POST", path="/internal/jobs")[:2] == (403, "condition_not_met")
    assert gate.status(tenant.mint(kind="app"), method="POST", path="/internal/jobs")[0] == 200


@pytest.mark.parametrize("scp", [
    "access_as_user_admin", "xaccess_as_user", "Access_As_User", "ACCESS_AS_USER", "access_as_use",
    "access_as_user,other", "other,access_as_user", "access_as_user.read", "access_as_user\u00a0",
    "User.Read\u00a0access_as_user", "User.Read\taccess_as_user", "User.Read\naccess_as_user",
    "User.Read\u2003access_as_user", "User.Read\u3000access_as_user",
])
def test_scope_substrings_and_lookalikes_do_not_grant_the_scope(tenant, gate, scp):
    """Scopes are separated by a space (RFC 6749 §3.3), nothing else: a scope is granted only
    by that exact space-separated token."""
    result = gate.handle(f"Bearer {tenant.mint(claims={'scp': scp})}")
    assert not isinstance(result, Forward) and (result.status, result.code, result.rule) == (403, "insufficient_scope", "api-read")
    assert dict(result.headers)["www-authenticate"] == 'Bearer realm="entragate", error="insufficient_scope"'


@pytest.mark.parametrize("scp", ["access_as_user", "User.Read access_as_user", "  access_as_user  ", "a  access_as_user"])
def test_exact_scope_is_granted_however_spaced(tenant, gate, scp):
    assert gate.status(tenant.mint(claims={"scp": scp}))[0] == 200


def test_files_read_is_not_files_readwrite(tenant):
    from entragate.claims import identity_from_claims

    assert identity_from_claims({"scp": "Files.ReadWrite"}).scopes == ("Files.ReadWrite",)
    assert "Files.Read" not in identity_from_claims({"scp": "Files.ReadWrite Files.Read.All"}).scopes
    assert identity_from_claims({"scp": "Files.Read\u00a0Files.ReadWrite"}).scopes == ("Files.Read\u00a0Files.ReadWrite",)


def test_roles_given_as_a_string_never_match_by_substring(tenant, gate):
    for roles in ("Gateway.Invoke", "Gateway.Invoke Gateway.Write", "['Gateway.Invoke']"):
        gate.refused(tenant.mint(kind="app", claims={"roles": roles}), "claim roles must be a list of strings",
                     method="POST", path="/internal/jobs")
    for roles in (["Gateway.Invok"], ["gateway.invoke"], ["Gateway.Invoke.All"], ["Gateway.Invoke "]):
        status, code, _ = gate.status(tenant.mint(kind="app", claims={"roles": roles}), method="POST", path="/internal/jobs")
        assert (status, code) == (403, "condition_not_met"), roles


@pytest.mark.parametrize("marker", [
    {"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}},
    {"hasgroups": True},
])
def test_groups_overage_never_guesses(tenant, gate, marker):
    overage = tenant.mint(claims=marker, omit=("groups",))
    assert gate.status(overage, method="POST", path="/api/items")[:2] == (403, "groups_overage")
    assert gate.status(overage, path="/admin/users")[:2] == (403, "groups_overage")
    with_role = tenant.mint(claims={**marker, "roles": ["Gateway.Write"]}, omit=("groups",))
    assert gate.status(with_role, method="POST", path="/api/items")[:2] == (200, "forward")
    listed = tenant.mint(claims={**marker, "groups": [API_WRITERS]})  # the wanted group is listed
    assert gate.status(listed, method="POST", path="/api/items")[:2] == (200, "forward")
    # Overage cannot be switched off by a false hasgroups next to _claim_names.
    both = tenant.mint(claims={"_claim_names": {"groups": "src1"}, "hasgroups": False}, omit=("groups",))
    assert gate.status(both, path="/admin/users")[:2] == (403, "groups_overage")


def test_forged_identity_claims_never_reach_the_origin(tenant, gate, attacker_key):
    """The claims an attacker would most like to set, on a token the attacker signed."""
    header, payload = parts(tenant)
    payload.update(groups=[PLATFORM_ADMINS, API_WRITERS], roles=["Gateway.Invoke", "Gateway.Write"], idtyp="user")
    for kid, detail in ((header["kid"], SIGNATURE), ("attacker", NO_KEY)):
        for path in ("/admin/users", "/api/items", "/internal/jobs"):
            gate.refused(signed(attacker_key, {**header, "kid": kid}, payload), detail, path=path)


def test_no_attack_escapes_as_anything_but_a_gateway_error(tenant, gate, private_key):
    """The validator raises only GatewayError subclasses for every case in this file's
    encoding catalogue, so the Worker can never answer 500 for a token."""
    token = tenant.mint()
    header, payload, _ = token.split(".")
    odd = list(encoding_variants(token).values()) + [
        f"{b64(b'null')}.{payload}.AAAA", f"{b64(b'[]')}.{payload}.AAAA", f"{b64(b'1')}.{payload}.AAAA",
    ]
    odd += [f"{b64(raw)}.{payload}.AAAA" for raw in (b"{", b"\xff\xfe", b"{}", b'{"alg":"RS256"}')]
    odd += [f"{header}.{b64(raw)}.AAAA" for raw in (b"\xc3", b"[1,2]", b'"s"', b'{"exp":1e999}', b"{}")]
    for candidate in odd:
        try:
            gate.validate(candidate)
        except GatewayError:
            continue
        raise AssertionError(f"accepted {candidate!r}")


def test_an_unexpected_error_in_validation_is_an_audited_500_answer_not_an_exception(tenant):
    gate = Gate(tenant)

    class Broken:
        async def validate(self, token, defer):
            raise TypeError("a bug that is not a GatewayError")

    gate.gateway.validator = Broken()
    result = gate.handle(f"Bearer {tenant.mint()}")
    assert not isinstance(result, Forward) and result.status == 500 and result.code == "internal_error"



def test_the_audit_line_of_a_refused_token_names_the_check_never_the_token(tenant):
    gate = Gate(tenant)
    token = tenant.mint(audience="api://someone-else")
    request = IncomingRequest("GET", "https://gw.example/api/items", "req-9", ("authorization",),
                              authorization=f"Bearer {token}")
    result = asyncio.run(gate.gateway.handle(request, lambda coroutine: coroutine.close()))
    line = json.loads(decision_audit_line(request, result, result.status, 1.0, time.time()))
    assert (line["reason"], line["cause"]) == ("invalid_token", "audience")
    assert token.split(".")[1] not in json.dumps(line) and token.split(".")[2] not in json.dumps(line)
    allowed = gate.handle(f"Bearer {tenant.mint()}")
    assert "cause" not in json.loads(decision_audit_line(request, allowed, 200, 1.0, time.time()))
