"""Private Cloud Run origins in workerd (issue #18): the Worker gets a Google ID token with
workload identity federation from its own Entra app (mock tenant's real token endpoint,
certificate assertion signed with WebCrypto), exchanges it at the mock STS, asks the mock IAM
Credentials for an ID token, and the echo origins, in Cloud Run mode, let a request in only with
a valid Google ID token for their URL.

Stack A: the certificate, v1 Entra tokens for a WIF Application ID URI (Google's Azure guide),
routes with their own Cloud Run origins, FORWARD_AUTHORIZATION off, the assertion on.
Stack B: the secret, the app's own App ID URI (v2 tokens), the default origin private
(ORIGIN_AUTH=google), FORWARD_AUTHORIZATION on.

Hit counters count the exchanges; expiry is reached with ID tokens that Google (the mock) makes
a few seconds longer-lived than the gateway's refresh margin.
"""

import concurrent.futures
import json
import textwrap
import time

import pytest
from entragate_assertion import AssertionVerifier
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import new_assertion_key
from entragate_mocks.echo_origin import EchoOrigin
from entragate_mocks.mock_google import DEFAULT_SERVICE_ACCOUNT, CloudRunFrontEnd, MockGoogle, verify_rs256
from entragate_mocks.stack import Stack, environment_ok

from entragate.google import FAILURE_COOLDOWN_SECONDS, REFRESH_BEFORE_EXPIRY_SECONDS

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

PREFIX = "x-entragate-"
ISSUER = "entragate-google-test"
WIF_URI = "api://entragate-wif"
CUSTOM_AUDIENCE = "orders.internal.example"
ROUTES = ("orders", "custom", "short", "burst", "faults", "fresh")
# Beyond the cooldown: the next attempt is a real one.
AFTER_COOLDOWN = FAILURE_COOLDOWN_SECONDS + 0.5


def policy_text(origins: dict) -> str:
    text = textwrap.dedent("""
        [[routes]]
        name = "api"
        paths = ["/api/**"]
        allow = { authenticated = true }
    """)
    for name in ROUTES:
        audience = f'origin_audience = "{CUSTOM_AUDIENCE}"' if name == "custom" else ""
        text += textwrap.dedent(f"""
            [[routes]]
            name = "{name}"
            paths = ["/{name}/**"]
            allow = {{ authenticated = true }}
            origin = "{origins[name].url}"
            origin_auth = "google"
            {audience}
        """)
    return text


def google_variables(google) -> dict:
    return {"GOOGLE_WORKLOAD_PROVIDER": google.provider_name, "GOOGLE_SERVICE_ACCOUNT": DEFAULT_SERVICE_ACCOUNT,
            "GOOGLE_STS_URL": google.sts_url, "GOOGLE_IAM_CREDENTIALS_URL": google.iam_credentials_url}


@pytest.fixture(scope="module")
def google():
    with MockGoogle() as running:
        yield running


@pytest.fixture(scope="module")
def origins(google):
    made = {name: EchoOrigin(front_end=CloudRunFrontEnd(google, audiences=(CUSTOM_AUDIENCE,) if name == "custom" else ()))
            for name in ROUTES}
    for origin in made.values():
        origin.start()
    yield made
    for origin in made.values():
        origin.stop()


@pytest.fixture(scope="module")
def stack(google, origins, tmp_path_factory):
    policies = tmp_path_factory.mktemp("google-policies")
    (policies / "routes.toml").write_text(policy_text(origins))
    compiled = compile_policies(policies)
    with Stack(main="tests/runtime/workers/policy_from_var.py", TEST_POLICY_JSON=compiled.json_text,
               client_credential="certificate", ENTRA_WIF_SCOPE=f"{WIF_URI}/.default",
               ASSERTION_SIGNING_KEY=new_assertion_key(), ASSERTION_ISSUER=ISSUER, **google_variables(google)) as running:
        tenant = running.tenant
        tenant.add_resource(WIF_URI, version="1.0")  # accessTokenAcceptedVersion null: v1 tokens
        google.trust_entra(tenant, version="1.0", audience=WIF_URI)
        google.grant_workload_identity_user(google.principal(tenant.client_service_principal_oid()))
        yield running


