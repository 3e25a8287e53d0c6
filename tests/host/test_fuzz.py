"""Property-based tests (issue #7) for the token parser, the path canonicaliser and the policy
matcher: no exception other than the gateway's own escapes, no malformed input is ever
allowed, canonicalisation is idempotent and agrees with every way an origin could read an
accepted path, and an allowed path stays allowed only for the identity its rule names.
Issue #13: any string in any claim the gateway reads is refused or carried safely, end to end.

tests/host/test_paths.py already checks that canonical_path raises only AmbiguousPath and
returns no `//`, `.` or `..`; the properties here are differential (origin readings, a
reference matcher, an oracle for token acceptance) and run end to end through the gateway.
"""

import asyncio
import base64
import json
import math
import posixpath
import re
import time
import unicodedata
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from entragate_mocks.mock_entra import MockTenant
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from entragate.assertion import parse_signing_key
from entragate.config import Config
from entragate.credential import MAX_TOKEN_BYTES, extract_bearer, require_compact_jws
from entragate.errors import AmbiguousPath, AmbiguousSpelling, CredentialError, GatewayError
from entragate.gateway import Forward, IncomingRequest, assemble, decision_audit_line
from entragate.identity import APP, USER, Identity
from entragate.paths import canonical_host, canonical_path, fold_path
from entragate.tokens import FORBIDDEN_HEADERS, MAX_NUMERIC_DATE
from entragate.upstream import referenced_groups
from entragate_tools.compiler import PolicyError, compile_policies
from entragate_tools.host_crypto import HostSigner, HostVerifier, new_assertion_key
from entragate_tools.host_io import MemoryStore
from fixtures.examples import EXAMPLE_POLICIES
from fixtures.host_gateway import SIGNIN_ENV, signin_platform

COMPILED = compile_policies(EXAMPLE_POLICIES)
AUTHORITY = "https://login.example"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the token parser ------------------------------------------------------------------------

TENANT = MockTenant()  # minting only: discovery and keys are served from memory below
KID = TENANT.signing_kid
PRIVATE_KEY = serialization.load_pem_private_key(TENANT.private_key_pem().encode(), None)
AUDIENCES = (TENANT.client_id, TENANT.app_id_uri, TENANT.app_id_uri + "/")


class MemoryEntra:
    """Discovery and JWKS for both token versions, as the real tenant publishes them."""

    def __init__(self):
        jwk = TENANT.public_jwk()
        self.documents = {
            f"{AUTHORITY}/{TENANT.tenant_id}/v2.0/.well-known/openid-configuration":
                {"issuer": TENANT.issuer("2.0"), "jwks_uri": f"{AUTHORITY}/{TENANT.tenant_id}/discovery/v2.0/keys"},
            f"{AUTHORITY}/{TENANT.tenant_id}/.well-known/openid-configuration":
                {"issuer": TENANT.issuer("1.0"), "jwks_uri": f"{AUTHORITY}/common/discovery/keys"},
            f"{AUTHORITY}/{TENANT.tenant_id}/discovery/v2.0/keys": {"keys": [dict(jwk, issuer=TENANT.issuer("2.0"))]},
            f"{AUTHORITY}/common/discovery/keys": {"keys": [jwk]},
        }

    async def get_json(self, url, timeout):
        return self.documents[url]


def build_gateway(signer=None, **overrides):
    env = {
        "ORIGIN_URL": "https://origin.example/base", "ENTRA_TENANT_ID": TENANT.tenant_id,
        "ENTRA_AUTHORITY": AUTHORITY, "ENTRA_AUDIENCES": f"{TENANT.client_id},{TENANT.app_id_uri}", **SIGNIN_ENV,
        **overrides,
    }
    config = Config.from_env(env.get)
    gateway = assemble(config, COMPILED.policy, http=MemoryEntra(), store=MemoryStore(), verifier=HostVerifier(),
                       clock=time.time, log=LOGS.append, policy_groups=referenced_groups(COMPILED.data), signer=signer,
                       platform=signin_platform(COMPILED.policy))
    return config, gateway


LOGS = []  # what the gateways log: a line about an internal error is a failure anywhere
CONFIG, GATEWAY = build_gateway()
SKEW = CONFIG.clock_skew
LOOP = asyncio.new_event_loop()


def run(coroutine):
    deferred = []

    async def with_background():
        try:
            return await coroutine(deferred.append)
        finally:
            for task in deferred:
                await task

    return LOOP.run_until_complete(with_background())


def validate(token):
    return run(lambda defer: GATEWAY.validator.validate(token, defer))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header, payload) -> str:
    """RS256 with the tenant's own key: the signature is always genuine, so whatever is
    accepted was accepted on its structure and claims alone."""
    raw = lambda part: part if isinstance(part, bytes) else json.dumps(part).encode()  # noqa: E731
    signing_input = f"{b64(raw(header))}.{b64(raw(payload))}"
    signature = PRIVATE_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def offsets(now):
    """Times well clear of the skew boundaries (those are tested exactly elsewhere)."""
    return st.sampled_from([-10**7, -7200, -SKEW - 30, -SKEW + 30, 0, SKEW - 30, SKEW + 30, 7200]).map(lambda d: now + d)


HEADER_KEYS = ["alg", "typ", "kid", "x5t", "nonce", *sorted(FORBIDDEN_HEADERS)]
PAYLOAD_KEYS = ["exp", "nbf", "iat", "ver", "tid", "aud", "iss", "scp", "roles", "groups", "oid", "sub", "idtyp",
                "azp", "appid", "name", "preferred_username", "hasgroups", "_claim_names", "jti", "nonce", "at_hash"]


