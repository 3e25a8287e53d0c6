"""Google-authenticated origins through Gateway.handle, against the mock Entra tenant's real
token endpoint and the mock Google STS / IAM Credentials over loopback HTTP (UrllibHttp).

One fake clock drives the gateway, the tenant and Google, so expiry is reached by moving it.
Client tokens are minted on the wall clock with a day's lifetime (PyJWT checks them on the
wall clock), so moving the fake clock a few hours never expires them."""

import asyncio
import json
import textwrap

import pytest
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import HostSignInPlatform, HostVerifier
from entragate_tools.host_io import MemoryStore, UrllibHttp
from entragate_mocks.mock_entra import MockTenant
from entragate_mocks.mock_google import DEFAULT_SERVICE_ACCOUNT, CloudRunFrontEnd, MockGoogle, verify_rs256

from entragate.config import Config, ConfigError
from entragate.denials import Answer
from entragate.gateway import ORIGIN_CREDENTIAL_DETAIL, Forward, IncomingRequest, assemble
from entragate.google import (
    FAILURE_COOLDOWN_SECONDS, KV_PREFIX, REFRESH_BEFORE_EXPIRY_SECONDS, STOP_USING_BEFORE_EXPIRY_SECONDS,
)
from entragate.policy import Policy

RUN_URL = "https://orders-abc123-ew.a.run.app"
OTHER_RUN_URL = "https://billing-abc123-ew.a.run.app"
PLAIN_URL = "https://plain.example"
DEFAULT_ORIGIN = "https://default-abc123-ew.a.run.app"
CUSTOM_AUDIENCE = "orders.internal.example"
WIF_URI = "api://entragate-wif"
GATEWAY = "https://gw.example"
DAY = 86400

POLICY = textwrap.dedent(f"""
    [[routes]]
    name = "orders"
    paths = ["/orders/**"]
    allow = {{ authenticated = true }}
    origin = "{RUN_URL}/v1"
    origin_auth = "google"

    [[routes]]
    name = "billing"
    paths = ["/billing/**"]
    allow = {{ authenticated = true }}
    origin = "{OTHER_RUN_URL}"
    origin_auth = "google"
    origin_audience = "{CUSTOM_AUDIENCE}"

    [[routes]]
    name = "orders-health"
    paths = ["/orders-health"]
    methods = ["GET"]
    public = true
    origin = "{RUN_URL}"
    origin_auth = "google"

    [[routes]]
    name = "plain"
    paths = ["/plain/**"]
    allow = {{ authenticated = true }}
    origin = "{PLAIN_URL}"

    [[routes]]
    name = "default"
    paths = ["/api/**"]
    allow = {{ authenticated = true }}
""")


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    directory = tmp_path_factory.mktemp("google-policy")
    (directory / "routes.toml").write_text(POLICY)
    return json.loads(compile_policies(directory).json_text)


@pytest.fixture
def world():
    """A fresh tenant and Google per test (their counters and clocks are the test's own)."""
    tenant, google = MockTenant().start(), MockGoogle().start()
    clock = Clock(tenant.clock())
    tenant.clock = google.clock = clock
    tenant.add_resource(WIF_URI, version="1.0")  # accessTokenAcceptedVersion null: v1 tokens
    google.trust_entra(tenant, version="1.0", audience=WIF_URI)
    google.grant_workload_identity_user(google.principal(tenant.client_service_principal_oid()))
    yield tenant, google, clock
    tenant.stop()
    google.stop()


