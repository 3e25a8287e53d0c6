"""Token validation rules, with real RSA keys and tokens from the mock Entra tenant over HTTP."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
from entragate_mocks.mock_entra import MockTenant

from entragate.config import Config, ConfigError
from entragate.errors import InvalidToken, KeysUnavailable, MalformedCredential
from entragate.gateway import assemble
from entragate.identity import APP, USER
from entragate_tools.host_io import MemoryStore, UrllibHttp, wall_clock
from entragate_tools.host_crypto import HostVerifier

OTHER_TENANT = "0a0b0c0d-1111-4222-8333-444455556666"
GRAPH_AUDIENCES = ("00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com")


@pytest.fixture(scope="module")
def tenant():
    with MockTenant() as running:
        yield running


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str):
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload))), signature


class Harness:
    def __init__(self, tenant, **overrides):
        env = {
            "ORIGIN_URL": "http://127.0.0.1:9",
            "ENTRA_TENANT_ID": tenant.tenant_id,
            "ENTRA_AUTHORITY": tenant.authority,
            "ENTRA_AUDIENCES": f"{tenant.client_id},{tenant.app_id_uri}",
            "TOKEN_CACHE_SECONDS": "0",  # every call here is a full validation (cache: test_token_cache.py)
            **overrides,
        }
        self.config = Config.from_env(env.get)
        self.http = UrllibHttp()
        self.logs = []
        gateway = assemble(
            self.config, None, http=self.http, store=MemoryStore(),
            verifier=HostVerifier(), clock=wall_clock, log=self.logs.append,
        )
        self.validator = gateway.validator
        self.deferred = []

    def validate(self, token):
        async def run_with_background_work():
            try:
                return await self.validator.validate(token, self.deferred.append)
            finally:
                for coroutine in self.deferred:  # what ctx.waitUntil would run
                    await coroutine
                self.deferred.clear()

        return asyncio.run(run_with_background_work())

    def refuse(self, token, match=None):
        with pytest.raises(InvalidToken, match=match) as caught:
            self.validate(token)
        return caught.value


@pytest.fixture
def harness(tenant):
    tenant.set_mode("ok")
    return Harness(tenant)


@pytest.mark.parametrize("shape", [
    lambda t: t + " x", lambda t: t + ", Bearer " + t, lambda t: t + ".", lambda t: "." + t,
    lambda t: t.replace(".", "..", 1), lambda t: t + "=", lambda t: t.rpartition(".")[0], lambda t: t + ".e30",
    lambda t: t[:-1] + "é", lambda t: "\ud800" + t,
])
def test_validation_refuses_what_is_not_one_compact_jws_before_reading_it(tenant, shape):
    """The shape check runs first in validation (a cache hit skips it: the cached token passed
    it), with the cache on and off: the verdict is malformed_credential, never a parse."""
    genuine = tenant.mint()
    for cache_seconds in ("0", "300"):
        harness = Harness(tenant, TOKEN_CACHE_SECONDS=cache_seconds)
        harness.validate(genuine)  # the genuine token is cached (when the cache is on)
        with pytest.raises(MalformedCredential, match="compact JWS"):
            harness.validate(shape(genuine))


# --- accepted tokens and the identity they carry -----------------------------------------

def test_v2_user_token(tenant, harness):
    identity = harness.validate(tenant.mint(claims={"roles": ["Reader"]}))
    assert identity.version == "2.0" and identity.kind == USER
    assert identity.oid == tenant.user_oid and identity.tid == tenant.tenant_id
    assert identity.client_id == tenant.client_app_id
    assert identity.scopes == ("access_as_user",) and identity.roles == ("Reader",)
    assert len(identity.groups) == 2 and identity.groups_overage is False
    assert identity.username == "ada@contoso.onmicrosoft.com" and identity.name == "Ada Lovelace"


def test_v1_user_token_uses_v1_issuer_and_upn(tenant, harness):
    identity = harness.validate(tenant.mint(version="1.0"))
    assert identity.version == "1.0" and identity.issuer == f"https://sts.windows.net/{tenant.tenant_id}/"
    assert identity.username == "ada@contoso.onmicrosoft.com" and identity.client_id == tenant.client_app_id


@pytest.mark.parametrize("audience", ["{uri}", "{uri}/", "{client}"])
def test_v1_audience_forms(tenant, harness, audience):
    aud = audience.format(uri=tenant.app_id_uri, client=tenant.client_id)
    assert harness.validate(tenant.mint(version="1.0", audience=aud)).audience == aud


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_app_only_token(tenant, harness, version):
    identity = harness.validate(tenant.mint(version=version, kind="app"))
    assert identity.kind == APP and identity.roles == ("Gateway.Invoke",) and identity.scopes == ()


def test_app_only_without_idtyp_is_recognised_by_oid_equals_sub(tenant, harness):
    assert harness.validate(tenant.mint(kind="app", omit=("idtyp",))).kind == APP


SP = "5a5a5a5a-0000-4000-8000-00000000000a"


@pytest.mark.parametrize("claims,kind", [
    ({"oid": SP, "sub": SP}, APP),  # no scp, oid == sub: the service principal itself
    ({"oid": SP, "sub": SP, "scp": "access_as_user"}, USER),  # a scope: delegated, whatever oid and sub say
    ({"oid": SP, "sub": SP, "scp": ""}, APP),  # an empty scp grants nothing: still no scope
    ({"oid": SP, "sub": "pairwise-subject"}, USER),  # oid != sub: a user's pairwise subject
    ({"sub": SP}, USER),  # no oid: nothing to compare, never taken for an app
    ({}, USER),  # neither: None == None must not make an app
    ({"oid": SP, "sub": SP, "idtyp": "user"}, USER),  # idtyp, when present, decides
    ({"oid": SP, "sub": "other", "scp": "access_as_user", "idtyp": "app"}, APP),
])
def test_token_kind_without_idtyp_is_app_only_with_no_scope_and_oid_equal_to_sub(claims, kind):
    """Microsoft's rule when the optional idtyp claim is absent, each way round."""
    from entragate.claims import identity_from_claims

    assert identity_from_claims(claims).kind == kind