def claim_values(name, now):
    good = {
        "alg": st.sampled_from(["RS256", "rs256", "none", "HS256", "ES256", "RS512"]),
        "typ": st.sampled_from(["JWT", "jwt", "at+jwt", ""]),
        "kid": st.sampled_from([KID, KID.lower(), "other", ""]),
        "exp": offsets(now) | st.floats(allow_nan=True, allow_infinity=True) | st.just(MAX_NUMERIC_DATE + 1),
        "nbf": offsets(now), "iat": offsets(now),
        "ver": st.sampled_from(["1.0", "2.0", "2", "3.0"]),
        "tid": st.sampled_from([TENANT.tenant_id, TENANT.tenant_id.upper(), "0a0b0c0d-1111-4222-8333-444455556666"]),
        "aud": st.sampled_from([*AUDIENCES, "00000003-0000-0000-c000-000000000000", TENANT.client_id.upper()]),
        "iss": st.sampled_from([TENANT.issuer("1.0"), TENANT.issuer("2.0"), TENANT.issuer("2.0") + "/"]),
        "scp": st.sampled_from(["access_as_user", "a b", ""]),
        "roles": st.lists(st.sampled_from(["Gateway.Invoke", "Gateway.Write", ""]), max_size=2),
        "azp": st.sampled_from([TENANT.client_app_id, ""]), "appid": st.sampled_from([TENANT.client_app_id, ""]),
        "nonce": st.just("n"), "at_hash": st.just("h"),
        "groups": st.lists(st.sampled_from(["11111111-1111-4111-8111-111111111111"]), max_size=1),
        "idtyp": st.sampled_from(["app", "user", "APP"]),
        "hasgroups": st.booleans(),
        "_claim_names": st.just({"groups": "src1"}),
    }
    return good.get(name, st.nothing()) | JSON


@st.composite
def token_parts(draw):
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "kid": KID}
    version = draw(st.sampled_from(["1.0", "2.0"]))
    payload = json.loads(base64.urlsafe_b64decode(TENANT.mint(version=version, now=now).split(".")[1] + "=="))
    for target, keys in ((header, HEADER_KEYS), (payload, PAYLOAD_KEYS)):
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(keys))
            if draw(st.integers(0, 4)) == 0:
                target.pop(name, None)
            else:
                target[name] = draw(claim_values(name, now))
    return header, payload


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 <= value <= MAX_NUMERIC_DATE


def acceptable(header, payload) -> bool:
    """What an Entra access token for this API must look like: the oracle, written from the
    rules (Microsoft's token validation guidance, RFC 7519/8725), not from the code."""
    now = time.time()
    if header.get("alg") != "RS256" or header.get("kid") != KID or FORBIDDEN_HEADERS & set(header):
        return False
    typ = header.get("typ")
    if typ is not None and not (isinstance(typ, str) and typ.upper() == "JWT"):
        return False
    if not _number(payload.get("exp")) or payload["exp"] <= now - SKEW:
        return False
    for name in ("nbf", "iat"):
        if name in payload and (not _number(payload[name]) or payload[name] > now + SKEW):
            return False
    version = payload.get("ver")
    if version not in ("1.0", "2.0") or payload.get("tid") != TENANT.tenant_id:
        return False
    if payload.get("aud") not in AUDIENCES or payload.get("iss") != TENANT.issuer(version):
        return False
    # Identity claims the gateway reads: absent or JSON null, else exactly their type.
    # (Claims it never reads, such as jti, may be anything.)
    present = {name: value for name, value in payload.items() if value is not None}
    strings = ("scp", "oid", "sub", "name", "preferred_username", "upn", "unique_name", "azp", "appid")
    if any(name in present and not isinstance(present[name], str) for name in strings):
        return False
    lists = ("roles", "groups")
    if any(name in present and not (isinstance(present[name], list) and all(isinstance(v, str) for v in present[name]))
           for name in lists):
        return False
    if "idtyp" in present and present["idtyp"] not in ("app", "user"):
        return False
    if "hasgroups" in present and not isinstance(present["hasgroups"], bool):
        return False
    if "_claim_names" in present and not isinstance(present["_claim_names"], dict):
        return False
    # An access token, not an ID token (Microsoft's access and ID token claims references): it
    # names its client, appid in v1.0 and azp in v2.0, and has none of the ID-token-only claims.
    if not present.get("appid" if version == "1.0" else "azp") or {"nonce", "at_hash", "c_hash"} & set(payload):
        return False
    # And it grants something: a delegated scope or an app role (Microsoft.Identity.Web's default).
    scopes = [scope for scope in present.get("scp", "").split(" ") if scope]
    return bool(scopes) or any(present.get("roles", ()))


def minted_parts(version="2.0", kind="user", omit=(), **claims):
    """(header, payload) of a genuine token from the tenant, for the explicit examples."""
    payload = json.loads(base64.urlsafe_b64decode(TENANT.mint(version=version, kind=kind, claims=claims, omit=omit)
                                                  .split(".")[1] + "=="))
    return {"typ": "JWT", "alg": "RS256", "kid": KID}, payload


@SETTINGS
@given(token_parts())
@example(minted_parts())
@example(minted_parts(omit=("azp",)))
@example(minted_parts(version="1.0", omit=("appid",)))
@example(minted_parts(version="1.0", azp=TENANT.client_app_id, omit=("appid",)))
@example(minted_parts(nonce="n"))
@example(minted_parts(scp=" "))
@example(minted_parts(kind="app", roles=[""]))
def test_signed_tokens_are_accepted_exactly_when_they_are_well_formed(parts):
    header, payload = parts
    token = sign(header, payload)
    try:
        identity = validate(token)
    except GatewayError as error:
        assert error.status in (401, 503), error
        # Completeness: a well-formed token is refused only at a skew boundary race (none here).
        assert not acceptable(header, payload), f"refused a well-formed token: {error.detail}"
        return
    assert acceptable(header, payload), (header, payload)
    assert identity.oid == payload.get("oid") and identity.tid == payload["tid"]
    assert identity.roles == tuple(payload.get("roles") or ()) and identity.version == payload["ver"]


