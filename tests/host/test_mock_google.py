"""The mock Google refuses what Google refuses, over HTTP, and the Cloud Run front end of the
echo origin lets through only a valid Google ID token for its URL from an invoker: a mock that
accepted anything would let the gateway's tests pass for the wrong reasons."""

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
from entragate_mocks.echo_origin import EchoOrigin
from entragate_mocks.mock_entra import MockTenant
from entragate_mocks.mock_google import (
    ACCESS_TOKEN_TYPE, CLOUD_PLATFORM, DEFAULT_SERVICE_ACCOUNT, TOKEN_EXCHANGE, CloudRunFrontEnd, MockGoogle,
)

WIF_URI = "api://entragate-wif"
JWT = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture(scope="module")
def tenant():
    with MockTenant() as running:
        running.add_resource(WIF_URI, version="1.0")
        yield running


@pytest.fixture
def google(tenant):
    with MockGoogle() as running:
        running.trust_entra(tenant, version="1.0", audience=WIF_URI)
        running.grant_workload_identity_user(running.principal(tenant.client_service_principal_oid()))
        yield running


def post(url, data: bytes, headers: dict):
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def app_token(tenant, **claims):
    """The gateway app's client-credentials token for the WIF audience, as Entra mints it."""
    sp = tenant.client_service_principal_oid()
    base = {"aud": WIF_URI, "oid": sp, "sub": sp, "idtyp": "app", "appid": tenant.client_id}
    return tenant.mint({**base, **claims}, version="1.0", kind="app", omit=("roles",))


def exchange(google, subject_token, **fields):
    form = {"grant_type": TOKEN_EXCHANGE, "audience": google.provider_name, "scope": CLOUD_PLATFORM,
            "requested_token_type": ACCESS_TOKEN_TYPE, "subject_token_type": JWT, "subject_token": subject_token,
            **fields}
    form = {key: value for key, value in form.items() if value is not None}
    return post(google.sts_url, urlencode(form).encode(), {"content-type": "application/x-www-form-urlencoded"})


def generate(google, federated, audience="https://svc.example", account=DEFAULT_SERVICE_ACCOUNT, project="-"):
    url = f"{google.url}/v1/projects/{project}/serviceAccounts/{account}:generateIdToken"
    body = json.dumps({"audience": audience, "includeEmail": True} if audience else {}).encode()
    return post(url, body, {"content-type": "application/json", "authorization": f"Bearer {federated}"})


def test_the_chain_as_google_runs_it(tenant, google):
    status, answer = exchange(google, app_token(tenant))
    assert status == 200 and answer["token_type"] == "Bearer" and 3500 < answer["expires_in"] <= 3600
    status, answer = generate(google, answer["access_token"])
    assert status == 200
    claims = google.issued_id_tokens[-1]
    assert claims["aud"] == "https://svc.example" and claims["email"] == DEFAULT_SERVICE_ACCOUNT
    assert claims["sub"] == claims["azp"] == google.unique_id() and claims["exp"] - claims["iat"] == 3600
    front_end = CloudRunFrontEnd(google)
    assert front_end.check([("Authorization", f"Bearer {answer['token']}")], "https://svc.example") is None


@pytest.mark.parametrize("mutation,error", [
    (lambda t, g: {"subject_token": app_token(t, aud="api://someone-else")}, "invalid_grant"),
    (lambda t, g: {"subject_token": app_token(t, iss="https://sts.windows.net/another/")}, "invalid_grant"),
    (lambda t, g: {"subject_token": app_token(t, exp=int(time.time()) - 1)}, "invalid_grant"),
    (lambda t, g: {"subject_token": app_token(t)[:-4] + "AAAA"}, "invalid_grant"),  # signature
    (lambda t, g: {"subject_token": app_token(t, sub="")}, "invalid_grant"),
    (lambda t, g: {"subject_token": t.mint(version="2.0", audience=WIF_URI)}, "invalid_grant"),  # v2 issuer
    (lambda t, g: {"audience": g.provider_name.replace("entra-tenant", "other")}, "invalid_target"),
    (lambda t, g: {"scope": None}, "invalid_request"),
    (lambda t, g: {"scope": "openid"}, "invalid_scope"),
    (lambda t, g: {"grant_type": "client_credentials"}, "unsupported_grant_type"),
    (lambda t, g: {"requested_token_type": JWT}, "invalid_request"),
    (lambda t, g: {"subject_token_type": ACCESS_TOKEN_TYPE}, "invalid_request"),
])
def test_sts_refuses_what_the_provider_does_not_trust(tenant, google, mutation, error):
    fields = {"subject_token": app_token(tenant), **mutation(tenant, google)}
    status, answer = exchange(google, **fields)
    assert status == 400 and answer["error"] == error, answer


