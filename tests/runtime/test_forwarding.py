"""Forwarding end to end under the offline runner, against the echo origin: identity headers,
spoof stripping, body integrity, the signed assertion, protocol-aware denials, origin
failures, health, and the audit log."""

import hashlib
import http.client
import json
import os
import re
import time
from urllib.parse import unquote, urlsplit

import jwt
import pytest
from entragate_assertion import AssertionVerifier
from entragate_tools.host_crypto import new_assertion_key
from entragate_mocks.mock_entra import DEFAULT_GROUPS
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

API_WRITERS = "22222222-2222-4222-8222-222222222222"  # alias api-writers in examples/policies/gateway.toml
PREFIX = "x-entragate-"
# Every identity header the gateway itself may send (src/entragate/upstream.py).
OUR_HEADERS = {PREFIX + name for name in (
    "user-oid", "tenant-id", "subject", "name", "username", "client-id", "token-kind", "auth-method", "groups",
    "groups-overage", "roles", "scopes", "rule", "request-id", "assertion",
)}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def stack():
    with Stack(ASSERTION_SIGNING_KEY=new_assertion_key(), ASSERTION_ISSUER="entragate-test") as running:
        yield running


def echoed_headers(body: bytes) -> dict:
    echo = json.loads(body)
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def raw_request(stack, method, path, headers, body=None):
    """http.client keeps header names and duplicates exactly as given (a Host among them
    replaces the one http.client would add)."""
    url = urlsplit(stack.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    own_host = any(name.lower() == "host" for name, _ in headers)
    connection.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
    for name, value in headers:
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    result = response.status, response.headers, response.read()
    connection.close()
    return result


def audit_lines(stack):
    return stack.runner.audit_lines()


def audit_for(stack, request_id, timeout=5.0):
    """The one audit line for the request (none, or two, fails)."""
    return stack.runner.audit_line(request_id, timeout)


def who(tenant, kind):
    """The identity fields of an audit line for a token of `kind` minted by `tenant`."""
    if kind is None:
        return {"oid": None, "tid": None, "client_id": None, "token_kind": None}
    oid = tenant.user_oid if kind == "user" else tenant.service_principal_oid
    return {"oid": oid, "tid": tenant.tenant_id, "client_id": tenant.client_app_id, "token_kind": kind}


def assert_audited(stack, request_id, *, path, rule, decision, reason, status, kind, method="GET", **extra):
    line = audit_for(stack, request_id)
    expected = {"request_id": request_id, "method": method, "host": "127.0.0.1", "path": path, "rule": rule,
                "decision": decision, "reason": reason, "status": status, **who(stack.tenant, kind), **extra}
    assert {name: line.get(name, "<missing>") for name in expected} == expected
    assert line["latency_ms"] >= 0 and line["time"].endswith("Z")
    if "grpc_status" not in extra:
        assert "grpc_status" not in line
    return line


def test_identity_headers_reach_the_origin(stack):
    tenant = stack.tenant
    groups = [API_WRITERS, *DEFAULT_GROUPS]
    token = tenant.mint(claims={"groups": groups, "roles": ["Reader", "Ops,Team"], "name": "José Ñúñez"})
    status, headers, body = stack.request("GET", "/api/me", token=token)
    assert status == 200
    seen = echoed_headers(body)
    assert seen[PREFIX + "user-oid"] == [tenant.user_oid]
    assert seen[PREFIX + "tenant-id"] == [tenant.tenant_id]
    assert seen[PREFIX + "client-id"] == [tenant.client_app_id]
    assert seen[PREFIX + "token-kind"] == ["user"]
    assert seen[PREFIX + "username"] == ["ada@contoso.onmicrosoft.com"]
    assert unquote(seen[PREFIX + "name"][0]) == "José Ñúñez"
    assert seen[PREFIX + "scopes"] == ["access_as_user"]
    assert [unquote(r) for r in seen[PREFIX + "roles"][0].split(",")] == ["Reader", "Ops,Team"]
    # Only groups the policy names are forwarded.
    assert seen[PREFIX + "groups"] == [API_WRITERS]
    assert seen[PREFIX + "rule"] == ["api-read"]
    assert UUID.match(headers["x-request-id"] or "")
    assert seen[PREFIX + "request-id"] == [headers["x-request-id"]]
    assert "authorization" not in seen, "the bearer token is not passed on by default"


def test_client_sent_identity_headers_are_stripped_in_every_spelling(stack):
    token = stack.tenant.mint()
    spoofed = [
        ("X-Entragate-User-Oid", "attacker"),
        ("x_entragate_user_oid", "attacker"),
        ("X_ENTRAGATE_ROLES", "Admin"),
        ("x-entragate-groups", "11111111-1111-4111-8111-111111111111"),
        ("X-Entragate-Assertion", "forged"),
        ("X-Forwarded-User", "attacker"),
        ("X-Auth-Request-Email", "attacker@example.com"),
        ("X-MS-CLIENT-PRINCIPAL-NAME", "attacker"),
        ("Remote-User", "attacker"),
        # Any run of non-alphanumerics is a separator (lighttpd's CGI maps each to "_").
        ("X-Entragate.User-Oid", "attacker-dot"),
        ("X~Entragate~Groups", "attacker-tilde"),
        ("X-Entragate", "attacker-bare-prefix"),
        ("X--Entragate--Name", "attacker-double-dash"),
        # Other gateways' identity headers, by family (upstream.LOOKALIKE_IDENTITY_FAMILIES).
        ("Cf-Access-Jwt-Assertion", "attacker-cf"),
        ("X_Goog_Authenticated_User_Email", "attacker-iap"),
        ("X-Amzn-Oidc-Identity", "attacker-alb"),
        ("X-Pomerium-Claim-Email", "attacker-pomerium"),
        ("Tailscale-User-Login", "attacker-tailscale"),
        ("X.MS.TOKEN.AAD.ACCESS.TOKEN", "attacker-easyauth"),
    ]
    # Controls: the same odd spellings outside the prefix do reach the origin, so the ones
    # above were stripped by the gateway, not dropped on the way.
    controls = [("X.Note-Dot", "control-dot"), ("X~Note~Tilde", "control-tilde"), ("X--Note--Dash", "control-dash"),
                ("X-Goog-Api-Key", "control-goog"), ("X-Amzn-Trace-Id", "control-amzn")]
    status, headers, body = raw_request(stack, "GET", "/api/me",
                                        [("Authorization", f"Bearer {token}"), *spoofed, *controls])
    assert status == 200
    seen = echoed_headers(body)
    for name, value in controls:
        assert seen.get(name.lower()) == [value], name
    # Ours arrived, with the gateway's values...
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid]
    assert seen[PREFIX + "tenant-id"] == [stack.tenant.tenant_id]
    assert seen[PREFIX + "rule"] == ["api-read"] and seen[PREFIX + "token-kind"] == ["user"]
    assert seen[PREFIX + "request-id"] == [headers["x-request-id"]]
    assert len(seen[PREFIX + "assertion"]) == 1
    # ...and nothing the client sent under any spelling of the prefix did.
    assert "attacker" not in json.dumps(seen) and "forged" not in json.dumps(seen)
    assert PREFIX + "roles" not in seen and PREFIX + "groups" not in seen
    for name, _ in spoofed:
        assert name.lower() not in seen or name.lower() in OUR_HEADERS, name
    prefixed = {name for name in seen if re.sub(r"[^a-z0-9]+", "-", name).startswith("x-entragate")}
    assert prefixed <= OUR_HEADERS, prefixed - OUR_HEADERS
    assert all(len(seen[name]) == 1 for name in prefixed)


