"""Groups overage resolved through Microsoft Graph, through Gateway.handle on CPython: real
tokens from the mock tenant, the client-credentials token endpoint (certificate assertion signed
as the Worker signs it, or secret) and the mock Graph over HTTP (tools/entragate_mocks/mock_graph.py).
What is forwarded, what is refused and how, what the audit line says, and the configuration.
"""

import asyncio
import json
import tempfile
import time
from pathlib import Path

import jwt
import pytest
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import (
    HostSigner, HostSignInPlatform, HostVerifier, new_assertion_key, new_client_certificate, new_session_key,
)
from entragate_tools.host_io import UrllibHttp
from entragate_mocks.mock_graph import GraphTenant, MockGraph

from entragate.config import Config, ConfigError
from entragate.denials import Answer
from entragate.gateway import Forward, IncomingRequest, assemble
from entragate.graph import FAILURE_COOLDOWN_SECONDS, STORE_PREFIX
from entragate.identity import Identity
from entragate.policy import Policy
from entragate.upstream import referenced_groups

ADMINS = "11111111-1111-4111-8111-111111111111"
PARENT = "55555555-5555-4555-8555-555555555555"
CHILD = "56565656-5656-4656-8656-565656565656"  # a member of PARENT: not named by the policy
BLOCKED = "66666666-6666-4666-8666-666666666666"
OTHER_USER = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
NESTED_USER = "2b3c4d5e-6f70-4a8b-9cad-1e2f3a4b5c6d"
BLOCKED_USER = "3c4d5e6f-7081-4a9b-8cbd-2f3a4b5c6d7e"
UNCONSENTED_TENANT = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
POLICY = f"""
[groups]
admins = "{ADMINS}"
parent = "{PARENT}"
blocked = "{BLOCKED}"

[[routes]]
name = "admin"
paths = ["/admin/**"]
allow = {{ groups = ["admins"] }}

[[routes]]
name = "nested"
paths = ["/nested/**"]
allow = {{ groups = ["parent"] }}

[[routes]]
name = "open"
paths = ["/open/**"]
deny = {{ groups = ["blocked"] }}
allow = {{ authenticated = true }}

[[routes]]
name = "roles"
paths = ["/roles/**"]
allow = {{ scopes = ["access_as_user"] }}

[[routes]]
name = "portal"
paths = ["/portal/**"]
login = true
allow = {{ groups = ["admins"] }}
"""
EXTRA_GROUP = "77777777-7777-4777-8777-777777777777"
CERTIFICATE_PEM, CERTIFICATE_ONLY = new_client_certificate()
SECRET = "graph-test-secret"
OVERAGE = {"_claim_names": {"groups": "src1"},
           "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/x/users/y/getMemberObjects"}}}


@pytest.fixture(scope="module")
def tenant():
    with GraphTenant(client_secret=SECRET, client_certificate_pem=CERTIFICATE_ONLY) as running:
        yield running


@pytest.fixture(scope="module")
def graph(tenant):
    with MockGraph(tenant) as running:
        tenant.graph_resource = running.url
        for tid in (tenant.tenant_id, UNCONSENTED_TENANT):
            running.add_user(tid, tenant.user_oid, [ADMINS, "99999999-9999-4999-8999-999999999999"])
            running.add_user(tid, OTHER_USER, [])
            running.add_user(tid, NESTED_USER, [CHILD])
            running.nest(tid, CHILD, PARENT)
            running.add_user(tid, BLOCKED_USER, [BLOCKED])
        yield running


@pytest.fixture(autouse=True)
def fresh_mocks(tenant, graph):
    graph.set_mode("ok")
    graph.reset_hits()
    tenant.set_token_mode("ok")
    tenant.granted.clear()
    with tenant._lock:
        tenant.token_requests.clear()
    yield


def compiled(text=POLICY):
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "p.toml").write_text(text)
        return json.loads(compile_policies(Path(directory)).json_text)


class Store:
    def __init__(self):
        self.data, self.ttls = {}, {}

    async def get(self, key):
        return self.data.get(key)

    async def put(self, key, value, ttl=None):
        self.data[key] = value
        self.ttls[key] = ttl