def test_sts_applies_the_attribute_condition(tenant, google):
    google.provider().attribute_condition = lambda claims: claims.get("appid") == "someone-else"
    status, answer = exchange(google, app_token(tenant))
    assert (status, answer["error"]) == (400, "invalid_grant") and "attribute condition" in answer["error_description"]


def test_generate_id_token_checks_the_token_the_binding_and_the_request(tenant, google):
    _, answer = exchange(google, app_token(tenant))
    federated = answer["access_token"]
    status, answer = generate(google, "ya29.not-issued")
    assert (status, answer["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert generate(google, federated, project="my-project")[0] == 400
    status, answer = generate(google, federated, audience=None)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, answer = generate(google, federated, account="nobody@p.iam.gserviceaccount.com")
    assert (status, answer["error"]["status"]) == (403, "PERMISSION_DENIED")
    google.revoke_workload_identity_user(google.principal(tenant.client_service_principal_oid()))
    status, answer = generate(google, federated)
    assert status == 403 and "iam.serviceAccounts.getOpenIdToken" in answer["error"]["message"]
    google.grant_workload_identity_user(google.pool_principal_set)  # the whole pool
    assert generate(google, federated)[0] == 200


def test_a_federated_token_expires(tenant, google):
    google.sts_lifetime = 600
    _, answer = exchange(google, app_token(tenant))
    assert answer["expires_in"] == 600
    google.clock = lambda: time.time() + 601
    assert generate(google, answer["access_token"])[0] == 401


@pytest.mark.parametrize("target", ["sts", "iam"])
@pytest.mark.parametrize("mode,status", [("error500", 500), ("unavailable", 503), ("throttled", 429)])
def test_fault_modes_answer_as_google_does_when_it_fails(tenant, google, target, mode, status):
    google.set_mode(mode, target=target)
    if target == "sts":
        got, answer = exchange(google, app_token(tenant))
        assert got == status and isinstance(answer["error"], str)
    else:
        google.set_mode("ok", target="sts")
        _, answer = exchange(google, app_token(tenant))
        google.set_mode(mode, target="iam")
        got, answer = generate(google, answer["access_token"])
        assert got == status and answer["error"]["code"] == status
    assert google.hits(target) >= 1


def test_the_cloud_run_front_end(google):
    service = "https://svc.example"
    front_end = CloudRunFrontEnd(google, audiences=("custom",))
    good = google.mint_id_token(service)
    assert front_end.check([("Authorization", f"Bearer {good}")], service) is None
    assert front_end.check([("Authorization", f"Bearer {google.mint_id_token(service + '/')}")], service) is None
    assert front_end.check([("Authorization", f"Bearer {google.mint_id_token('custom')}")], service) is None
    # X-Serverless-Authorization is checked instead of Authorization when present.
    assert front_end.check([("Authorization", "Bearer entra"), ("X-Serverless-Authorization", f"Bearer {good}")],
                           service) is None
    assert front_end.check([("Authorization", f"Bearer {good}"), ("X-Serverless-Authorization", "Bearer x")],
                           service)[0] == 401
    refused = {
        "none": [],
        "basic": [("Authorization", "Basic eDp5")],
        "other audience": [("Authorization", f"Bearer {google.mint_id_token('https://other.example')}")],
        "expired": [("Authorization", f"Bearer {google.mint_id_token(service, lifetime=-1)}")],
        "forged": [("Authorization", f"Bearer {good[:-4]}AAAA")],
        "no email": [("Authorization", f"Bearer {google.mint_id_token(service, include_email=False)}")],
    }
    for name, headers in refused.items():
        assert front_end.check(headers, service) is not None, name
    google.add_service_account("stranger@p.iam.gserviceaccount.com")
    stranger = google.mint_id_token(service, "stranger@p.iam.gserviceaccount.com")
    assert front_end.check([("Authorization", f"Bearer {stranger}")], service)[0] == 403


def test_the_echo_origin_in_cloud_run_mode_refuses_before_the_service(google):
    with EchoOrigin(front_end=CloudRunFrontEnd(google)) as origin:
        request = urllib.request.Request(origin.url + "/x", headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 401 and origin.requests == [] and len(origin.refusals) == 1
        token = google.mint_id_token(origin.url)
        request = urllib.request.Request(origin.url + "/x", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and json.loads(response.read())["path"] == "/x"
        assert len(origin.requests) == 1