class Harness:
    def __init__(self, world, compiled, *, store=None, secret=False, **variables):
        self.tenant, self.google, self.clock = world
        self.logs = []
        self.store = store if store is not None else MemoryStore()
        self.loop = asyncio.new_event_loop()
        self.deferred = []
        env = {
            "ORIGIN_URL": DEFAULT_ORIGIN, "ENTRA_TENANT_ID": self.tenant.tenant_id,
            "ENTRA_AUTHORITY": self.tenant.authority, "ENTRA_AUDIENCES": self.tenant.client_id,
            "ENTRA_CLIENT_ID": self.tenant.client_id,
            **({"ENTRA_CLIENT_SECRET": self.tenant.client_secret} if secret
               else {"ENTRA_CLIENT_CERTIFICATE": self.tenant.client_certificate_pem}),
            "GOOGLE_WORKLOAD_PROVIDER": self.google.provider_name, "GOOGLE_SERVICE_ACCOUNT": DEFAULT_SERVICE_ACCOUNT,
            "GOOGLE_STS_URL": self.google.sts_url, "GOOGLE_IAM_CREDENTIALS_URL": self.google.iam_credentials_url,
            "ENTRA_WIF_SCOPE": f"{WIF_URI}/.default",
            **variables,
        }
        self.config = Config.from_env(env.get)
        self.gateway = assemble(self.config, Policy.from_json(compiled), http=UrllibHttp(), store=self.store,
                                verifier=HostVerifier(), clock=self.clock, log=self.logs.append,
                                platform=HostSignInPlatform())
        self.user_token = self.tenant.mint(lifetime=DAY)

    def defer(self, coroutine):
        self.deferred.append(self.loop.create_task(coroutine))

    def settle(self):
        while self.deferred:
            tasks, self.deferred = self.deferred, []
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def request(self, path, *, token=..., method="GET", headers=None):
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        token = self.user_token if token is ... else token
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return IncomingRequest(method=method, url=GATEWAY + path, request_id="req-1", header_names=tuple(headers),
                               authorization=headers.get("authorization"), accept=headers.get("accept"),
                               content_type=headers.get("content-type"))

    def handle(self, path, **kwargs):
        result = self.loop.run_until_complete(self.gateway.handle(self.request(path, **kwargs), self.defer))
        self.settle()
        return result

    def burst(self, path, count):
        async def many():
            return await asyncio.gather(*(self.gateway.handle(self.request(path), self.defer) for _ in range(count)))
        results = self.loop.run_until_complete(many())
        self.settle()
        return results

    def close(self):
        self.settle()
        self.loop.close()


@pytest.fixture
def harness(world, compiled):
    made = Harness(world, compiled)
    yield made
    made.close()


def added(result: Forward) -> dict:
    return dict(result.add)


def id_token_claims(google, value: str) -> dict:
    scheme, _, token = value.partition(" ")
    assert scheme == "Bearer"
    verified = verify_rs256(token, google.jwks())
    assert not isinstance(verified, str), verified
    return verified[1]


def hits(tenant, google) -> tuple[int, int, int]:
    """(Entra client-credentials requests, STS exchanges, generateIdToken calls)."""
    return tenant.hits(f"/{tenant.tenant_id}/oauth2/v2.0/token"), google.hits("sts"), google.hits("iam")


def test_an_allowed_request_carries_a_google_id_token_for_the_service_url(harness):
    tenant, google = harness.tenant, harness.google
    result = harness.handle("/orders/7?x=1", headers={"X-Serverless-Authorization": "Bearer forged"})
    assert isinstance(result, Forward), result
    assert result.url == f"{RUN_URL}/v1/orders/7?x=1"
    headers = added(result)
    claims = id_token_claims(google, headers["authorization"])
    # The service URL (scheme://host, not the route origin's path), the service account, one hour.
    assert claims["aud"] == RUN_URL and claims["iss"] == "https://accounts.google.com"
    assert claims["email"] == DEFAULT_SERVICE_ACCOUNT and claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600
    # The client's bearer token is stripped (FORWARD_AUTHORIZATION is off), its own
    # X-Serverless-Authorization too; the identity headers are there as on any route.
    assert "authorization" in result.strip and "x-serverless-authorization" in result.strip
    assert headers["authorization"] != f"Bearer {harness.user_token}"
    assert headers["x-entragate-user-oid"] == tenant.user_oid and headers["x-entragate-rule"] == "orders"
    # What Cloud Run's front end checks: it lets this one through, and not the client's token.
    front_end = CloudRunFrontEnd(google)
    assert front_end.check(list(headers.items()), RUN_URL) is None
    assert front_end.check([("authorization", f"Bearer {harness.user_token}")], RUN_URL)[0] == 401
    # Google saw the gateway's own app-only v1 token for the WIF audience, not the client's.
    (subject,) = google.exchanges
    assert subject["aud"] == WIF_URI and subject["appid"] == tenant.client_id and subject["idtyp"] == "app"
    assert subject["iss"] == f"https://sts.windows.net/{tenant.tenant_id}/"
    assert subject["sub"] == tenant.client_service_principal_oid()
    assert hits(tenant, google) == (1, 1, 1)