class Harness:
    def __init__(self, tenant, graph, *, env=None, store=None, policy=POLICY, graph_groups=True):
        variables = {
            "ORIGIN_URL": "https://origin.example", "ENTRA_TENANT_ID": tenant.tenant_id,
            "ENTRA_AUTHORITY": tenant.authority, "ENTRA_AUDIENCES": tenant.client_id,
            "ENTRA_CLIENT_ID": tenant.client_id, "ENTRA_CLIENT_CERTIFICATE": CERTIFICATE_PEM,
            "ASSERTION_SIGNING_KEY": new_assertion_key(), "SESSION_KEYS": new_session_key(),
        }
        if graph_groups:
            variables.update(GRAPH_GROUPS="true", GRAPH_URL=graph.url, GRAPH_TIMEOUT_MS="500")
        variables.update(env or {})
        variables = {name: value for name, value in variables.items() if value is not None}
        self.config = Config.from_env(variables.get)
        data = compiled(policy)
        self.store = store if store is not None else Store()
        self.logs = []
        self.gateway = assemble(self.config, Policy.from_json(data), http=UrllibHttp(), store=self.store,
                                verifier=HostVerifier(), clock=time.time, log=self.logs.append,
                                policy_groups=referenced_groups(data), platform=HostSignInPlatform(),
                                signer=HostSigner(self.config.assertion_private_jwk))

    def handle(self, path, token=None, *, accept="application/json", content_type=None):
        request = IncomingRequest(method="GET", url="https://gw.example" + path, request_id="req-1",
                                  header_names=("accept",), authorization=f"Bearer {token}" if token else None,
                                  accept=accept, content_type=content_type)

        async def run():
            deferred = []
            try:
                return await self.gateway.handle(request, deferred.append)
            finally:
                for coroutine in deferred:  # what waitUntil finishes after the response
                    await coroutine

        result = asyncio.run(run())
        status = result.status if isinstance(result, Answer) else 200
        self.audit = json.loads(self.gateway.audit(request, result, status, 1.0))
        return result


def overage_token(tenant, oid=None, tid=None, **claims):
    return tenant.mint({**OVERAGE, **({"oid": oid} if oid else {}), **claims}, omit=("groups",), tid=tid)


@pytest.fixture
def harness(tenant, graph):
    return Harness(tenant, graph)


def headers(forward: Forward) -> dict:
    return dict(forward.add)


def test_an_overage_member_is_allowed_and_the_resolved_groups_are_forwarded(harness, tenant, graph):
    result = harness.handle("/admin/x", overage_token(tenant))
    assert isinstance(result, Forward) and result.rule == "admin"
    sent = headers(result)
    # Only the policy's groups, and no overage flag: the list is complete for every group a rule names.
    assert sent["x-entragate-groups"] == ADMINS and "x-entragate-groups-overage" not in sent
    assertion = jwt.decode(sent["x-entragate-assertion"], options={"verify_signature": False})
    assert assertion["groups"] == [ADMINS] and "hasgroups" not in assertion
    assert harness.audit["groups_source"] == "graph" and harness.audit["reason"] == "allowed"
    assert graph.calls[(tenant.tenant_id, tenant.user_oid)] == 1
    assert graph.batches == [3]  # the three groups the policy names, nothing else
    [request] = tenant.token_requests
    assert request == {"tid": tenant.tenant_id, "credential": "assertion", "scope": f"{graph.url}/.default"}


def test_many_requests_cost_one_graph_call(harness, tenant, graph):
    token = overage_token(tenant)
    for _ in range(20):
        assert isinstance(harness.handle("/admin/x", token), Forward)
    assert harness.audit["groups_source"] == "cache"
    other_token = overage_token(tenant)  # a new token of the same user
    assert isinstance(harness.handle("/nested/x", other_token), Answer)
    assert graph.total_calls() == 1 and tenant.token_hits() == 1


def test_not_a_member_is_refused_as_an_ordinary_denial(harness, tenant):
    result = harness.handle("/admin/x", overage_token(tenant, OTHER_USER))
    assert isinstance(result, Answer) and (result.status, result.code) == (403, "condition_not_met")
    assert harness.audit["groups_source"] == "graph" and harness.audit["oid"] == OTHER_USER