@SETTINGS
@given(st.data())
def test_any_mutation_of_a_genuine_token_is_refused(data):
    """Characters inserted, deleted or replaced anywhere: only the genuine string passes."""
    token = TENANT.mint()
    mutated = token
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(mutated)))
        operation = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        char = data.draw(st.sampled_from(list("Aa0-_=.+/ \t\n%!\x00é")) | st.characters())
        if operation == "insert":
            mutated = mutated[:i] + char + mutated[i:]
        elif operation == "delete":
            mutated = mutated[:i] + mutated[i + 1:]
        else:
            mutated = mutated[:i] + char + mutated[i + 1:]
    assume(mutated != token)
    for candidate in (mutated, f"Bearer {mutated}"):
        try:
            credential = extract_bearer(candidate) if candidate.startswith("Bearer") else candidate
            if credential == token:  # HTTP allows spaces around the credential: the same token
                continue
            validate(credential)
        except GatewayError:
            continue
        raise AssertionError(f"accepted a mutated token: {candidate!r}")


@SETTINGS
@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
@example("Bearer a.b.c")
@example("bearer\ta.b.c")
def test_authorization_header_parser_returns_one_compact_token_or_refuses(value):
    """extract_bearer then require_compact_jws (what token validation runs first)."""
    try:
        token = extract_bearer(value)
        require_compact_jws(token)
    except CredentialError as error:
        assert error.status == 401
        return
    assert len(token) <= MAX_TOKEN_BYTES and token.count(".") == 2
    assert all(segment and set(segment) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
               for segment in token.split("."))
    assert value.strip(" \t")[:6].lower() == "bearer" and value.strip(" \t").endswith(token)


@SETTINGS
@given(st.text(max_size=300) | st.lists(st.sampled_from(["eyJ", "e30", ".", "AAAA", "=", "-", "_", "+", "/", "%"]),
                                           max_size=30).map("".join))
def test_arbitrary_strings_never_escape_the_validator(candidate):
    try:
        validate(candidate)
    except GatewayError:
        return
    raise AssertionError(f"accepted {candidate!r}")


# --- claims as arbitrary strings, end to end ----------------------------------------------------
# Every string the gateway reads from a token, as any JSON string at all (lone surrogates, NUL,
# controls, non-BMP, long), in escaped or raw UTF-8 JSON: the answer is a forward or a 401/403,
# never a 500; what reaches the origin is printable ASCII that decodes back to the claim, the
# assertion verifies, and the audit line is JSON any strict reader takes.

ASSERTION_KEY = new_assertion_key()
ASSERTION_PUBLIC = parse_signing_key(ASSERTION_KEY)[1]
SIGNING_CONFIG, SIGNING_GATEWAY = build_gateway(HostSigner(parse_signing_key(ASSERTION_KEY)[0]),
                                                ASSERTION_SIGNING_KEY=ASSERTION_KEY)
STRING_CLAIMS = ("oid", "tid", "sub", "name", "preferred_username", "upn", "unique_name", "azp", "appid", "scp",
                 "idtyp", "ver", "iss", "aud", "nonce")
LIST_CLAIMS = ("roles", "groups")
HEADER_STRINGS = ("kid", "typ", "alg")
ODD_STRINGS = [
    "\ud800", "\udfff", "a\ud83d", "\ude00b", "\ud83d\ude00", "\x00", "\x1b[2J", "\x7f", "\r\n", "\u2028", "\ufeff",
    "\u00e9", "\U0001f600", "\U0010ffff", "\\ud800", "%", "%25", ",", '"', "<b>&amp;", " ", "", "x" * 3000,
]
ANY_STRING = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=16)
CLAIM_STRINGS = st.one_of(
    st.sampled_from(ODD_STRINGS), ANY_STRING,
    st.lists(st.sampled_from(ODD_STRINGS) | ANY_STRING, min_size=2, max_size=4).map("".join),
)
# Per kind of token, a request its genuine token is allowed: odd strings then land in a forward
# as often as in a refusal.
REQUESTS = {"user": ("GET", "/api/items"), "app": ("POST", "/internal/jobs")}


def _unicode(value) -> bool:
    """Every string (member names too) is Unicode: what a strict JSON reader demands."""
    if isinstance(value, str):
        return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, dict):
        return all(_unicode(k) and _unicode(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_unicode, value))
    return True


@st.composite
def tokens_with_odd_strings(draw):
    version, kind = draw(st.sampled_from(["1.0", "2.0"])), draw(st.sampled_from(["user", "app"]))
    header, payload = minted_parts(version=version, kind=kind)
    for name in draw(st.lists(st.sampled_from(STRING_CLAIMS + LIST_CLAIMS + HEADER_STRINGS + ("member",)),
                              min_size=1, max_size=3)):
        if name in LIST_CLAIMS:
            payload[name] = draw(st.lists(CLAIM_STRINGS, max_size=3)) + list(payload.get(name, ()))[:1]
        elif name in HEADER_STRINGS:
            header[name] = draw(CLAIM_STRINGS)
        elif name == "member":
            payload[draw(CLAIM_STRINGS)] = draw(CLAIM_STRINGS)
        else:
            payload[name] = draw(CLAIM_STRINGS)
    # Escaped (\uXXXX) or raw: a raw lone surrogate is bytes that are not UTF-8 at all, and
    # two escaped surrogates in a row may be a pair, which JSON reads as one character.
    ascii_only, upper_case = draw(st.booleans()), draw(st.booleans())
    texts = [json.dumps(part, ensure_ascii=ascii_only) for part in (header, payload)]
    if upper_case:  # json.dumps writes \ud800; other writers write \uD800
        texts = [_ESCAPE.sub(lambda match: match[0].upper().replace("\\U", "\\u"), text) for text in texts]
    raw = [text.encode("utf-8", "surrogatepass") for text in texts]
    return kind, all(map(_means_unicode, raw)), sign(*raw)