def test_tokens_are_reused_across_requests(harness):
    for _ in range(10):
        assert isinstance(harness.handle("/orders/1"), Forward)
    assert hits(harness.tenant, harness.google) == (1, 1, 1)


def test_a_cold_burst_shares_one_exchange_of_each_kind(harness):
    results = harness.burst("/orders/1", 30)
    assert all(isinstance(result, Forward) for result in results)
    assert len({added(result)["authorization"] for result in results}) == 1
    assert hits(harness.tenant, harness.google) == (1, 1, 1)


def test_each_audience_has_its_own_id_token_and_shares_the_federated_token(harness):
    orders = id_token_claims(harness.google, added(harness.handle("/orders/1"))["authorization"])
    billing = id_token_claims(harness.google, added(harness.handle("/billing/1"))["authorization"])
    health = harness.handle("/orders-health", token=None)  # a public route to the same service
    assert (orders["aud"], billing["aud"]) == (RUN_URL, CUSTOM_AUDIENCE)
    assert health.reason == "public" and added(health)["authorization"] == added(harness.handle("/orders/2"))["authorization"]
    assert hits(harness.tenant, harness.google) == (1, 1, 2)


def test_routes_whose_origin_needs_no_google_token_get_none(harness):
    for path in ("/plain/1", "/api/1"):
        result = harness.handle(path)
        assert isinstance(result, Forward) and "authorization" not in added(result)
        assert "x-serverless-authorization" not in result.strip
    assert hits(harness.tenant, harness.google) == (0, 0, 0)


def test_expiry_triggers_one_refresh_of_the_id_token(harness):
    tenant, google = harness.tenant, harness.google
    first = added(harness.handle("/orders/1"))["authorization"]
    harness.clock.now += 3600 - REFRESH_BEFORE_EXPIRY_SECONDS - 1
    assert added(harness.handle("/orders/1"))["authorization"] == first
    assert hits(tenant, google) == (1, 1, 1)
    google.id_token_lifetime = 7200  # so that only the ID token is due next
    harness.clock.now += 2  # inside the ID token's refresh window (and everyone else's)
    # The request that notices still goes with the held token; one refresh runs beside it.
    assert added(harness.handle("/orders/1"))["authorization"] == first
    results = harness.burst("/orders/1", 10)
    fresh = {added(result)["authorization"] for result in results}
    assert len(fresh) == 1 and fresh != {first}
    assert id_token_claims(google, fresh.pop())["exp"] > harness.clock() + 3600
    entra, sts, iam = hits(tenant, google)
    assert iam == 2 and sts == 2 and entra == 2  # each layer renewed once, none twice


def test_a_held_token_past_use_is_replaced_before_the_request_goes_on(harness):
    first = added(harness.handle("/orders/1"))["authorization"]
    harness.clock.now += 3600 - STOP_USING_BEFORE_EXPIRY_SECONDS
    second = added(harness.handle("/orders/1"))["authorization"]
    assert second != first
    assert id_token_claims(harness.google, second)["exp"] > harness.clock() + 3000


def _refusal(result, status, code):
    assert isinstance(result, Answer), result
    assert (result.status, result.code) == (status, code)
    body = json.loads(result.body)
    assert body["error"] == code and body["detail"] == ORIGIN_CREDENTIAL_DETAIL
    return body