def test_kind_without_idtyp_through_the_validator_each_way_round(tenant, harness):
    app = tenant.mint(kind="app", omit=("idtyp",))
    assert harness.validate(app).kind == APP
    _, payload, _ = segments(app)
    assert harness.validate(tenant.mint(kind="app", claims={"sub": "pairwise-" + payload["sub"]}, omit=("idtyp",))).kind == USER
    assert harness.validate(tenant.mint(kind="app", claims={"scp": "access_as_user"}, omit=("idtyp",))).kind == USER
    user = tenant.mint(omit=("idtyp",))
    _, payload, _ = segments(user)
    assert payload["oid"] != payload["sub"] and harness.validate(user).kind == USER
    # A user token whose oid equals its sub is still a user's while it carries a scope.
    assert harness.validate(tenant.mint(claims={"sub": payload["oid"]}, omit=("idtyp",))).kind == USER


@pytest.mark.parametrize("marker", [{"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}}, {"hasgroups": True}])
def test_groups_overage_is_distinct_from_no_groups(tenant, harness, marker):
    overage = harness.validate(tenant.mint(claims=marker, omit=("groups",)))
    none = harness.validate(tenant.mint(omit=("groups",)))
    assert overage.groups == () and overage.groups_overage is True
    assert none.groups == () and none.groups_overage is False


def test_scopes_are_split_exactly(tenant, harness):
    identity = harness.validate(tenant.mint(claims={"scp": "Files.ReadWrite  User.Read"}))
    assert identity.scopes == ("Files.ReadWrite", "User.Read")
    assert "Files.Read" not in identity.scopes


# --- versions, issuers, tenants, audiences -----------------------------------------------

def test_version_not_configured_is_refused(tenant):
    harness = Harness(tenant, ENTRA_TOKEN_VERSIONS="2.0")
    harness.refuse(tenant.mint(version="1.0"), "version")
    harness.refuse(tenant.mint(omit=("ver",)), "version")


@pytest.mark.parametrize("issuer", [
    "https://sts.windows.net/{tid}/",  # v1 issuer on a v2 token
    "https://login.microsoftonline.com/{tid}/v2.0/",
    "https://LOGIN.microsoftonline.com/{tid}/v2.0",
    "https://login.microsoftonline.us/{tid}/v2.0",
    "https://login.microsoftonline.com/" + OTHER_TENANT + "/v2.0",
])
def test_issuer_must_match_discovery_exactly(tenant, harness, issuer):
    harness.refuse(tenant.mint(claims={"iss": issuer.format(tid=tenant.tenant_id)}), "issuer")


def test_token_from_another_tenant_is_refused(tenant, harness):
    harness.refuse(tenant.mint(tid=OTHER_TENANT), "tenant")


@pytest.mark.parametrize("audience", GRAPH_AUDIENCES + ("api://someone-else", ""))
def test_tokens_for_other_resources_are_refused(tenant, harness, audience):
    harness.refuse(tenant.mint(audience=audience), "audience")


@pytest.mark.parametrize("aud", [["{client}"], [], None, 7])
def test_audience_must_be_one_string(tenant, harness, aud):
    value = [a.format(client=tenant.client_id) for a in aud] if isinstance(aud, list) else aud
    harness.refuse(tenant.mint(claims={"aud": value}), "audience")


def test_multi_tenant_accepts_listed_tenants_only(tenant):
    harness = Harness(tenant, ENTRA_TENANT_ID="organizations", ENTRA_ALLOWED_TENANTS=f"{tenant.tenant_id},{OTHER_TENANT}")
    assert harness.validate(tenant.mint(tid=OTHER_TENANT)).tid == OTHER_TENANT
    assert harness.validate(tenant.mint(version="1.0", tid=OTHER_TENANT)).tid == OTHER_TENANT
    harness.refuse(tenant.mint(tid="99999999-9999-4999-8999-999999999999"), "tenant not allowed")


def test_multi_tenant_issuer_is_filled_with_the_tokens_own_tid(tenant):
    harness = Harness(tenant, ENTRA_TENANT_ID="organizations", ENTRA_ALLOWED_TENANTS=f"{tenant.tenant_id},{OTHER_TENANT}")
    forged = tenant.mint(tid=OTHER_TENANT, claims={"iss": f"https://login.microsoftonline.com/{tenant.tenant_id}/v2.0"})
    harness.refuse(forged, "issuer")


@pytest.mark.parametrize("tid", [None, "not-a-guid", "{tenantid}", 42, "4B1C7F3E-8D2A-4E6B-9C5F-0A1D2E3F4A5B"])
def test_multi_tenant_requires_a_guid_tid(tenant, tid):
    harness = Harness(tenant, ENTRA_TENANT_ID="organizations", ENTRA_ALLOWED_TENANTS="*")
    claims = {"tid": tid, "iss": f"https://login.microsoftonline.com/{tid}/v2.0"}
    harness.refuse(tenant.mint(claims=claims, omit=("tid",) if tid is None else ()), "tid")


def test_any_tenant_only_when_explicitly_configured(tenant):
    with pytest.raises(ConfigError, match="ENTRA_ALLOWED_TENANTS"):
        Harness(tenant, ENTRA_TENANT_ID="common")
    harness = Harness(tenant, ENTRA_TENANT_ID="common", ENTRA_ALLOWED_TENANTS="*")
    assert harness.validate(tenant.mint(tid="12345678-aaaa-4bbb-8ccc-1234567890ab")).tid.startswith("12345678")


def test_signing_key_issuer_must_match(tenant, harness):
    kid = tenant.signing_kid
    jwk = dict(tenant.public_jwk(kid), issuer=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")

    class Keys:
        async def current(self, defer):
            return type("KS", (), {"issuer": f"https://login.microsoftonline.com/{tenant.tenant_id}/v2.0"})()

        async def key(self, kid_, defer):
            return jwk if kid_ == kid else None

    harness.validator._keys_by_version["2.0"] = Keys()
    assert harness.refuse(tenant.mint()).detail == "signing key belongs to another issuer"


# --- header: algorithms and key sources --------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "HS256", "ES256", "PS256", "RS384", "rs256", "", None])
def test_algorithm_allow_list(tenant, harness, alg):
    harness.refuse(tenant.mint(headers={"alg": alg}), "algorithm|malformed")


def test_unsigned_token_is_refused(tenant, harness):
    header, payload, _ = tenant.mint().split(".")
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    for unsigned in (f"{none_header}.{payload}.", f"{header}.{payload}."):  # alg none's empty signature
        with pytest.raises(MalformedCredential, match="compact JWS"):
            harness.validate(unsigned)
    harness.refuse(f"{none_header}.{payload}.AAAA", "algorithm")
    harness.refuse(f"{header}.{payload}.AAAA", "signature")


def test_hs256_with_the_public_key_as_secret_is_refused(tenant, harness):
    jwk = tenant.public_jwk()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}).encode())
    payload = tenant.mint().split(".")[1]
    for secret in (json.dumps(jwk).encode(), jwk["n"].encode()):
        signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        harness.refuse(f"{header}.{payload}.{signature}", "algorithm")


@pytest.mark.parametrize("extra", [
    {"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}},
    {"jku": "https://attacker.example/keys"},
    {"x5u": "https://attacker.example/cert"},
    {"x5c": ["MIIB"]},
    {"crit": ["exp"]},
    {"crit": ["b64"], "b64": False},
    {"cty": "JWT"},
])
def test_headers_that_name_keys_or_change_processing_are_refused(tenant, harness, extra):
    harness.refuse(tenant.mint(headers=extra))


@pytest.mark.parametrize("kid", [None, "", 7, ["k"], "x" * 200])
def test_kid_must_be_a_short_string(tenant, harness, kid):
    header = {"typ": "JWT", "alg": "RS256"} if kid is None else {"typ": "JWT", "alg": "RS256", "kid": kid}
    harness.refuse(tenant.sign_raw(header, segments(tenant.mint())[1]), "kid|malformed")


def test_unknown_kid_is_refused_after_one_refresh(tenant, harness):
    harness.validate(tenant.mint())
    before = len(harness.http.requests)
    harness.refuse(tenant.mint(headers={"kid": "../../etc/passwd"}), "signing key not found")
    harness.refuse(tenant.mint(headers={"kid": "'; DROP TABLE keys;--"}), "signing key not found")
    assert len(harness.http.requests) - before == 0, "the first fetch started the cooldown"


def test_duplicate_members_are_refused(tenant, harness):
    header, payload, _ = segments(tenant.mint())
    raw_payload = json.dumps(payload)[:-1] + f', "oid": "{payload["oid"]}"}}'
    token = tenant.sign_raw(header, payload)
    h, _, _ = token.split(".")
    signing_input = f"{h}.{b64(raw_payload.encode())}"
    # Re-sign the duplicate-member payload with the tenant's key, so only the duplicate is wrong.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_private_key(tenant.private_key_pem().encode(), None)
    signature = b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))
    harness.refuse(f"{signing_input}.{signature}", "malformed")

    raw_header = json.dumps(header)[:-1] + ', "alg": "RS256"}'
    signing_input = f"{b64(raw_header.encode())}.{token.split('.')[1]}"
    signature = b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))
    harness.refuse(f"{signing_input}.{signature}", "malformed")