def test_membership_is_transitive(harness, tenant):
    assert isinstance(harness.handle("/nested/x", overage_token(tenant, NESTED_USER)), Forward)
    assert isinstance(harness.handle("/admin/x", overage_token(tenant, NESTED_USER)), Answer)


def test_a_deny_on_groups_is_decided_through_graph_too(harness, tenant):
    result = harness.handle("/open/x", overage_token(tenant, BLOCKED_USER))
    assert isinstance(result, Answer) and result.code == "denied_by_rule"
    assert isinstance(harness.handle("/open/x", overage_token(tenant, OTHER_USER)), Forward)


def test_without_graph_groups_overage_is_refused_as_before(tenant, graph):
    harness = Harness(tenant, graph, graph_groups=False)
    result = harness.handle("/admin/x", overage_token(tenant))
    assert isinstance(result, Answer) and (result.status, result.code) == (403, "groups_overage")
    assert graph.total_calls() == 0 and tenant.token_hits() == 0
    assert harness.audit["groups_source"] == "token"


def test_no_lookup_without_overage_or_when_no_rule_needs_groups(harness, tenant, graph):
    result = harness.handle("/admin/x", tenant.mint({"groups": [ADMINS]}))
    assert isinstance(result, Forward) and harness.audit["groups_source"] == "token"
    assert isinstance(harness.handle("/roles/x", overage_token(tenant)), Forward)
    assert "groups_source" not in harness.audit  # the route tests no groups: nothing to report
    assert graph.total_calls() == 0 and tenant.token_hits() == 0


def test_an_app_only_token_with_overage_keeps_the_overage_refusal(harness, tenant, graph):
    token = tenant.mint({**OVERAGE, "roles": ["Gateway.Invoke"]}, kind="app", omit=("groups",))
    result = harness.handle("/admin/x", token)
    assert isinstance(result, Answer) and result.code == "groups_overage" and graph.total_calls() == 0


@pytest.mark.parametrize("mode, value", [
    ("reset", 0), ("slow", 1.5), ("throttle", 7), ("unavailable", 9), ("unavailable", 0), ("error500", 0),
    ("html", 0), ("malformed", 0), ("unasked", 0),
])
def test_graph_faults_are_transient_refusals_and_never_reach_the_origin(tenant, graph, mode, value):
    harness = Harness(tenant, graph)
    graph.set_mode(mode, value)
    result = harness.handle("/admin/x", overage_token(tenant))
    assert isinstance(result, Answer)  # not a Forward: the origin is never reached
    assert (result.status, result.code) == (503, "groups_unavailable")
    retry_after = int(dict(result.headers)["retry-after"])
    assert retry_after == (int(value) if mode in ("throttle", "unavailable") and value else FAILURE_COOLDOWN_SECONDS)
    assert json.loads(result.body)["error"] == "groups_unavailable"
    assert harness.audit["reason"] == "groups_unavailable" and harness.audit["groups_source"] == "graph"
    assert harness.audit["oid"] == tenant.user_oid
    # Nothing was learnt: the next request (another user, within the cooldown) does not ask Graph.
    calls = graph.total_calls()
    graph.set_mode("ok")
    again = harness.handle("/admin/x", overage_token(tenant, OTHER_USER))
    assert again.code == "groups_unavailable" and graph.total_calls() == calls


def test_a_transient_refusal_in_grpc_and_html_terms(tenant, graph):
    harness = Harness(tenant, graph)
    graph.set_mode("error500")
    result = harness.handle("/admin/x", overage_token(tenant), content_type="application/grpc")
    sent = dict(result.headers)
    assert result.status == 200 and sent["grpc-status"] == "14" and "retry-after" in sent  # UNAVAILABLE: retry
    page = harness.handle("/admin/x", overage_token(tenant), accept="text/html")
    assert page.status == 503 and "could not be checked just now" in page.body


def test_the_token_endpoint_down_is_a_transient_refusal(tenant, graph):
    harness = Harness(tenant, graph)
    tenant.set_token_mode("error500")
    result = harness.handle("/admin/x", overage_token(tenant))
    assert (result.status, result.code) == (503, "groups_unavailable") and graph.total_calls() == 0