_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


def _means_unicode(raw: bytes) -> bool:
    """The JSON text is UTF-8 and every string it holds is Unicode."""
    try:
        return _unicode(json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError:
        return False


def _printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in text)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens_with_odd_strings(), st.sampled_from([None, "text/html"]),
       st.sampled_from([None, "application/grpc", "application/grpc-web+proto", "application/connect+json"]))
def test_claims_of_any_string_are_refused_or_carried_safely(case, accept, content_type):
    kind, unicode_text, token = case
    method, path = REQUESTS[kind]
    request = IncomingRequest(method, f"https://gw.example{path}", "r-odd", ("authorization",),
                              authorization=f"Bearer {token}", accept=accept, content_type=content_type)
    logged = len(LOGS)
    result = run(lambda defer: SIGNING_GATEWAY.handle(request, defer))
    event("forward" if isinstance(result, Forward) else f"refused: {result.code}")
    assert not any("internal error" in line for line in LOGS[logged:]), LOGS[logged:]
    if not isinstance(result, Forward) and result.code == "grpc_unsupported":
        # Native gRPC the route allows: answered 12 UNIMPLEMENTED (a Worker cannot relay it).
        assert unicode_text and content_type == "application/grpc" and result.grpc_status == 12, result
        assert (result.status, result.body, result.identity is not None) == (200, None, True)
        status = result.status
    elif isinstance(result, Forward):
        assert unicode_text
        assert all(_printable_ascii(name) and _printable_ascii(value) for name, value in result.add)
        added, identity = dict(result.add), result.identity
        for name, claim in (("user-oid", identity.oid), ("subject", identity.sub), ("name", identity.name),
                            ("username", identity.username), ("client-id", identity.client_id)):
            assert unquote(added.get("x-entragate-" + name, ""), errors="strict") == (claim or "")
        assertion = jwt.decode(added["x-entragate-assertion"], jwt.PyJWK(ASSERTION_PUBLIC).key, algorithms=["ES256"],
                               audience="https://origin.example/base", issuer=SIGNING_CONFIG.assertion_issuer)
        assert (assertion.get("oid"), assertion.get("name"), assertion["roles"]) == (identity.oid, identity.name,
                                                                                      list(identity.roles))
        status = 200
    else:
        assert result.status in (401, 403) or (result.status == 200 and result.grpc_status in (7, 16)), result
        if not unicode_text:  # refused as a token (gRPC: HTTP 200, grpc-status 16)
            assert result.code in ("invalid_token", "malformed_credential"), result
            assert (result.status, result.grpc_status) in ((401, None), (200, 16)), result
        assert all(_printable_ascii(name) and _printable_ascii(value) for name, value in result.headers)
        if isinstance(result.body, bytes):  # a Connect end-of-stream message: flags, length, JSON
            assert result.body[0] == 2 and json.loads(result.body[5:].decode("utf-8"))["error"]["code"]
        elif result.body is not None:
            result.body.encode("utf-8")  # strict: a page or problem JSON any client can read
        status = result.status
    line = decision_audit_line(request, result, status, 1.0, time.time())
    record = json.loads(line)
    assert line.isascii() and _unicode(record)
    if result.identity is not None:
        assert (record["oid"], record["client_id"]) == (result.identity.oid, result.identity.client_id)


# --- the path canonicaliser ----------------------------------------------------------------------

PIECES = [
    "/", "//", ".", "..", "a", "Z", "0", "-", "_", "~", " ", "%", ";", "\\", "#", "?", "\x00", "\t", "\x85",
    "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%25", "%3b", "%23", "%3f", "%00", "%20", "%41", "%C3%A9", "%ff",
    "%c0%ae", "%e0%80%af", "%u002e", "%252e", "%25%32%65", "%ef%bc%8f", "%ef%bc%8e", "%c2%a0", "%e3%80%80",
    "é", "\uff0e", "\uff0f", "\u2024", "\u00a0", "\u3000", "\u200b", "admin", "api", "..;", ".%2e", "%2e.",
]
RAW_PATHS = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(PIECES), max_size=14).map(lambda parts: "/" + "".join(parts)),
    st.lists(st.text(alphabet="a.%2eE/\\;", min_size=1, max_size=5), max_size=6).map(lambda s: "/" + "/".join(s)),
)


def origin_readings(raw: str) -> dict:
    """Ways real origins read a path, from published bypasses: decode once or twice,
    Unicode-normalise, turn backslashes into slashes, resolve dot segments, trim segments,
    drop ';' parameters, collapse '//'."""
    once = unquote(raw, errors="strict")
    readings = {
        "decode": once,
        "decode-twice": unquote(once),
        "nfkc": unicodedata.normalize("NFKC", once),
        "backslash": once.replace("\\", "/"),
        "trim-segments": "/".join(seg.strip() for seg in once.split("/")),
        "strip-params": "/".join(seg.split(";")[0] for seg in once.split("/")),
        "collapse-slashes": "/" + "/".join(seg for seg in once.split("/") if seg) + ("/" if once.endswith("/") and once != "/" else ""),
    }
    normalised = posixpath.normpath(once)
    readings["normpath"] = normalised + ("/" if once.endswith("/") and normalised != "/" else "")
    return readings


