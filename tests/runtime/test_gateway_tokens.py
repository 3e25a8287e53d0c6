"""The Worker's entry under the offline runner, with real HTTP on loopback: token checks end
to end, KV-backed key cache across runner starts, and fail-closed on key outages."""

import base64
import http.client
import json
import re
from urllib.parse import urlsplit

import pytest
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))


@pytest.fixture(scope="module")
def stack():
    with Stack() as running:
        yield running


def problem(body: bytes) -> dict:
    return json.loads(body)


def test_valid_token_is_forwarded_to_the_origin_intact(stack):
    token = stack.tenant.mint()
    status, _, body = stack.request("GET", "/api/items/7?expand=all&x=%2F", token=token)
    echo = json.loads(body)
    assert status == 200
    assert echo["method"] == "GET" and echo["path"] == "/api/items/7" and echo["query"] == "expand=all&x=%2F"


@pytest.mark.parametrize("version,kind,method,path", [
    ("1.0", "user", "GET", "/api/v1"),
    ("2.0", "app", "GET", "/internal/jobs"),
    ("1.0", "app", "POST", "/internal/jobs"),
])
def test_v1_v2_user_and_app_tokens(stack, version, kind, method, path):
    token = stack.tenant.mint(version=version, kind=kind)
    status, _, body = stack.request(method, path, token=token, body=b"{}" if method == "POST" else None)
    assert status == 200, body


def test_missing_token_is_401_with_a_bare_challenge(stack):
    status, headers, body = stack.request("GET", "/api/items")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="entragate"'
    assert "error=" not in headers["WWW-Authenticate"] and len(headers.get_all("WWW-Authenticate")) == 1
    assert problem(body)["error"] == "missing_token" and problem(body)["request_id"] == headers["x-request-id"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' or '\\').
INVALID_TOKEN_CHALLENGE = re.compile(
    r'Bearer realm="entragate", error="invalid_token", error_description="([\x20\x21\x23-\x5b\x5d-\x7e]+)"')
MAX_DESCRIPTION = 100


def _decoded_strings(token: str) -> set[str]:
    """String values in the token's header and payload, where they decode."""
    found = set()
    for segment in token.split(".")[:2]:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        except ValueError:
            continue
        if isinstance(decoded, dict):
            for value in decoded.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str):
                        found.add(item)
    return found


def assert_short_description_without_the_credential(challenge: str, credential: str) -> str:
    """The challenge names the problem in a few words and repeats nothing of the credential."""
    match = INVALID_TOKEN_CHALLENGE.fullmatch(challenge)
    assert match, challenge
    description = match.group(1)
    assert 0 < len(description) < MAX_DESCRIPTION, description
    window = 8
    if len(credential) <= window:
        assert credential not in description, description
    else:
        for start in range(len(description) - window + 1):
            assert description[start:start + window] not in credential, description
    for value in _decoded_strings(credential):
        assert len(value) < 6 or value not in description, (value, description)
    return description


def invalid_tokens(tenant):
    good = tenant.mint()
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {
        "expired": tenant.mint(now=1_600_000_000),
        "not yet valid": tenant.mint(claims={"nbf": claims["iat"] + 3600}),
        "graph audience": tenant.mint(audience="00000003-0000-0000-c000-000000000000"),
        "other issuer": tenant.mint(claims={"iss": "https://sts.windows.net/" + tenant.tenant_id}),
        "other tenant": tenant.mint(tid="0a0b0c0d-1111-4222-8333-444455556666"),
        "alg none": f"{_b64(json.dumps({'alg': 'none', 'kid': tenant.signing_kid}).encode())}.{payload}.{signature}",
        "tampered": f"{header}.{_b64(json.dumps({**claims, 'roles': ['Admin']}).encode())}.{signature}",
        "string exp": tenant.mint(claims={"exp": str(claims["exp"])}),
        "jku header": tenant.mint(headers={"jku": "http://127.0.0.1:1/keys"}),
        "unknown kid": tenant.mint(headers={"kid": "no-such-key"}),
        "two segments": f"{header}.{payload}",
        "oversized": good + "A" * 17_000,
    }