def test_a_tenant_without_consent_gets_its_own_refusal(tenant, graph):
    harness = Harness(tenant, graph, env={"ENTRA_TENANT_ID": "organizations",
                                          "ENTRA_ALLOWED_TENANTS": f"{tenant.tenant_id},{UNCONSENTED_TENANT}"})
    result = harness.handle("/admin/x", overage_token(tenant, tid=UNCONSENTED_TENANT))
    assert isinstance(result, Answer) and (result.status, result.code) == (403, "graph_not_consented")
    assert "retry-after" not in dict(result.headers)  # not transient: an administrator has to consent
    assert [request["tid"] for request in tenant.token_requests] == [UNCONSENTED_TENANT]  # the user's own tenant
    assert any("AADSTS7000229" in line for line in harness.logs)
    page = harness.handle("/admin/x", overage_token(tenant, tid=UNCONSENTED_TENANT), accept="text/html")
    assert "administrator" in page.body
    # The home tenant is unaffected.
    assert isinstance(harness.handle("/admin/x", overage_token(tenant)), Forward)


def test_a_tenant_that_did_not_grant_the_graph_permission_gets_the_same_refusal(tenant, graph):
    harness = Harness(tenant, graph)
    tenant.granted[tenant.tenant_id] = ("User.Read.All",)  # GroupMember.Read.All missing
    result = harness.handle("/admin/x", overage_token(tenant))
    assert (result.status, result.code) == (403, "graph_not_consented") and graph.refused == 1


def test_a_tenant_not_accepted_never_reaches_graph(tenant, graph):
    harness = Harness(tenant, graph)
    result = harness.handle("/admin/x", overage_token(tenant, tid=UNCONSENTED_TENANT))
    assert (result.status, result.code) == (401, "invalid_token")
    assert tenant.token_hits() == 0 and graph.total_calls() == 0


def test_a_client_secret_works_as_well(tenant, graph):
    harness = Harness(tenant, graph, env={"ENTRA_CLIENT_CERTIFICATE": None, "ENTRA_CLIENT_SECRET": SECRET})
    assert isinstance(harness.handle("/admin/x", overage_token(tenant)), Forward)
    assert [request["credential"] for request in tenant.token_requests] == ["secret"]


def test_a_wrong_client_secret_is_a_logged_transient_refusal(tenant, graph):
    harness = Harness(tenant, graph, env={"ENTRA_CLIENT_CERTIFICATE": None, "ENTRA_CLIENT_SECRET": "wrong"})
    result = harness.handle("/admin/x", overage_token(tenant))
    assert result.code == "groups_unavailable"
    assert any("AADSTS7000215" in line for line in harness.logs) and not any("wrong" in line for line in harness.logs)


def test_the_kv_answer_serves_a_fresh_isolate_and_a_policy_change_asks_again(tenant, graph):
    store = Store()
    Harness(tenant, graph, store=store).handle("/admin/x", overage_token(tenant))
    [key] = [key for key in store.data if key.startswith(STORE_PREFIX)]
    assert store.ttls[key] == 300 and tenant.tenant_id in key and tenant.user_oid in key
    fresh = Harness(tenant, graph, store=store)
    assert isinstance(fresh.handle("/admin/x", overage_token(tenant)), Forward)
    assert fresh.audit["groups_source"] == "cache" and graph.total_calls() == 1
    changed = POLICY + f'\n[[routes]]\nname = "extra"\npaths = ["/extra/**"]\nallow = {{ groups = ["{EXTRA_GROUP}"] }}\n'
    after_change = Harness(tenant, graph, store=store, policy=changed)
    assert isinstance(after_change.handle("/admin/x", overage_token(tenant)), Forward)
    assert after_change.audit["groups_source"] == "graph" and graph.total_calls() == 2
    assert graph.batches[-1] == 4


class SessionStub:
    """A browser session whose ID token reported overage (signin.py makes the same Identity)."""

    def __init__(self, identity):
        self._identity = identity

    async def identity(self, request):
        return self._identity


def test_a_browser_session_with_overage_is_resolved_the_same_way(harness, tenant):
    session = Identity(oid=tenant.user_oid, tid=tenant.tenant_id, sub="s", name="Ada", username="ada@x", groups=(),
                       groups_overage=True, roles=(), scopes=(), client_id=tenant.client_id, kind="user", version="2.0",
                       issuer="i", audience=tenant.client_id, expires_at=time.time() + 3600, auth_method="session")
    harness.gateway.signin = SessionStub(session)
    result = harness.handle("/portal/x", accept="text/html")
    assert isinstance(result, Forward) and headers(result)["x-entragate-auth-method"] == "session"
    assert headers(result)["x-entragate-groups"] == ADMINS and harness.audit["groups_source"] == "graph"