def echoed(echo: dict) -> dict:
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def counts(stack, google) -> tuple[int, int, int]:
    """(Entra client-credentials requests, STS exchanges, generateIdToken calls)."""
    tenant = stack.tenant
    return tenant.hits(f"/{tenant.tenant_id}/oauth2/v2.0/token"), google.hits("sts"), google.hits("iam")


def id_token_claims(google, value: str) -> dict:
    scheme, _, token = value.partition(" ")
    assert scheme == "Bearer"
    verified = verify_rs256(token, google.jwks())
    assert not isinstance(verified, str), verified
    return verified[1]


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_allowed_request_reaches_the_private_origin_with_a_google_id_token(stack, google, origins):
    client_token = stack.tenant.mint()
    before = counts(stack, google)
    status, headers, body = stack.request("GET", "/orders/7?page=2", token=client_token,
                                          headers={"X-Serverless-Authorization": "Bearer forged"})
    assert status == 200, body
    echo = origins["orders"].last
    assert json.loads(body) == echo and echo["path"] == "/orders/7" and echo["query"] == "page=2"
    seen = echoed(echo)
    # The origin got Google's ID token for its own URL, from the service account; the client's
    # bearer token went nowhere near it, nor the client's X-Serverless-Authorization.
    (authorization,) = seen["authorization"]
    claims = id_token_claims(google, authorization)
    assert claims["aud"] == origins["orders"].url and claims["email"] == DEFAULT_SERVICE_ACCOUNT
    assert client_token not in json.dumps(seen) and "x-serverless-authorization" not in seen
    # Identity headers and the assertion are as on any route: the service still learns who called.
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid] and seen[PREFIX + "rule"] == ["orders"]
    (assertion,) = seen[PREFIX + "assertion"]
    verifier = AssertionVerifier(stack.url + "/.well-known/entragate/jwks.json", audience=origins["orders"].url,
                                 issuer=ISSUER)
    assert verifier.verify(assertion, method="GET", path="/orders/7")["oid"] == stack.tenant.user_oid
    # One of each exchange; Google saw the gateway's own v1 app-only token, signed for WIF.
    entra, sts, iam = counts(stack, google)
    assert (entra - before[0], sts - before[1], iam - before[2]) == (1, 1, 1)
    subject = google.exchanges[-1]
    assert subject["aud"] == WIF_URI and subject["appid"] == stack.tenant.client_id and subject["ver"] == "1.0"
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["rule"], line["decision"], line["status"]) == ("orders", "allow", 200)


def test_tokens_are_reused_across_requests(stack, google, origins):
    stack.request("GET", "/orders/1", token=stack.tenant.mint())
    before = counts(stack, google)
    for _ in range(10):
        assert stack.request("GET", "/orders/1", token=stack.tenant.mint())[0] == 200
    assert counts(stack, google) == before
    # A custom audience has its own ID token (one more generateIdToken), the federated token is shared.
    status, _, body = stack.request("GET", "/custom/1", token=stack.tenant.mint())
    assert status == 200, body
    assert id_token_claims(google, echoed(origins["custom"].last)["authorization"][0])["aud"] == CUSTOM_AUDIENCE
    assert counts(stack, google) == (before[0], before[1], before[2] + 1)


def test_concurrent_requests_share_one_generate_id_token(stack, google, origins):
    stack.request("GET", "/orders/1", token=stack.tenant.mint())  # the federated token is in hand
    before = counts(stack, google)
    tokens = [stack.tenant.mint() for _ in range(20)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda token: stack.request("GET", "/burst/x", token=token), tokens))
    assert [status for status, _, _ in results] == [200] * 20
    assert counts(stack, google) == (before[0], before[1], before[2] + 1)
    assert len({tuple(echoed(echo)["authorization"]) for echo in origins["burst"].requests}) == 1


