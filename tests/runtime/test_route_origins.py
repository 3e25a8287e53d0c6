"""Per-route origins end to end: a route's own `origin` (policies/README.md) is where its
requests go, and what the signed assertion is addressed to.

The runner serves src/entry.py through tests/runtime/workers/policy_from_var.py, with a policy
compiled here from a temporary policy directory (the origins' ports are only known now).
"""

import json
import textwrap
from urllib.parse import urlsplit

import jwt
import pytest
from entragate_assertion import AssertionVerifier
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import new_assertion_key
from entragate_mocks.echo_origin import EchoOrigin
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

PREFIX = "x-entragate-"
ISSUER = "entragate-route-test"
DEAD_ORIGIN = "http://127.0.0.1:9"


def policy_text(billing_origin: str) -> str:
    return textwrap.dedent(f"""
        [[routes]]
        name = "default-origin"
        paths = ["/api/**"]
        allow = {{ authenticated = true }}

        [[routes]]
        name = "billing"
        paths = ["/billing/**"]
        allow = {{ authenticated = true }}
        origin = "{billing_origin}/base"

        [[routes]]
        name = "billing-status"
        paths = ["/billing/status"]
        methods = ["GET"]
        public = true
        origin = "{billing_origin}"

        [[routes]]
        name = "gone"
        paths = ["/gone/**"]
        allow = {{ authenticated = true }}
        origin = "{DEAD_ORIGIN}"
    """)


@pytest.fixture(scope="module")
def billing():
    origin = EchoOrigin().start()
    yield origin
    origin.stop()


@pytest.fixture(scope="module")
def stack(billing, tmp_path_factory):
    policies = tmp_path_factory.mktemp("route-origin-policies")
    (policies / "routes.toml").write_text(policy_text(billing.url))
    compiled = compile_policies(policies)
    assert {route["name"]: route.get("origin") for route in compiled.data["routes"]}["billing"] == billing.url + "/base"
    with Stack(main="tests/runtime/workers/policy_from_var.py", TEST_POLICY_JSON=compiled.json_text,
               ASSERTION_SIGNING_KEY=new_assertion_key(), ASSERTION_ISSUER=ISSUER) as running:
        assert running.runner.ready["main"] == "tests/runtime/workers/policy_from_var.py"
        yield running


def echoed_headers(echo: dict) -> dict:
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def verifier(stack, audience):
    return AssertionVerifier(stack.url + "/.well-known/entragate/jwks.json", audience=audience, issuer=ISSUER)


def test_the_policy_under_test_is_the_one_compiled_here(stack):
    """The project's policies/ would send /admin/** to its own rule; here nothing owns it."""
    status, headers, body = stack.request("GET", "/admin/users", token=stack.tenant.mint())
    assert status == 403 and json.loads(body)["error"] == "no_route"


def test_a_route_with_its_own_origin_is_forwarded_there(stack, billing):
    before_default, before_billing = len(stack.origin.requests), len(billing.requests)
    status, headers, body = stack.request("GET", "/billing/invoices/7?page=2", token=stack.tenant.mint())
    assert status == 200, body
    assert len(stack.origin.requests) == before_default, "the default origin saw nothing"
    assert len(billing.requests) == before_billing + 1
    echo = billing.last
    assert json.loads(body) == echo  # the client got the billing origin's answer
    assert echo["path"] == "/base/billing/invoices/7" and echo["query"] == "page=2"
    seen = echoed_headers(echo)
    assert seen["host"] == [urlsplit(billing.url).netloc]
    assert seen[PREFIX + "rule"] == ["billing"] and seen[PREFIX + "user-oid"] == [stack.tenant.user_oid]
    assert seen[PREFIX + "request-id"] == [headers["x-request-id"]]

    # The assertion is addressed to the route's origin, and only to it.
    (assertion,) = seen[PREFIX + "assertion"]
    claims = verifier(stack, billing.url + "/base").verify(assertion, method="GET", path="/base/billing/invoices/7")
    assert claims["aud"] == billing.url + "/base" and claims["rule"] == "billing"
    assert claims["htu"] == billing.url + "/base/billing/invoices/7"
    with pytest.raises(jwt.InvalidAudienceError):
        verifier(stack, stack.origin.url).verify(assertion)

    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["rule"], line["decision"], line["reason"], line["status"]) == ("billing", "allow", "allowed", 200)
    assert line["path"] == "/billing/invoices/7"


def test_routes_without_an_origin_keep_the_default_one(stack, billing):
    before_billing = len(billing.requests)
    status, _, body = stack.request("GET", "/api/orders", token=stack.tenant.mint())
    assert status == 200 and len(billing.requests) == before_billing
    echo = json.loads(body)
    assert echo == stack.origin.last and echo["path"] == "/api/orders"
    seen = echoed_headers(echo)
    assert seen["host"] == [urlsplit(stack.origin.url).netloc]
    (assertion,) = seen[PREFIX + "assertion"]
    claims = verifier(stack, stack.origin.url).verify(assertion, method="GET", path="/api/orders")
    assert claims["rule"] == "default-origin"
    with pytest.raises(jwt.InvalidAudienceError):
        verifier(stack, billing.url + "/base").verify(assertion)


def test_a_public_route_with_its_own_origin(stack, billing):
    status, headers, body = stack.request("GET", "/billing/status", headers={"X-Entragate-User-Oid": "attacker"})
    assert status == 200
    echo = billing.last
    assert json.loads(body) == echo and echo["path"] == "/billing/status"
    seen = echoed_headers(echo)
    assert seen[PREFIX + "request-id"] == [headers["x-request-id"]]
    assert PREFIX + "user-oid" not in seen and PREFIX + "assertion" not in seen and "attacker" not in json.dumps(seen)
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["rule"], line["decision"], line["reason"], line["oid"]) == ("billing-status", "allow", "public", None)


def test_an_unreachable_route_origin_is_502_named_after_the_route(stack):
    status, headers, body = stack.request("GET", "/gone/x", token=stack.tenant.mint())
    problem = json.loads(body)
    assert status == 502 and problem["error"] == "origin_unreachable" and problem["request_id"] == headers["x-request-id"]
    assert "127.0.0.1:9" not in body.decode()
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["rule"], line["decision"], line["reason"], line["status"]) == ("gone", "allow", "origin_unreachable", 502)
    assert line["oid"] == stack.tenant.user_oid
    # A gRPC-Web client is told 14 UNAVAILABLE in trailers-only form; the line carries it.
    status, headers, body = stack.request("POST", "/gone/pkg.Service/Call", token=stack.tenant.mint(),
                                          headers={"content-type": "application/grpc-web+proto"}, body=b"\0\0\0\0\0")
    assert (status, body, headers["grpc-status"]) == (200, b"", "14")
    assert headers["content-type"] == "application/grpc-web+proto"
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["rule"], line["reason"], line["status"], line["grpc_status"]) == ("gone", "origin_unreachable", 200, 14)