@settings(max_examples=2000, deadline=None)
@given(RAW_PATHS)
@example("/api/%2e%2e/admin")
@example("/admin%20")
@example("/a/%25%32%66")
def test_every_origin_reading_of_an_accepted_path_is_the_decided_path(raw):
    try:
        decided = canonical_path(raw)
    except AmbiguousPath:
        return
    segments = decided.split("/")
    for name, reading in origin_readings(raw).items():
        if name == "nfkc":
            # A normalising origin may fold characters inside a segment, but never gains or
            # loses a segment or a dot segment, and what it reads is a spelling of the decided
            # path: the policy decides both alike or refuses (test_spellings.py).
            folded = reading.split("/")
            assert len(folded) == len(segments) and not {".", ".."} & set(folded), (raw, reading)
            assert fold_path(reading) == fold_path(decided), (raw, reading)
            continue
        assert reading == decided, (name, raw, reading, decided)


def encode(path: str) -> str:
    """How a client would send a decided path: percent-encode what is not plain ASCII."""
    return quote(path, safe="/!$&'()*+,=:@~-._")


@settings(max_examples=2000, deadline=None)
@given(RAW_PATHS)
def test_canonicalisation_is_idempotent(raw):
    try:
        decided = canonical_path(raw)
    except AmbiguousPath:
        return
    assert canonical_path(encode(decided)) == decided
    if "%" not in decided:
        assert canonical_path(decided) == decided
    assert not any(ch.isspace() for seg in decided.split("/") if seg for ch in (seg[0], seg[-1]))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_canonical_host_never_raises(host):
    assert isinstance(canonical_host(host), str)


# --- the policy matcher --------------------------------------------------------------------------

GROUPS = {"admins": "11111111-1111-4111-8111-111111111111", "writers": "22222222-2222-4222-8222-222222222222",
          "readers": "33333333-3333-4333-8333-333333333333"}
OTHER_GROUP = "55555555-5555-4555-8555-555555555555"
USERS = ["aaaaaaaa-0000-4000-8000-000000000001", "99999999-9999-4999-8999-999999999999"]
TENANTS = ["4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b", "0a0b0c0d-1111-4222-8333-444455556666"]
CLIENTS = ["0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f", "44444444-4444-4444-8444-444444444444"]
SEGMENTS = ["api", "admin", "internal", "healthz", "reports", "export", "x", "a", "b", "A", "café"]
HOSTS = ["gw.example", "a.example.com", "x.y.example.com", "example.com", "A.Example.COM.", "api.example.com",
         "api.example.com:8443", "evil.com", "[::1]"]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]


@st.composite
def identities(draw):
    """Two in three report groups overage, and most of those list none of the policy's groups:
    the identities whose `groups` tests are unknown (reason groups_overage) come up regularly."""
    kind = draw(st.sampled_from([USER, APP]))
    oid = draw(st.sampled_from(USERS))
    overage = draw(st.integers(0, 2)) > 0
    if overage and draw(st.integers(0, 3)) > 0:
        groups = draw(st.sampled_from([(), (OTHER_GROUP,)]))
    else:
        groups = tuple(draw(st.lists(st.sampled_from([*GROUPS.values(), OTHER_GROUP]), max_size=3, unique=True)))
    return Identity(
        oid=oid, tid=draw(st.sampled_from(TENANTS)), sub=oid if kind == APP else "s", name=None, username=None,
        groups=groups, groups_overage=overage,
        roles=tuple(draw(st.lists(st.sampled_from(["Gateway.Write", "Gateway.Invoke", "Reports.Read", "X"]), max_size=2))),
        scopes=tuple(draw(st.lists(st.sampled_from(["access_as_user", "other"]), max_size=2))),
        client_id=draw(st.sampled_from(CLIENTS)), kind=kind, version="2.0", issuer="", audience="", expires_at=0,
    )


def ref_eval(cond, identity):
    """Three-valued reference evaluation of a compiled condition (policy.py's format)."""
    op = cond[0]
    if op == "true":
        return True
    arg = cond[1]
    if op == "groups":
        return True if set(arg) & set(identity.groups) else (None if identity.groups_overage else False)
    if op == "roles":
        return bool(set(arg) & set(identity.roles))
    if op == "scopes":
        return bool(set(arg) & set(identity.scopes))
    if op == "clients":
        return identity.client_id in arg
    if op == "tenants":
        return identity.tid in arg
    if op == "users":
        return identity.oid in arg
    if op == "kind":
        return identity.kind == arg
    if op == "not":
        inner = ref_eval(arg, identity)
        return None if inner is None else not inner
    results = [ref_eval(c, identity) for c in arg]
    if op == "any":
        return True if True in results else (None if None in results else False)
    return False if False in results else (None if None in results else True)


def ref_scopes(cond) -> set:
    if cond[0] == "scopes":
        return set(cond[1])
    if cond[0] == "not":
        return ref_scopes(cond[1])
    if cond[0] in ("any", "all"):
        return set().union(*(ref_scopes(c) for c in cond[1]))
    return set()


def ref_reason(route, identity) -> str:
    """The decision reason for a route that owns the request with its method (policy.py's
    docstring): public, token_required, then deny (true: denied_by_rule, unknown:
    groups_overage), then allow (true: allowed, unknown: groups_overage, false:
    insufficient_scope if the route's own scopes would make it hold, else condition_not_met)."""
    if route["public"]:
        return "public"
    if identity is None:
        return "token_required"
    if route["deny"] is not None:
        denied = ref_eval(route["deny"], identity)
        if denied is not False:
            return "denied_by_rule" if denied else "groups_overage"
    if route["allow"] is None:
        return "condition_not_met"
    allowed = ref_eval(route["allow"], identity)
    if allowed is not False:
        return "allowed" if allowed else "groups_overage"
    scopes = tuple(sorted(ref_scopes(route["allow"])))
    if scopes and ref_eval(route["allow"], replace(identity, scopes=identity.scopes + scopes)) is True:
        return "insufficient_scope"
    return "condition_not_met"