def test_expiry_triggers_one_refresh(stack, google, origins):
    google.id_token_lifetime = REFRESH_BEFORE_EXPIRY_SECONDS + 6  # fresh for 6 s in the gateway's eyes
    try:
        stack.request("GET", "/short/1", token=stack.tenant.mint())
        issued = time.monotonic()
        first = echoed(origins["short"].last)["authorization"]
        before = counts(stack, google)
        for _ in range(3):
            assert stack.request("GET", "/short/1", token=stack.tenant.mint())[0] == 200
        assert counts(stack, google) == before and echoed(origins["short"].last)["authorization"] == first
        time.sleep(max(0.0, 6.5 - (time.monotonic() - issued)))
        # Inside the refresh window: this request still goes with the held token, one refresh
        # runs beside it (waitUntil), and the next requests carry the new token.
        assert stack.request("GET", "/short/1", token=stack.tenant.mint())[0] == 200
        assert echoed(origins["short"].last)["authorization"] == first
        assert wait_for(lambda: counts(stack, google)[2] == before[2] + 1)
        after = counts(stack, google)
        for _ in range(3):
            assert stack.request("GET", "/short/1", token=stack.tenant.mint())[0] == 200
        assert echoed(origins["short"].last)["authorization"] != first
        assert counts(stack, google) == after == (before[0], before[1], before[2] + 1)
    finally:
        google.id_token_lifetime = 3600


def refused(stack, origin, path, status, code):
    token = stack.tenant.mint()
    got, headers, body = stack.request("GET", path, token=token)
    problem = json.loads(body)
    assert (got, problem["error"]) == (status, code), body
    assert DEFAULT_SERVICE_ACCOUNT not in body.decode() and token not in body.decode()
    assert origin.requests == [] and origin.refusals == []  # nothing reached even Cloud Run's front end
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["rule"], line["decision"], line["reason"], line["status"]) == ("faults", "deny", code, status)
    assert line["oid"] == stack.tenant.user_oid
    return problem


def test_google_down_or_refusing_is_502_or_503_and_the_origin_is_never_reached(stack, google, origins):
    origin = origins["faults"]
    stack.request("GET", "/orders/1", token=stack.tenant.mint())  # everything in hand but this audience
    provider = google.provider()
    principal = google.principal(stack.tenant.client_service_principal_oid())
    # Google no longer accepts the federated token the gateway holds (IAM 401): 503, and it is dropped.
    google.expire_federated_tokens()
    _, sts, iam = counts(stack, google)
    refused(stack, origin, "/faults/1", 503, "origin_auth_unavailable")
    assert counts(stack, google)[1:] == (sts, iam + 1)
    # Within the cooldown nobody asks Google again.
    refused(stack, origin, "/faults/1", 503, "origin_auth_unavailable")
    assert counts(stack, google)[1:] == (sts, iam + 1)
    try:
        google.set_mode("unavailable", target="sts")  # STS down: a new exchange fails
        time.sleep(AFTER_COOLDOWN)
        refused(stack, origin, "/faults/1", 503, "origin_auth_unavailable")
        assert counts(stack, google)[1:] == (sts + 1, iam + 1)
        google.set_mode("ok", target="sts")
        provider.allowed_audiences = ("api://someone-else",)  # the provider does not trust the token
        time.sleep(AFTER_COOLDOWN)
        refused(stack, origin, "/faults/1", 502, "origin_auth_refused")
        assert counts(stack, google)[1:] == (sts + 2, iam + 1)
        provider.allowed_audiences = (WIF_URI,)
        google.revoke_workload_identity_user(principal)  # no roles/iam.workloadIdentityUser
        time.sleep(AFTER_COOLDOWN)
        refused(stack, origin, "/faults/1", 502, "origin_auth_refused")
        assert counts(stack, google)[1:] == (sts + 3, iam + 2)
        google.grant_workload_identity_user(principal)
        google.set_mode("unavailable", target="iam")  # IAM Credentials down
        time.sleep(AFTER_COOLDOWN)
        refused(stack, origin, "/faults/1", 503, "origin_auth_unavailable")
        assert counts(stack, google)[1:] == (sts + 3, iam + 3)
    finally:
        google.set_mode("ok", target="sts")
        google.set_mode("ok", target="iam")
        provider.allowed_audiences = (WIF_URI,)
        google.grant_workload_identity_user(principal)
    time.sleep(AFTER_COOLDOWN)
    status, _, body = stack.request("GET", "/faults/1", token=stack.tenant.mint())
    assert status == 200, body
    assert len(origin.requests) == 1 and origin.refusals == []


def test_a_grpc_client_is_told_unavailable_in_trailers(stack, google):
    google.set_mode("unavailable", target="iam")
    try:
        status, headers, body = stack.request("POST", "/fresh/pkg.Service/Call", token=stack.tenant.mint(),
                                              headers={"content-type": "application/grpc"}, body=b"\0\0\0\0\0")
        assert (status, body, headers["grpc-status"]) == (200, b"", "14")
    finally:
        google.set_mode("ok", target="iam")