# --- times -------------------------------------------------------------------------------

def test_exp_is_required(tenant, harness):
    harness.refuse(tenant.mint(omit=("exp",)), "exp")


def test_expiry_honours_the_clock_skew(tenant, harness):
    now = int(time.time())
    skew = harness.config.clock_skew
    assert harness.validate(tenant.mint(now=now - 3600 - skew + 5, lifetime=3600))
    harness.refuse(tenant.mint(now=now - 3600 - skew - 5, lifetime=3600), "expired")


def test_not_before_and_issued_at_honour_the_clock_skew(tenant, harness):
    now = int(time.time())
    skew = harness.config.clock_skew
    assert harness.validate(tenant.mint(claims={"nbf": now + skew - 5, "iat": now + skew - 5}))
    harness.refuse(tenant.mint(claims={"nbf": now + skew + 5}), "not yet valid")
    harness.refuse(tenant.mint(claims={"iat": now + skew + 5}), "not yet valid")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1999999999", [1999999999], True, False, None, {"t": 1}, 1e300, -5])
def test_time_claims_must_be_numbers(tenant, harness, claim, value):
    harness.refuse(tenant.mint(claims={claim: value}))


def test_nan_time_is_refused(tenant, harness):
    header, payload, _ = segments(tenant.mint())
    raw = json.dumps(payload).replace(f'"exp": {payload["exp"]}', '"exp": NaN')
    assert "NaN" in raw
    harness.refuse(_resign(tenant, header, raw), "out of range|malformed")