@pytest.mark.parametrize("case", [
    "expired", "not yet valid", "graph audience", "other issuer", "other tenant", "alg none",
    "tampered", "string exp", "jku header", "unknown kid", "two segments", "oversized",
])
def test_each_invalid_class_is_401_and_never_echoes_the_token(stack, case):
    token = invalid_tokens(stack.tenant)[case]
    status, headers, body = stack.request("GET", "/api/items", token=token)
    assert status == 401, (case, body)
    (challenge,) = headers.get_all("WWW-Authenticate")
    assert_short_description_without_the_credential(challenge, token)
    assert token[-40:] not in body.decode() and token[-40:] not in challenge
    assert problem(body)["error"] in ("invalid_token", "malformed_credential")


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c d", "bearer"])
def test_malformed_authorization_is_401(stack, authorization):
    status, headers, body = stack.request("GET", "/api/items", headers={"Authorization": authorization})
    assert status == 401 and problem(body)["error"] == "malformed_credential"
    (challenge,) = headers.get_all("WWW-Authenticate")
    credential = authorization.partition(" ")[2].strip()
    if credential:
        assert_short_description_without_the_credential(challenge, credential)
    else:
        assert INVALID_TOKEN_CHALLENGE.fullmatch(challenge), challenge


def test_scheme_is_case_insensitive(stack):
    status, _, _ = stack.request("GET", "/api/items", headers={"Authorization": "bEaReR " + stack.tenant.mint()})
    assert status == 200


def test_two_authorization_headers_are_401(stack):
    token = stack.tenant.mint()
    url = urlsplit(stack.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("GET", "/api/items")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 401
    assert json.loads(response.read())["error"] == "malformed_credential"
    connection.close()


def test_key_set_is_cached_in_kv_and_reused_by_a_new_runner(tmp_path):
    with Stack(persist_to=tmp_path) as stack:
        assert stack.request("GET", "/api/a", token=stack.tenant.mint())[0] == 200
        assert stack.tenant.hits("jwks") == 1
        stack.restart_runner()  # a new isolate: empty memory, same KV
        stack.tenant.reset_hits()
        assert stack.request("GET", "/api/a", token=stack.tenant.mint())[0] == 200
        assert stack.tenant.hits("jwks") == 0 and stack.tenant.hits("discovery") == 0


def test_no_keys_at_all_is_503_never_allow():
    with Stack() as stack:
        stack.tenant.set_mode("error500", target="all")
        status, headers, body = stack.request("GET", "/api/a?secret=1", token=stack.tenant.mint())
        assert status == 503 and problem(body)["error"] == "keys_unavailable"
        assert problem(body)["request_id"] == headers["x-request-id"]
        assert stack.runner.logged("key refresh failed")
        # The refusal names the route that asked for a token; no identity was established.
        line = stack.runner.audit_line(headers["x-request-id"])
        assert {k: line[k] for k in ("path", "rule", "decision", "reason", "status", "oid", "token_kind")} == {
            "path": "/api/a", "rule": "api-read", "decision": "deny", "reason": "keys_unavailable",
            "status": 503, "oid": None, "token_kind": None}
        # A gRPC client is told 14 UNAVAILABLE, and the line says so.
        status, headers, body = stack.request("POST", "/shop.v1.Orders/GetOrder", token=stack.tenant.mint(),
                                              headers={"content-type": "application/grpc"}, body=b"\0\0\0\0\0")
        assert (status, body, headers["grpc-status"]) == (200, b"", "14")
        line = stack.runner.audit_line(headers["x-request-id"])
        assert (line["rule"], line["reason"], line["status"], line["grpc_status"]) == (
            "orders-grpc-read", "keys_unavailable", 200, 14)
        assert stack.origin.requests == []


def test_last_known_good_keys_keep_serving_when_the_tenant_goes_down():
    with Stack(JWKS_COOLDOWN_SECONDS="0") as stack:
        assert stack.request("GET", "/api/a", token=stack.tenant.mint())[0] == 200
        stack.tenant.set_mode("error500", target="all")
        # An unknown kid forces a refresh, which fails...
        assert stack.request("GET", "/api/a", token=stack.tenant.mint(headers={"kid": "rotated-away"}))[0] == 401
        # ...and valid tokens still pass on the last-known-good keys.
        assert stack.request("GET", "/api/a", token=stack.tenant.mint())[0] == 200
        assert stack.tenant.hits("discovery") >= 2


def test_health_loads_keys_and_caches_them_in_kv(tmp_path):
    with Stack(persist_to=tmp_path) as stack:
        status, _, body = stack.request("GET", "/.well-known/entragate/health")
        assert status == 200 and json.loads(body)["status"] == "ready"
        stack.restart_runner()
        stack.tenant.reset_hits()
        assert stack.request("GET", "/api/a", token=stack.tenant.mint())[0] == 200
        assert stack.tenant.hits("jwks") == 0


def test_health_is_503_while_no_keys_can_be_had():
    with Stack() as stack:
        stack.tenant.set_mode("error500", target="all")
        status, _, body = stack.request("GET", "/.well-known/entragate/health")
        report = json.loads(body)
        assert status == 503 and report["status"] == "unavailable"
        assert not any(issuer["loaded"] for issuer in report["issuers"])