@pytest.mark.parametrize("break_it,status,code,reached", [
    (lambda t, g: t.set_mode("error500", target="token"), 503, "origin_auth_unavailable", (1, 0, 0)),
    (lambda t, g: t.set_mode("reset", target="token"), 503, "origin_auth_unavailable", (1, 0, 0)),
    (lambda t, g: t.set_mode("html", target="token"), 503, "origin_auth_unavailable", (1, 0, 0)),
    (lambda t, g: setattr(t, "consented_tenants", set()), 502, "origin_auth_refused", (1, 0, 0)),  # AADSTS7000229
    (lambda t, g: g.set_mode("error500", target="sts"), 503, "origin_auth_unavailable", (1, 1, 0)),
    (lambda t, g: g.set_mode("unavailable", target="sts"), 503, "origin_auth_unavailable", (1, 1, 0)),
    (lambda t, g: g.set_mode("throttled", target="sts"), 503, "origin_auth_unavailable", (1, 1, 0)),
    (lambda t, g: g.set_mode("reset", target="sts"), 503, "origin_auth_unavailable", (1, 1, 0)),
    (lambda t, g: g.set_mode("html", target="sts"), 503, "origin_auth_unavailable", (1, 1, 0)),
    # The provider does not trust this audience / issuer, or refuses by its attribute condition.
    (lambda t, g: setattr(g.provider(), "allowed_audiences", ("api://someone-else",)), 502, "origin_auth_refused", (1, 1, 0)),
    (lambda t, g: setattr(g.provider(), "issuer", "https://sts.windows.net/another-tenant"), 502, "origin_auth_refused",
     (1, 1, 0)),
    (lambda t, g: setattr(g.provider(), "attribute_condition", lambda claims: False), 502, "origin_auth_refused",
     (1, 1, 0)),
    (lambda t, g: setattr(g.provider(), "disabled", True), 502, "origin_auth_refused", (1, 1, 0)),
    (lambda t, g: g.set_mode("unavailable", target="iam"), 503, "origin_auth_unavailable", (1, 1, 1)),
    (lambda t, g: g.set_mode("throttled", target="iam"), 503, "origin_auth_unavailable", (1, 1, 1)),
    (lambda t, g: g.set_mode("html", target="iam"), 503, "origin_auth_unavailable", (1, 1, 1)),
    # No roles/iam.workloadIdentityUser for the gateway's principal on the service account.
    (lambda t, g: g.revoke_workload_identity_user(g.principal(t.client_service_principal_oid())), 502,
     "origin_auth_refused", (1, 1, 1)),
])
def test_a_failing_step_refuses_in_the_clients_terms_and_forwards_nothing(harness, break_it, status, code, reached):
    tenant, google = harness.tenant, harness.google
    break_it(tenant, google)
    result = harness.handle("/orders/1")
    _refusal(result, status, code)
    assert result.rule == "orders" and result.identity.oid == tenant.user_oid  # for the audit line
    assert hits(tenant, google) == reached
    assert any(code in line for line in harness.logs)
    # Nothing secret in what the client or the log is told.
    for text in [result.body, *harness.logs]:
        assert harness.user_token not in text and "ya29." not in text and "eyJ" not in text


def test_a_grpc_client_is_told_unavailable_in_trailers(harness):
    harness.google.set_mode("unavailable", target="iam")
    result = harness.handle("/orders/1", method="POST", headers={"content-type": "application/grpc"})
    assert result.status == 200 and dict(result.headers)["grpc-status"] == "14" and result.code == "origin_auth_unavailable"


def test_a_public_route_is_refused_too_when_its_origin_credential_cannot_be_had(harness):
    harness.google.set_mode("error500", target="sts")
    result = harness.handle("/orders-health", token=None)
    body = _refusal(result, 503, "origin_auth_unavailable")
    assert result.rule == "orders-health" and "gserviceaccount" not in json.dumps(body)


def test_after_a_failure_google_is_not_asked_again_until_the_cooldown_ends(harness):
    tenant, google = harness.tenant, harness.google
    google.set_mode("unavailable", target="sts")
    for _ in range(5):
        _refusal(harness.handle("/orders/1"), 503, "origin_auth_unavailable")
    assert hits(tenant, google) == (1, 1, 0)
    google.set_mode("ok", target="sts")
    harness.clock.now += FAILURE_COOLDOWN_SECONDS
    assert isinstance(harness.handle("/orders/1"), Forward)
    assert hits(tenant, google) == (1, 2, 1)  # the Entra token was kept


def test_a_revoked_federated_token_is_exchanged_again(harness):
    tenant, google = harness.tenant, harness.google
    harness.handle("/orders/1")
    google.expire_federated_tokens()
    _refusal(harness.handle("/billing/1"), 503, "origin_auth_unavailable")  # IAM: 401 UNAUTHENTICATED
    harness.clock.now += FAILURE_COOLDOWN_SECONDS
    assert isinstance(harness.handle("/billing/1"), Forward)
    assert hits(tenant, google) == (1, 2, 3)