def _resign(tenant, header, raw_payload: str) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_private_key(tenant.private_key_pem().encode(), None)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(raw_payload.encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


# --- signatures --------------------------------------------------------------------------

def test_tampered_payload_fails_signature(tenant, harness):
    header, payload, signature = tenant.mint().split(".")
    claims = segments(tenant.mint())[1]
    claims["roles"] = ["Gateway.Admin"]
    harness.refuse(f"{header}.{b64(json.dumps(claims).encode())}.{signature}", "signature")


def test_signature_by_another_key_under_a_known_kid_fails(tenant, harness):
    other = tenant.rotate(activate=False)
    token = tenant.mint(kid=other, headers={"kid": tenant.signing_kid})
    harness.refuse(token, "signature")
    tenant.retire(other)


@pytest.mark.parametrize("claim,value", [("roles", "Admin"), ("groups", "g1"), ("scp", ["a"]), ("oid", 5), ("idtyp", "robot")])
def test_wrongly_typed_identity_claims_are_invalid_not_a_crash(tenant, harness, claim, value):
    harness.refuse(tenant.mint(claims={claim: value}))


# --- keys: rotation and outages ----------------------------------------------------------

def test_rotation_new_key_is_fetched_on_unknown_kid(tenant):
    harness = Harness(tenant, JWKS_COOLDOWN_SECONDS="0")
    harness.validate(tenant.mint())
    old = tenant.signing_kid
    new = tenant.rotate()
    try:
        assert harness.validate(tenant.mint()).oid
        tenant.retire(old)
        Harness(tenant).refuse(tenant.mint(kid=old), "signing key not found")  # a new isolate, empty KV
    finally:
        tenant.publish(tenant.public_jwk(old))
        tenant._signing_kid = old
        tenant.retire(new)


def test_keys_unavailable_is_not_an_allow(tenant):
    tenant.set_mode("error500")
    try:
        with pytest.raises(KeysUnavailable):
            Harness(tenant).validate(tenant.mint())
    finally:
        tenant.set_mode("ok")


@pytest.mark.parametrize("mode", ["error500", "html", "truncated", "empty", "huge"])
def test_last_known_good_keys_survive_a_failed_refresh(tenant, mode):
    harness = Harness(tenant, JWKS_COOLDOWN_SECONDS="0")
    token = tenant.mint()
    harness.validate(token)
    tenant.set_mode(mode)
    try:
        harness.refuse(tenant.mint(headers={"kid": "unknown"}), "signing key not found")  # forces a refresh
        assert harness.validate(token).oid == tenant.user_oid
        assert any("keeping last-known-good" in line for line in harness.logs)
    finally:
        tenant.set_mode("ok")


def test_identity_carries_the_times_the_token_cache_rechecks_and_its_issuer_audience_and_version():
    """The cache (token_cache.py) re-checks exp and the later of nbf and iat on every hit, from
    the Identity: they must be the token's own, and never invented for a claim that is absent
    or not a number."""
    from entragate.claims import identity_from_claims

    full = identity_from_claims({"exp": 2000.5, "nbf": 1000, "iat": 1500, "iss": "https://i", "aud": "api://a",
                                 "ver": "1.0"})
    assert (full.expires_at, full.not_before, full.issuer, full.audience, full.version) == (
        2000.5, 1500, "https://i", "api://a", "1.0")
    assert identity_from_claims({"nbf": 1600, "iat": 1500}).not_before == 1600
    bare = identity_from_claims({"aud": ["api://a"], "exp": True, "iat": True})
    assert (bare.expires_at, bare.not_before, bare.issuer, bare.audience, bare.version) == (0, 0, "", "", "")


@pytest.mark.parametrize("claims,username", [
    ({"preferred_username": "p@x", "upn": "u@x", "unique_name": "n@x"}, "p@x"),
    ({"upn": "u@x", "unique_name": "n@x"}, "u@x"),  # v1: upn first
    ({"upn": "u@x"}, "u@x"),
    ({"unique_name": "n@x"}, "n@x"),
    ({}, None),
])
def test_username_is_preferred_username_else_upn_else_unique_name(claims, username):
    from entragate.claims import identity_from_claims

    assert identity_from_claims(claims).username == username