# -- configuration


BASE = {"ORIGIN_URL": "https://o.example", "ENTRA_TENANT_ID": "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b",
        "ENTRA_AUDIENCES": "api://a"}
CLIENT = {"ENTRA_CLIENT_ID": "6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60", "ENTRA_CLIENT_SECRET": "s"}


def config(**variables):
    return Config.from_env({**BASE, **variables}.get)


def test_graph_is_off_by_default():
    assert config().graph is None and config(**CLIENT).graph is None


def test_graph_defaults():
    settings = config(**CLIENT, GRAPH_GROUPS="true").graph
    assert (settings.url, settings.cache_seconds, settings.timeout) == ("https://graph.microsoft.com", 300, 3.0)


def test_national_cloud_and_tuning():
    settings = config(**CLIENT, GRAPH_GROUPS=True, GRAPH_URL="https://graph.microsoft.us/", GRAPH_CACHE_SECONDS=900,
                      GRAPH_TIMEOUT_MS="1500").graph
    assert (settings.url, settings.cache_seconds, settings.timeout) == ("https://graph.microsoft.us", 900, 1.5)


@pytest.mark.parametrize("variables, message", [
    ({"GRAPH_GROUPS": "true"}, "needs the gateway's own app registration"),
    ({**CLIENT, "GRAPH_GROUPS": "yes"}, "GRAPH_GROUPS must be true or false"),
    ({**CLIENT, "GRAPH_GROUPS": "true", "GRAPH_URL": "http://graph.example"}, "https URL"),
    ({**CLIENT, "GRAPH_GROUPS": "true", "GRAPH_URL": "https://graph.example/v1.0"}, "GRAPH_URL must be scheme://host\\[:port\\] with nothing after it"),
    ({**CLIENT, "GRAPH_GROUPS": "true", "GRAPH_URL": "https://graph.example?x=1"}, "GRAPH_URL"),
    ({**CLIENT, "GRAPH_GROUPS": "true", "GRAPH_CACHE_SECONDS": "59"}, "GRAPH_CACHE_SECONDS must be between 60"),
    ({**CLIENT, "GRAPH_GROUPS": "true", "GRAPH_CACHE_SECONDS": "86401"}, "GRAPH_CACHE_SECONDS must be between"),
    ({**CLIENT, "GRAPH_GROUPS": "true", "GRAPH_TIMEOUT_MS": "99"}, "GRAPH_TIMEOUT_MS must be between 100"),
    ({**CLIENT, "GRAPH_URL": "https://graph.microsoft.us"}, "GRAPH_URL is set but GRAPH_GROUPS is not true"),
    ({**CLIENT, "GRAPH_GROUPS": "false", "GRAPH_CACHE_SECONDS": "600"}, "GRAPH_CACHE_SECONDS is set but"),
])
def test_bad_graph_configuration_is_refused(variables, message):
    with pytest.raises(ConfigError, match=message):
        config(**variables)


def test_plain_http_graph_only_on_loopback():
    assert config(**CLIENT, GRAPH_GROUPS="true", GRAPH_URL="http://127.0.0.1:9003").graph.url == "http://127.0.0.1:9003"


def test_a_certificate_credential_needs_the_platform_signer(tenant, graph):
    from entragate_tools.host_io import MemoryStore

    settings = Config.from_env({**BASE, "ENTRA_CLIENT_ID": CLIENT["ENTRA_CLIENT_ID"],
                                "ENTRA_CLIENT_CERTIFICATE": CERTIFICATE_PEM, "GRAPH_GROUPS": "true"}.get)
    bearer_only = compiled(POLICY.split("[[routes]]")[0] + "[[routes]]" + POLICY.split("[[routes]]")[1])
    with pytest.raises(ConfigError, match="signer"):
        assemble(settings, Policy.from_json(bearer_only), http=UrllibHttp(), store=MemoryStore(), verifier=HostVerifier(),
                 clock=time.time, log=print, policy_groups=frozenset({ADMINS}))
