"""Groups overage resolved through Microsoft Graph, in workerd (issue #15): the Worker (src/entry.py,
through tests/runtime/workers/policy_from_var.py with a policy compiled here) asks the mock Graph
(tools/entragate_mocks/mock_graph.py) as its own app, with an app token from the mock tenant's
client-credentials endpoint for which it signs a certificate assertion with WebCrypto.

Multi-tenant, so each fault gets a tenant of its own (a tenant's lookups pause after a failure):
one stack, started three times (a fresh isolate on the same KV, then a changed policy).
"""

import json
import textwrap
import threading
import time

import pytest
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import new_client_certificate
from entragate_mocks.mock_graph import GraphTenant, MockGraph
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

ADMINS = "11111111-1111-4111-8111-111111111111"
EXTRA = "77777777-7777-4777-8777-777777777777"
OTHER_USER = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
BURST_USER = "2b3c4d5e-6f70-4a8b-9cad-1e2f3a4b5c6d"
# One tenant per fault: a failure pauses that tenant's lookups (graph.FAILURE_COOLDOWN_SECONDS).
DOWN, SLOW, THROTTLED, GARBAGE = (f"d{n}d{n}d{n}d{n}-0000-4000-8000-00000000000{n}" for n in range(4))
UNCONSENTED = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
NOT_ALLOWED = "9f9f9f9f-0000-4000-8000-000000000000"
GRAPH_TIMEOUT_MS = 1000
THROTTLE_SECONDS = 30
OVERAGE = {"_claim_names": {"groups": "src1"},
           "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/x/users/y/getMemberObjects"}}}
BURST = 12
# More groups than one checkMemberGroups call takes (20): the lookup makes two calls at once.
MANY = tuple(f"{n:08x}-4444-4444-8444-444444444444" for n in range(24))


def policy(*extra_routes: str) -> str:
    return textwrap.dedent(f"""
        [groups]
        admins = "{ADMINS}"

        [[routes]]
        name = "admin"
        paths = ["/admin/**"]
        allow = {{ groups = ["admins"] }}

        [[routes]]
        name = "many"
        paths = ["/many/**"]
        allow = {{ groups = {json.dumps(list(MANY))} }}
    """) + "".join(extra_routes)


CHANGED_POLICY = policy(textwrap.dedent(f"""
    [[routes]]
    name = "extra"
    paths = ["/extra/**"]
    allow = {{ groups = ["{EXTRA}"] }}
"""))


def compiled(text: str, directory) -> str:
    (directory / "routes.toml").write_text(text)
    return compile_policies(directory).json_text


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    certificate_pem, certificate_only = new_client_certificate()
    tenant = GraphTenant(client_certificate_pem=certificate_only)
    graph = MockGraph(tenant).start()
    tenant.graph_resource = graph.url
    home = tenant.tenant_id
    tenant.consented = {home, DOWN, SLOW, THROTTLED, GARBAGE}
    for tid in (home, DOWN, SLOW, THROTTLED, GARBAGE, UNCONSENTED):
        graph.add_user(tid, tenant.user_oid, [ADMINS, "99999999-9999-4999-8999-999999999999"])
        graph.add_user(tid, BURST_USER, [ADMINS])
        graph.add_user(tid, OTHER_USER, [])
    stack = Stack(
        tenant=tenant, main="tests/runtime/workers/policy_from_var.py",
        TEST_POLICY_JSON=compiled(policy(), tmp_path_factory.mktemp("graph-policy")),
        ENTRA_TENANT_ID="organizations", ENTRA_ALLOWED_TENANTS=",".join((home, DOWN, SLOW, THROTTLED, GARBAGE, UNCONSENTED)),
        ENTRA_CLIENT_ID=tenant.client_id,
        # One line: --var carries no newlines, and the certificate variable reads "\n" as one.
        ENTRA_CLIENT_CERTIFICATE=certificate_pem.replace("\n", "\\n"),
        GRAPH_GROUPS="true", GRAPH_URL=graph.url, GRAPH_TIMEOUT_MS=str(GRAPH_TIMEOUT_MS),
    )
    try:
        yield stack, tenant, graph, tmp_path_factory
    finally:
        stack.stop()
        graph.stop()


def overage_token(tenant, oid=None, tid=None):
    return tenant.mint({**OVERAGE, **({"oid": oid} if oid else {})}, omit=("groups",), tid=tid)


def forwarded(stack) -> dict:
    return {name.lower(): value for name, value in stack.origin.last["headers"]}


def test_an_overage_member_is_allowed_with_one_graph_call_for_many_requests(setup):
    stack, tenant, graph, _ = setup
    token = overage_token(tenant, BURST_USER)
    results = []

    def call():
        results.append(stack.request("GET", "/admin/burst", token=token)[0])

    threads = [threading.Thread(target=call) for _ in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(BURST):
        call()
    assert results == [200] * (2 * BURST)
    # Concurrent cold requests shared one lookup (a JS-promise flight: workerd wakes each waiter in
    # its own request), and every later one came from memory.
    assert graph.calls[(tenant.tenant_id, BURST_USER)] == 2  # one lookup: the policy's 25 groups in two calls
    assert tenant.token_hits(tenant.tenant_id) == 1
    assert [request["credential"] for request in tenant.token_requests] == ["assertion"]  # signed with WebCrypto
    sent = forwarded(stack)
    assert sent["x-entragate-groups"] == ADMINS and "x-entragate-groups-overage" not in sent
    sources = [line.get("groups_source") for line in stack.runner.audit_lines() if line.get("oid") == BURST_USER]
    assert sources.count("graph") >= 1 and sources.count("cache") >= BURST and set(sources) <= {"graph", "cache"}


def test_the_users_groups_reach_the_origin_and_the_audit_line_says_graph(setup):
    stack, tenant, graph, _ = setup
    status, headers, _ = stack.request("GET", "/admin/x", token=overage_token(tenant))
    assert status == 200 and forwarded(stack)["x-entragate-groups"] == ADMINS  # the other group is never asked about
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["decision"], line["groups_source"], line["oid"]) == ("allow", "graph", tenant.user_oid)
    assert sorted(graph.batches[-2:]) == [5, 20]  # the policy's 25 groups, in two calls