def test_the_origin_is_addressed_by_its_own_host_never_the_clients(stack):
    token = stack.tenant.mint()
    status, _, body = raw_request(stack, "GET", "/api/host-check", [("Host", "client-chosen.example:8443"),
                                                                      ("Authorization", f"Bearer {token}")])
    assert status == 200
    seen = echoed_headers(body)
    assert seen["host"] == [urlsplit(stack.origin.url).netloc]
    # The gateway did see (and decide on) the client's Host.
    assert audit_for(stack, seen[PREFIX + "request-id"][0])["host"] == "client-chosen.example"
    assert "client-chosen" not in json.dumps(seen)


def test_spoofed_headers_are_stripped_on_public_routes_too(stack):
    status, _, body = raw_request(stack, "GET", "/healthz", [("X-Entragate-User-Oid", "attacker")])
    assert status == 200
    assert "attacker" not in body.decode()


def test_ten_megabyte_upload_arrives_byte_identical(stack):
    payload = os.urandom(10 * 1024 * 1024)
    token = stack.tenant.mint(claims={"groups": [API_WRITERS]})
    status, _, body = stack.request("PUT", "/api/blobs/1", token=token, body=payload,
                                    headers={"content-type": "application/octet-stream"}, timeout=120)
    echo = json.loads(body)
    assert status == 200
    assert echo["method"] == "PUT" and echo["body_length"] == len(payload)
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_subrequests_bypass_cloudflares_cache(stack):
    """platform_io.forward passes `cache: "no-store"`: workerd accepts it (a value it did not
    know would be a TypeError, answered 500) and marks the subrequest to neither read nor fill
    the cache (its cf options: cacheLevel bypass, cacheTtl -1). What the origin sees of it:
    `Cache-Control: no-cache` and `Pragma: no-cache` when the client sent neither; a client's
    own pass unchanged."""
    token = stack.tenant.mint()
    status, _, body = raw_request(stack, "GET", "/api/cache/none", [("Authorization", f"Bearer {token}")])
    assert status == 200
    seen = echoed_headers(body)
    assert seen["cache-control"] == ["no-cache"] and seen["pragma"] == ["no-cache"]
    own = [("Cache-Control", "max-age=60, stale-if-error=30"), ("Pragma", "x-custom")]
    status, _, body = raw_request(stack, "GET", "/api/cache/own", [("Authorization", f"Bearer {token}"), *own])
    assert status == 200
    seen = echoed_headers(body)
    assert seen["cache-control"] == ["max-age=60, stale-if-error=30"] and seen["pragma"] == ["x-custom"]