def host_matches(pattern, host):
    host = canonical_host(host)
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def rank(pattern, segs):
    """Specificity of `pattern` for path segments `segs`, or None if it does not match:
    compared left to right, a literal beats `*`, which beats `**`; a pattern that ends where
    the path ends beats a `**` that matches nothing."""
    parts = pattern[1:].split("/")
    out = []
    for i, part in enumerate(parts):
        if part == "**":
            return tuple(out) + (0,)
        if i >= len(segs):
            return None
        if part == "*":
            if not segs[i]:
                return None
            out.append(2)
        elif part == segs[i]:
            out.append(3)
        else:
            return None
    return tuple(out) + (1,) if len(parts) == len(segs) else None


def reference_route(routes, method, host, path):
    """The route that must decide, from the spec in policy.py's docstring (no index)."""
    segs = path[1:].split("/")
    exact = lambda h: h != "*" and not h.startswith("*.")  # noqa: E731
    tiers = [lambda h: exact(h) and host_matches(h, host)]
    suffixes = sorted({h for r in routes for h, _, _ in r["match"] if h.startswith("*.")}, key=len, reverse=True)
    tiers += [lambda h, s=s: h == s and host_matches(h, host) for s in suffixes]
    tiers.append(lambda h: h == "*")
    for tier in tiers:
        candidates = [(rank(p, segs), i, ms) for i, r in enumerate(routes) for h, p, ms in r["match"] if tier(h)]
        candidates = [c for c in candidates if c[0] is not None]
        if not candidates:
            continue
        best = max(c[0] for c in candidates)
        owners = [(i, ms) for r, i, ms in candidates if r == best]
        for i, ms in owners:
            if method in ms:
                return {routes[i]["name"]}, True
        for i, ms in owners:
            if "*" in ms:
                return {routes[i]["name"]}, True
        return {routes[i]["name"] for i, _ in owners}, False  # method_not_allowed: any owner may be named
    return None, None


def ref_fold_segment(seg):
    return seg.lower()  # the generated policies and paths spell letters in ASCII or 'é'


def ref_strip(seg):
    return seg[:seg.index(".", 1)] if "." in seg[1:] else seg


def ref_fold_path(path):
    """fold_path from its docstring: case-folded, one trailing '/' dropped, then the last
    segment's suffix (from its first dot that is not its first character) stripped."""
    segs = [ref_fold_segment(s) for s in path[1:].split("/")]
    if len(segs) > 1 and segs[-1] == "":
        segs.pop()
    segs[-1] = ref_strip(segs[-1])
    return "/" + "/".join(segs)


def ref_folded_routes(routes):
    """The routes with every pattern replaced by what it matches once folded: the folded
    pattern, and for `/p/L/**` also the folded `/p/L` (the path `/p/L` folds to that)."""
    out = []
    for route in routes:
        match = []
        for host, pattern, methods in route["match"]:
            segs = pattern[1:].split("/")
            if segs[-1] == "**":
                prefix = [s if s == "*" else ref_fold_segment(s) for s in segs[:-1]]
                match.append([host, "/" + "/".join(prefix + ["**"]), methods])
                if prefix and prefix[-1] != "*":
                    match.append([host, "/" + "/".join(prefix[:-1] + [ref_strip(prefix[-1])]), methods])
            else:
                match.append([host, ref_fold_path("/" + "/".join(s if s == "*" else ref_fold_segment(s) for s in segs)), methods])
        out.append(dict(route, match=match))
    return out


def spelling_refused(data, method, host, path):
    """The spec (policy.py): with spellings = "refuse", a request that some route would take as
    written is refused when its folded path, matched against the folded patterns, is not
    taken by that same route with that method."""
    names, method_ok = reference_route(data["routes"], method, host, path)
    if names is None or not method_ok:
        return False
    folded, folded_ok = reference_route(ref_folded_routes(data["routes"]), method, host, ref_fold_path(path))
    return not folded_ok or folded != names


def check_decision(policy, data, method, host, path, identity):
    if data["spellings"] == "fold":
        data = dict(data, routes=ref_folded_routes(data["routes"]))
        path = ref_fold_path(path)
    elif spelling_refused(data, method, host, path):
        with pytest.raises(AmbiguousSpelling):
            policy.decide(method, host, path, identity)
        return None
    decision = policy.decide(method, host, path, identity)
    names, method_ok = reference_route(data["routes"], method, host, path)
    if names is None:
        assert decision.reason == "no_route" and not decision.allowed
        event("decision: no_route")
        return decision
    assert decision.rule in names, (decision, names)
    if not method_ok:
        assert decision.reason == "method_not_allowed" and not decision.allowed
        event("decision: method_not_allowed")
        return decision
    route = next(r for r in data["routes"] if r["name"] == decision.rule)
    event(f"decision: {decision.reason}")
    assert decision.reason == ref_reason(route, identity), (decision, route, identity)
    if decision.allowed:
        # Allowed only for an identity the rule names: public, or allow holds and deny does not.
        assert route["public"] or (
            identity is not None and ref_eval(route["allow"], identity) is True
            and (route["deny"] is None or ref_eval(route["deny"], identity) is False)
        ), (route, identity)
    elif route["public"]:
        raise AssertionError("a public route refused")
    elif identity is not None and route["allow"] is not None and ref_eval(route["allow"], identity) is True \
            and (route["deny"] is None or ref_eval(route["deny"], identity) is False):
        raise AssertionError(f"refused an identity the rule names: {decision}")
    return decision


PATHS = st.lists(st.sampled_from(SEGMENTS + [""]), min_size=0, max_size=5).map(lambda s: "/" + "/".join(s))