def test_not_a_member_is_refused_and_the_origin_never_reached(setup):
    stack, tenant, _, _ = setup
    stack.origin.clear()
    status, headers, body = stack.request("GET", "/admin/x", token=overage_token(tenant, OTHER_USER))
    assert status == 403 and json.loads(body)["error"] == "condition_not_met"
    assert stack.origin.requests == []
    assert stack.runner.audit_line(headers["x-request-id"])["groups_source"] == "graph"


@pytest.mark.parametrize("tid, mode, value, retry_after", [
    (DOWN, "reset", 0, 5),
    (SLOW, "slow", 3, 5),
    (THROTTLED, "throttle", THROTTLE_SECONDS, THROTTLE_SECONDS),
    (GARBAGE, "html", 0, 5),
])
def test_graph_faults_are_transient_refusals_and_the_origin_is_never_reached(setup, tid, mode, value, retry_after):
    stack, tenant, graph, _ = setup
    graph.set_mode(mode, value)
    stack.origin.clear()
    try:
        started = time.monotonic()
        status, headers, body = stack.request("GET", "/admin/x", token=overage_token(tenant, tid=tid))
        elapsed = time.monotonic() - started
        assert status == 503 and json.loads(body)["error"] == "groups_unavailable"
        assert int(headers["Retry-After"]) == retry_after
        assert elapsed < GRAPH_TIMEOUT_MS / 1000 + 1.5  # a slow Graph is cut off by GRAPH_TIMEOUT_MS
        calls = graph.total_calls()
        graph.set_mode("ok")
        # Within the pause another user of that tenant is refused the same way, without a call.
        status, headers, _ = stack.request("GET", "/admin/x", token=overage_token(tenant, OTHER_USER, tid=tid))
        assert status == 503 and int(headers["Retry-After"]) <= retry_after and graph.total_calls() == calls
        assert stack.origin.requests == []
        line = stack.runner.audit_line(headers["x-request-id"])
        assert (line["decision"], line["reason"], line["status"]) == ("deny", "groups_unavailable", 503)
    finally:
        graph.set_mode("ok")


def test_a_tenant_that_has_not_consented_gets_its_own_refusal(setup):
    stack, tenant, graph, _ = setup
    status, headers, body = stack.request("GET", "/admin/x", token=overage_token(tenant, tid=UNCONSENTED))
    assert status == 403 and json.loads(body)["error"] == "graph_not_consented"
    assert "Retry-After" not in headers
    assert tenant.token_hits(UNCONSENTED) == 1 and graph.calls[(UNCONSENTED, tenant.user_oid)] == 0
    assert stack.runner.logged("AADSTS7000229")


def test_a_tenant_not_on_the_allow_list_is_refused_before_any_lookup(setup):
    stack, tenant, graph, _ = setup
    status, _, body = stack.request("GET", "/admin/x", token=overage_token(tenant, tid=NOT_ALLOWED))
    assert status == 401 and json.loads(body)["error"] == "invalid_token"
    assert tenant.token_hits(NOT_ALLOWED) == 0 and graph.calls[(NOT_ALLOWED, tenant.user_oid)] == 0


def test_a_fresh_isolate_uses_the_kv_answer_then_a_policy_change_asks_again(setup):
    stack, tenant, graph, tmp = setup
    token = overage_token(tenant)
    assert stack.request("GET", "/admin/x", token=token)[0] == 200  # known (from an earlier test, or now)
    calls = graph.calls[(tenant.tenant_id, tenant.user_oid)]
    assert calls == 2  # one lookup: two calls of at most 20 groups
    stack.restart_runner()  # a new isolate: empty memory, the same KV
    status, headers, _ = stack.request("GET", "/admin/x", token=token)
    assert status == 200 and graph.calls[(tenant.tenant_id, tenant.user_oid)] == calls
    assert stack.runner.audit_line(headers["x-request-id"])["groups_source"] == "cache"
    stack.variables["TEST_POLICY_JSON"] = compiled(CHANGED_POLICY, tmp.mktemp("graph-policy-changed"))
    stack.restart_runner()  # the policy names another group: the stored answer is to another question
    status, headers, _ = stack.request("GET", "/admin/x", token=token)
    assert status == 200 and graph.calls[(tenant.tenant_id, tenant.user_oid)] == calls + 2
    assert sorted(graph.batches[-2:]) == [6, 20]  # one group more: another question
    line = stack.runner.audit_line(headers["x-request-id"])
    assert line["groups_source"] == "graph"
    assert stack.request("GET", "/extra/x", token=token)[0] == 403  # not in the new group: Graph said so
    assert graph.calls[(tenant.tenant_id, tenant.user_oid)] == calls + 2