def test_no_token_goes_to_an_origin_that_needs_none(stack, origins):
    status, _, body = stack.request("GET", "/api/x", token=stack.tenant.mint())
    assert status == 200
    assert "authorization" not in echoed(stack.origin.last)


def test_tokens_are_never_logged(stack, origins):
    output = stack.runner.output
    assert "ya29." not in output and "Bearer ey" not in output
    # The failures were logged, by step, and no request hit a bug or workerd's cross-request I/O guard.
    assert "origin credential: generateIdToken failed (origin_auth_refused)" in output
    assert "internal error" not in output and "Cannot perform I/O" not in output
    for origin in origins.values():
        for echo in origin.requests:
            assert echoed(echo)["authorization"][0].partition(" ")[2] not in output


def test_a_fresh_isolate_takes_the_id_token_from_kv_and_fails_closed_without_entra(stack, google, origins):
    stack.request("GET", "/orders/1", token=stack.tenant.mint())
    stack.restart_runner()
    before = counts(stack, google)
    status, _, body = stack.request("GET", "/orders/1", token=stack.tenant.mint())
    assert status == 200, body
    assert counts(stack, google) == before  # no Entra, STS or IAM call: the sealed KV entry
    # A new audience in the fresh isolate needs the whole chain; with Entra's token endpoint
    # down it is refused and nothing is forwarded.
    stack.tenant.set_mode("error500", target="token")
    try:
        token = stack.tenant.mint()
        got, _, body = stack.request("GET", "/fresh/1", token=token)
        assert (got, json.loads(body)["error"]) == (503, "origin_auth_unavailable")
        assert origins["fresh"].requests == [] and origins["fresh"].refusals == []
        assert counts(stack, google)[1:] == before[1:]
    finally:
        stack.tenant.set_mode("ok", target="token")


@pytest.fixture(scope="module")
def forwarding_stack(google, tmp_path_factory):
    """Stack B: the default origin is the private service; the client's Authorization is forwarded."""
    policies = tmp_path_factory.mktemp("google-default-origin")
    (policies / "routes.toml").write_text(textwrap.dedent("""
        [[routes]]
        name = "api"
        paths = ["/api/**"]
        allow = { authenticated = true }
    """))
    compiled = compile_policies(policies)
    with Stack(main="tests/runtime/workers/policy_from_var.py", TEST_POLICY_JSON=compiled.json_text,
               client_credential="secret", ORIGIN_AUTH="google", FORWARD_AUTHORIZATION="true",
               **google_variables(google)) as running:
        tenant = running.tenant
        running.origin.front_end = CloudRunFrontEnd(google)
        # The app's own App ID URI (ENTRA_WIF_SCOPE's default), accessTokenAcceptedVersion 2.
        google.trust_entra(tenant, version="2.0", audience=tenant.client_id)
        google.grant_workload_identity_user(google.principal(tenant.client_service_principal_oid()))
        yield running


def test_the_default_origin_private_and_the_clients_token_forwarded_apart(forwarding_stack, google):
    stack = forwarding_stack
    client_token = stack.tenant.mint()
    status, _, body = stack.request("GET", "/api/orders", token=client_token,
                                    headers={"X-Serverless-Authorization": "Bearer forged"})
    assert status == 200, body
    seen = echoed(stack.origin.last)
    # FORWARD_AUTHORIZATION: the service reads its caller's token where it always did, and
    # Cloud Run checked Google's, which rode in X-Serverless-Authorization.
    assert seen["authorization"] == [f"Bearer {client_token}"]
    (serverless,) = seen["x-serverless-authorization"]
    claims = id_token_claims(google, serverless)
    assert claims["aud"] == stack.origin.url and claims["email"] == DEFAULT_SERVICE_ACCOUNT
    subject = google.exchanges[-1]
    assert subject["ver"] == "2.0" and subject["aud"] == stack.tenant.client_id and subject["azpacr"] == "1"
    # Without the gateway, the service is closed: the client's own token does not open it.
    assert stack.origin.front_end.check([("authorization", f"Bearer {client_token}")], stack.origin.url)[0] == 401