def pattern_paths(patterns):
    """Request paths that instantiate the given route patterns (`*`, `**` filled in)."""
    def fill(pattern, extra):
        parts = [] if pattern == "/" else pattern[1:].split("/")
        out = []
        for part in parts:
            if part == "**":
                out += extra
            else:
                out.append(extra[0] if part == "*" and extra else "x" if part == "*" else part)
        return "/" + "/".join(out)

    return st.builds(fill, st.sampled_from(sorted(patterns)),
                     st.lists(st.sampled_from(["x", "a", "api", "admin", ""]), max_size=2))


PROJECT_PATHS = pattern_paths({p for r in COMPILED.data["routes"] for _, p, _ in r["match"]})


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(METHODS), st.sampled_from(HOSTS), PATHS | PROJECT_PATHS, st.none() | identities())
def test_project_policy_allows_only_what_the_rule_names(method, host, path, identity):
    assume(not any(not seg for seg in path[1:].split("/")[:-1]))  # canonical paths have no '//'
    check_decision(COMPILED.policy, COMPILED.data, method, host, path, identity)


def _names_groups(cond) -> bool:
    return cond is not None and "groups" in json.dumps(cond)


GROUP_ROUTES = [route for route in COMPILED.data["routes"] if _names_groups(route["allow"]) or _names_groups(route["deny"])]


@st.composite
def requests_on_group_routes(draw):
    """(method, host, path) that a route of the project policy with a `groups` condition owns."""
    route = draw(st.sampled_from(GROUP_ROUTES))
    host, pattern, methods = draw(st.sampled_from(route["match"]))
    method = draw(st.sampled_from(METHODS if "*" in methods else methods))
    if host == "*":
        host = draw(st.sampled_from(["gw.example", "api.example.com"]))
    elif host.startswith("*."):
        host = draw(st.sampled_from(["a.", "x.y."])) + host[2:]
    return method, host, draw(pattern_paths({pattern}))


@settings(max_examples=300, deadline=None)
@given(requests_on_group_routes(), identities())
def test_project_routes_with_groups_decide_overage_as_the_reference(request, identity):
    """The project's routes that test groups, with identities mostly in overage: every reason
    (groups_overage above all) is the reference's."""
    method, host, path = request
    assume(not any(not seg for seg in path[1:].split("/")[:-1]))
    check_decision(COMPILED.policy, COMPILED.data, method, host, path, identity)


CONDITIONS = st.sampled_from([
    '{ scopes = ["access_as_user"] }', '{ groups = ["admins"] }', '{ groups = ["admins"], kind = "user" }',
    '{ roles = ["Gateway.Invoke"], kind = "app" }', '{ any = [{ roles = ["Gateway.Write"] }, { groups = ["writers"] }] }',
    '{ tenants = ["home"] }', '{ not = { groups = ["readers"] } }', '{ users = ["blocked"] }', '{ clients = ["legacy"] }',
])


# Literals that are spellings of one another (case, suffix) or carry a dot inside.
SPELT_SEGMENTS = ["api", "API", "Admin", "admin", "a", "b", "B", "x.json", "v1.0", "*"]


@st.composite
def policies(draw, segments=("api", "admin", "a", "b", "*"), spellings=None):
    routes, seen = [], set()
    for i in range(draw(st.integers(1, 8))):
        host = draw(st.sampled_from([None, "*.example.com", "api.example.com", "*.y.example.com"]))
        segs = draw(st.lists(st.sampled_from(segments), max_size=3))
        ending = draw(st.sampled_from(["", "**", "/"] if spellings else ["", "**"]))
        if ending == "**":
            segs = segs + ["**"]
        elif ending == "/" and segs:
            segs = segs + [""]  # a pattern with a trailing slash
        pattern = "/" + "/".join(segs)
        if (host, pattern) in seen:
            continue
        seen.add((host, pattern))
        lines = ["[[routes]]", f'name = "r{i}"', f'paths = ["{pattern}"]']
        if host:
            lines.append(f'hosts = ["{host}"]')
        methods = draw(st.sampled_from([None, ["GET"], ["GET", "HEAD"], ["POST", "DELETE"], ["*"]]))
        if methods:
            lines.append("methods = " + json.dumps(methods))
        access = draw(st.sampled_from(["public", "allow", "allow", "allow+deny", "deny"]))
        if access == "public":
            lines.append("public = true")
        if "allow" in access:
            lines.append("allow = " + draw(CONDITIONS))
        if "deny" in access:
            lines.append("deny = " + draw(CONDITIONS))
        routes.append("\n".join(lines))
    aliases = (
        (f'[settings]\nspellings = "{spellings}"\n' if spellings else "")
        + "[groups]\n" + "\n".join(f'{k} = "{v}"' for k, v in GROUPS.items())
        + f'\n[users]\nblocked = "{USERS[1]}"\n[tenants]\nhome = "{TENANTS[0]}"\n[clients]\nlegacy = "{CLIENTS[1]}"\n'
    )
    return aliases + "\n\n".join(routes) + "\n"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-policies")


def instances(data, text):
    """Request paths drawn from the policy's own patterns (`*` and `**` filled in), so the
    requests land on routes, on their edges (`/a` for `/a/**`) and between overlapping ones."""
    patterns = [line.split('"')[1] for line in text.splitlines() if line.startswith("paths = ")]
    pattern = data.draw(st.sampled_from(patterns))
    segs = []
    for part in pattern[1:].split("/") if pattern != "/" else []:
        if part == "**":
            segs += data.draw(st.lists(st.sampled_from(["a", "b", "api", ""]), max_size=2))
        elif part == "*":
            segs.append(data.draw(st.sampled_from(["a", "b", "x", "api", ""])))
        else:
            segs.append(part)
    return "/" + "/".join(segs)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(policies(), st.data())