def test_forward_authorization_keeps_the_clients_token_and_sends_googles_apart(world, compiled):
    harness = Harness(world, compiled, FORWARD_AUTHORIZATION="true")
    try:
        result = harness.handle("/orders/1", headers={"X-Serverless-Authorization": "Bearer forged"})
        headers = added(result)
        # The client's Authorization goes on as it came; Google's token rides in the header
        # Cloud Run checks instead when both are present; the client's copy of that is removed.
        assert "authorization" not in result.strip and "authorization" not in headers
        assert "x-serverless-authorization" in result.strip
        claims = id_token_claims(harness.google, headers["x-serverless-authorization"])
        assert claims["aud"] == RUN_URL
        sent = [("authorization", f"Bearer {harness.user_token}"), *headers.items()]
        assert CloudRunFrontEnd(harness.google).check(sent, RUN_URL) is None
    finally:
        harness.close()


def test_the_default_origin_with_origin_auth_google(world, compiled):
    harness = Harness(world, compiled, ORIGIN_AUTH="google")
    try:
        claims = id_token_claims(harness.google, added(harness.handle("/api/1"))["authorization"])
        assert claims["aud"] == DEFAULT_ORIGIN
        # A route with its own origin decides for itself: the default origin's token never goes there.
        assert "authorization" not in added(harness.handle("/plain/1"))
    finally:
        harness.close()
    custom = Harness(world, compiled, ORIGIN_AUTH="google", ORIGIN_AUDIENCE="default.internal")
    try:
        assert id_token_claims(custom.google, added(custom.handle("/api/1"))["authorization"])["aud"] == "default.internal"
    finally:
        custom.close()


def test_the_client_secret_and_a_v2_token_work_too(world, compiled):
    tenant, google, _ = world
    # accessTokenAcceptedVersion 2: the token's iss is the v2 issuer and its aud the client id.
    google.trust_entra(tenant, version="2.0", audience=tenant.client_id)
    harness = Harness(world, compiled, secret=True, ENTRA_WIF_SCOPE=f"{tenant.app_id_uri}/.default")
    try:
        assert isinstance(harness.handle("/orders/1"), Forward)
        (subject,) = google.exchanges
        assert subject["ver"] == "2.0" and subject["aud"] == tenant.client_id and subject["azp"] == tenant.client_id
        assert subject["azpacr"] == "1"  # authenticated with the secret
    finally:
        harness.close()


def test_a_fresh_isolate_finds_the_id_token_in_kv_sealed(world, compiled):
    tenant, google, clock = world
    store = MemoryStore()
    first = Harness(world, compiled, store=store)
    token = added(first.handle("/orders/1"))["authorization"].partition(" ")[2]
    first.close()
    (value,) = [value for key, value in store.data.items() if key.startswith(KV_PREFIX)]
    assert token not in value and "eyJ" not in value and value.startswith("v1.")
    second = Harness(world, compiled, store=store)
    try:
        assert added(second.handle("/orders/1"))["authorization"] == f"Bearer {token}"
        assert hits(tenant, google) == (1, 1, 1)  # nothing asked again
    finally:
        second.close()
    # Another client credential cannot open the entry: it asks Google itself.
    clock.now += 1  # (an ID token minted in the same second with the same claims is the same token)
    other = Harness(world, compiled, store=store, secret=True)
    try:
        assert added(other.handle("/orders/1"))["authorization"] != f"Bearer {token}"
        assert hits(tenant, google) == (2, 2, 2)
    finally:
        other.close()


def test_a_policy_needing_google_without_the_variables_is_a_misconfigured_gateway(world, compiled):
    tenant, _, _ = world
    config = Config.from_env({"ORIGIN_URL": DEFAULT_ORIGIN, "ENTRA_TENANT_ID": tenant.tenant_id,
                              "ENTRA_AUDIENCES": tenant.client_id}.get)
    with pytest.raises(ConfigError, match="GOOGLE_WORKLOAD_PROVIDER"):
        assemble(config, Policy.from_json(compiled), http=UrllibHttp(), store=MemoryStore(), verifier=HostVerifier(),
                 clock=lambda: 0, log=print, platform=HostSignInPlatform())