def test_method_path_and_query_are_forwarded_unchanged(stack):
    token = stack.tenant.mint(claims={"groups": [API_WRITERS]})
    status, _, body = raw_request(stack, "PATCH", "/api/a%20b/%C3%A9?q=%2F..%2F&x=1&x=2", [("Authorization", f"Bearer {token}")], b"{}")
    echo = json.loads(body)
    assert status == 200
    assert echo["method"] == "PATCH" and echo["path"] == "/api/a%20b/%C3%A9" and echo["query"] == "q=%2F..%2F&x=1&x=2"


def test_signed_assertion_verifies_with_the_origin_helper(stack):
    status, _, body = stack.request("GET", "/api/orders/9?page=2", token=stack.tenant.mint())
    assert status == 200
    seen = echoed_headers(body)
    (assertion,) = seen[PREFIX + "assertion"]
    verifier = AssertionVerifier(stack.url + "/.well-known/entragate/jwks.json", audience=stack.origin.url, issuer="entragate-test")
    claims = verifier.verify(assertion, method="GET", path="/api/orders/9")
    assert claims["oid"] == stack.tenant.user_oid and claims["tid"] == stack.tenant.tenant_id
    assert claims["rule"] == "api-read" and claims["exp"] - claims["iat"] == 60
    assert claims["jti"] == seen[PREFIX + "request-id"][0]

    header, payload, signature = assertion.split(".")
    forged_claims = jwt.utils.base64url_encode(json.dumps({**claims, "oid": "someone-else"}).encode()).decode()
    for tampered in (f"{header}.{forged_claims}.{signature}", f"{header}.{payload}.{signature[:-4]}AAAA"):
        with pytest.raises(jwt.InvalidTokenError):
            verifier.verify(tampered)
    with pytest.raises(jwt.InvalidTokenError):
        verifier.verify(assertion, path="/api/admin")
    with pytest.raises(jwt.InvalidTokenError):
        verifier.verify(assertion, method="DELETE")
    with pytest.raises(jwt.InvalidTokenError):
        AssertionVerifier(stack.url + "/.well-known/entragate/jwks.json", audience="https://other.example", issuer="entragate-test").verify(assertion)