def test_generated_policies_match_the_reference_and_allow_only_what_they_name(policy_dir, text, data):
    (policy_dir / "p.toml").write_text(text)
    try:
        compiled = compile_policies(policy_dir)
    except PolicyError:
        assume(False)
    for _ in range(12):
        path = data.draw(st.one_of(PATHS, st.just(None)))
        path = instances(data, text) if path is None else path
        if any(not seg for seg in path[1:].split("/")[:-1]):
            continue
        method, host = data.draw(st.sampled_from(METHODS)), data.draw(st.sampled_from(HOSTS))
        check_decision(compiled.policy, compiled.data, method, host, path, data.draw(st.none() | identities()))


def spellings_of(data, path):
    """Other spellings of `path` that origins serve as the same path: letter case, one
    trailing slash, a format suffix on the last segment."""
    segs = path[1:].split("/")
    flips = data.draw(st.lists(st.sampled_from(["lower", "upper", "capitalize", "swapcase"]),
                               min_size=len(segs), max_size=len(segs)))
    case = "/" + "/".join(getattr(seg, flip)() for seg, flip in zip(segs, flips))
    out = {path, path.upper(), path.lower(), case}
    for spelt in list(out):
        if spelt != "/":
            out.add(spelt[:-1] if spelt.endswith("/") else spelt + "/")
        base = spelt[:-1] if spelt.endswith("/") and spelt != "/" else spelt
        if not base.endswith("/"):
            out.add(base + data.draw(st.sampled_from([".json", ".XML", ".", ".tar.gz"])))
    return sorted(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["refuse", "fold"]).flatmap(lambda mode: st.tuples(st.just(mode), policies(SPELT_SEGMENTS, mode))),
       st.data())
def test_every_spelling_of_a_path_is_decided_by_one_route_or_refused(policy_dir, mode_text, data):
    """Random policies whose literals differ in case, suffix and trailing slash: of the
    spellings of one path, every one that any route takes is taken by the same route, the
    route of the folded form (refuse), and with spellings = "fold" all of them get the same
    decision. Each decision also agrees with the reference (spelling_refused, rank)."""
    mode, text = mode_text
    (policy_dir / "p.toml").write_text(text)
    try:
        compiled = compile_policies(policy_dir)
    except PolicyError:
        assume(False)
    policy, folded_routes = compiled.policy, ref_folded_routes(compiled.data["routes"])
    for _ in range(6):
        path = instances(data, text)
        if any(not seg for seg in path[1:].split("/")[:-1]):
            continue
        method, host = data.draw(st.sampled_from(METHODS)), data.draw(st.sampled_from(HOSTS))
        taken, outcomes = set(), {}
        for spelt in spellings_of(data, path):
            assert fold_path(spelt) == fold_path(path) == ref_fold_path(path), (spelt, path)
            try:
                route = policy.match(method, host, spelt)
            except AmbiguousSpelling as exc:
                assert mode == "refuse"
                outcomes[spelt] = ("ambiguous", exc.route)
                continue
            outcomes[spelt] = None if route is None else (route.fixed_decision or route.name)
            if route is not None and route.fixed_decision is None:
                taken.add(route.name)
            check_decision(policy, compiled.data, method, host, spelt, None)
        assert len(taken) <= 1, (method, host, outcomes)
        if taken:  # the route that takes a spelling is the one that decides the folded form
            expected, ok = reference_route(folded_routes, method, host, ref_fold_path(path))
            assert ok and expected == taken, (outcomes, expected)
        if mode == "fold":
            assert len({repr(o) for o in outcomes.values()}) == 1, outcomes


# --- the whole gateway: raw path in, the same raw path out, or a refusal -------------------------

def _token(**claims):
    return TENANT.mint(claims=claims)


GATEWAY_TOKENS = {
    "super": _token(groups=[GROUPS["admins"], GROUPS["writers"]], roles=["Gateway.Write"]),
    "reader": _token(),
    "app": TENANT.mint(kind="app"),
    "none": None,
}


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(["GET", "POST", "DELETE"]), st.sampled_from(["gw.example", "a.example.com"]),
       st.lists(st.sampled_from(["api", "admin", "internal", "healthz", "x", *PIECES]), max_size=8).map(lambda p: "/" + "".join(p)),
       st.sampled_from(sorted(GATEWAY_TOKENS)), st.sampled_from(["", "?q=/admin/x", "?a=%2F..%2F"]))
@example("GET", "gw.example", "/api/%2e%2e/admin/x", "reader", "")
@example("GET", "gw.example", "/healthz", "none", "?/admin")
def test_gateway_forwards_exactly_the_raw_path_it_decided_on(method, host, raw_path, who, query):
    assume(all(ord(c) < 0x7F and c not in " \t#?" for c in raw_path))  # what survives a URL parser
    token = GATEWAY_TOKENS[who]
    request = IncomingRequest(method, f"https://{host}{raw_path}{query}", "r", ("authorization",) if token else (),
                              authorization=f"Bearer {token}" if token else None)
    result = run(lambda defer: GATEWAY.handle(request, defer))
    try:
        path = canonical_path(raw_path)
    except AmbiguousPath:
        assert not isinstance(result, Forward) and result.status == 400
        return
    identity = validate(token) if token else None
    decision = COMPILED.policy.decide(method, host, path, identity)
    if isinstance(result, Forward):
        assert decision.allowed and result.rule == decision.rule
        forwarded = urlsplit(result.url)
        assert result.url == "https://origin.example/base" + raw_path + query  # byte for byte
        assert forwarded.path == "/base" + raw_path
    else:
        assert not decision.allowed and result.status in (401, 403)