def test_grpc_methods_are_routed_and_refused_in_grpc_terms(stack):
    grpc = {"content-type": "application/grpc+proto", "te": "trailers"}
    frame = b"\0\0\0\0\0"  # an empty length-prefixed message
    user = stack.tenant.mint()
    refusals = [
        # no token on a route that needs one: 16 UNAUTHENTICATED, named after the route
        ("/shop.v1.Orders/GetOrder", None, "16", "missing_token", "orders-grpc-read", None),
        # a user token where the route wants the operations app: 7 PERMISSION_DENIED
        ("/shop.v1.Orders/CancelOrder", user, "7", "condition_not_met", "orders-grpc-ops", "user"),
    ]
    before = len(stack.origin.requests)
    for path, token, grpc_status, reason, rule, kind in refusals:
        status, headers, body = stack.request("POST", path, headers=grpc, body=frame, token=token)
        request_id = headers["x-request-id"]
        assert status == 200 and body == b"", (path, status)  # trailers-only
        assert headers["content-type"] == "application/grpc"
        assert headers["grpc-status"] == grpc_status
        message = unquote(headers["grpc-message"])
        assert reason in message and request_id in message, message
        assert_audited(stack, request_id, method="POST", path=path, rule=rule, decision="deny", reason=reason,
                       status=200, kind=kind, grpc_status=int(grpc_status))
    assert len(stack.origin.requests) == before, "a refused call never reaches the origin"

    # Allowed, but native gRPC cannot pass through a Worker (its status travels in trailers):
    # 12 UNIMPLEMENTED, nothing forwarded (tests/runtime/test_grpc.py has the evidence).
    status, headers, body = stack.request("POST", "/shop.v1.Orders/GetOrder", headers=grpc, body=frame, token=user)
    assert (status, body, headers["grpc-status"]) == (200, b"", "12")
    assert "gRPC-Web or Connect" in unquote(headers["grpc-message"])
    assert_audited(stack, headers["x-request-id"], method="POST", path="/shop.v1.Orders/GetOrder",
                   rule="orders-grpc-read", decision="deny", reason="grpc_unsupported", status=200, kind="user",
                   grpc_status=12)
    assert len(stack.origin.requests) == before

    # gRPC-Web carries its status in the body: forwarded, body intact, identity added.
    status, headers, body = stack.request("POST", "/shop.v1.Orders/GetOrder", body=frame, token=user,
                                          headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"})
    echo = json.loads(body)
    assert status == 200 and echo["path"] == "/shop.v1.Orders/GetOrder" and echo["body_length"] == 5
    assert echoed_headers(body)[PREFIX + "rule"] == ["orders-grpc-read"]
    assert_audited(stack, headers["x-request-id"], method="POST", path="/shop.v1.Orders/GetOrder",
                   rule="orders-grpc-read", decision="allow", reason="allowed", status=200, kind="user")


def test_browsers_get_a_readable_page(stack):
    status, headers, body = stack.request("GET", "/api/x", headers={"accept": "text/html,application/xhtml+xml"})
    page = body.decode()
    assert status == 401 and headers["content-type"].startswith("text/html")
    assert "A bearer token is required." in page and headers["x-request-id"] in page


def test_insufficient_scope_is_403_with_the_rfc6750_error(stack):
    token = stack.tenant.mint(claims={"scp": "User.Read"})
    status, headers, body = stack.request("GET", "/api/x", token=token)
    assert status == 403 and json.loads(body)["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in headers["www-authenticate"]


def test_health_reports_readiness_without_secrets(stack):
    status, _, body = stack.request("GET", "/.well-known/entragate/health")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ready" and report["assertion"] == "enabled"
    assert report["policy_version"] and {i["version"] for i in report["issuers"]} == {"1.0", "2.0"}
    assert all(i["loaded"] and i["keys"] >= 1 and i["age_seconds"] >= 0 for i in report["issuers"])
    assert '"d"' not in body.decode()


def test_jwks_publishes_only_the_public_key(stack):
    status, _, body = stack.request("GET", "/.well-known/entragate/jwks.json")
    (key,) = json.loads(body)["keys"]
    assert status == 200 and key["kty"] == "EC" and key["alg"] == "ES256" and "d" not in key


def test_every_decision_leaves_one_audit_line_without_token_material(stack):
    token = stack.tenant.mint()
    app = stack.tenant.mint(kind="app")
    cases = [
        # method, path, bearer, status, decision, reason, rule, token kind in the line
        ("GET", "/api/audit-allow", token, 200, "allow", "allowed", "api-read", "user"),
        ("GET", "/healthz", None, 200, "allow", "public", "healthz", None),
        ("GET", "/api/audit-deny", None, 401, "deny", "missing_token", "api-read", None),
        ("GET", "/api/x", token + "x", 401, "deny", "invalid_token", "api-read", None),
        ("GET", "/admin/audit", token, 403, "deny", "condition_not_met", "admin", "user"),
        ("GET", "/api/audit-app", app, 403, "deny", "insufficient_scope", "api-read", "app"),
        ("GET", "/shop.v1.Orders/GetOrder", token, 403, "deny", "method_not_allowed", "orders-grpc-read", None),
        ("GET", "/nowhere", token, 403, "deny", "no_route", None, None),
    ]
    for method, path, bearer, status, decision, reason, rule, kind in cases:
        got_status, headers, body = stack.request(method, path + "?secret=1", token=bearer)
        assert got_status == status, (path, got_status, body)
        request_id = headers["x-request-id"]
        assert UUID.match(request_id or "")
        if decision == "deny":
            assert json.loads(body)["request_id"] == request_id
        assert_audited(stack, request_id, method=method, path=path, rule=rule, decision=decision,
                       reason=reason, status=status, kind=kind)
    signature = token.split(".")[2]
    for line in audit_lines(stack):
        text = json.dumps(line)
        assert "eyJ" not in text and signature[:20] not in text and "secret" not in text


def test_origin_down_is_502_and_slow_origin_is_504():
    """Origin failures: the route allowed the request, so the line is an allow with the
    route and identity, and the reason and status the client got."""
    with Stack(ORIGIN_URL="http://127.0.0.1:9") as down:
        status, headers, body = down.request("GET", "/api/x?secret=1", token=down.tenant.mint())
        assert status == 502 and json.loads(body)["error"] == "origin_unreachable"
        assert json.loads(body)["request_id"] == headers["x-request-id"]
        assert "127.0.0.1:9" not in body.decode()
        assert_audited(down, headers["x-request-id"], path="/api/x", rule="api-read", decision="allow",
                       reason="origin_unreachable", status=502, kind="user")
    with Stack(ORIGIN_TIMEOUT_MS="500") as slow:
        slow.variables["ORIGIN_URL"] = slow.origin.url + "/__slow/3"
        slow.restart_runner()
        started = time.monotonic()
        status, headers, body = slow.request("GET", "/api/x?secret=1", token=slow.tenant.mint())
        assert status == 504 and json.loads(body)["error"] == "origin_timeout"
        assert time.monotonic() - started < 2.5
        request_id = headers["x-request-id"]
        assert UUID.match(request_id or "") and json.loads(body)["request_id"] == request_id
        assert_audited(slow, request_id, path="/api/x", rule="api-read", decision="allow",
                       reason="origin_timeout", status=504, kind="user")


def test_denials_are_always_logged_and_allows_can_be_sampled_out():
    with Stack(AUDIT_ALLOW_SAMPLE_RATE="0") as quiet:
        _, allowed, _ = quiet.request("GET", "/api/x", token=quiet.tenant.mint())
        _, denied, _ = quiet.request("GET", "/api/x")
        assert audit_for(quiet, denied["x-request-id"])["decision"] == "deny"
        assert all(line["request_id"] != allowed["x-request-id"] for line in audit_lines(quiet))
