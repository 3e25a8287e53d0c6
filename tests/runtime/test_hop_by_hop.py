"""Hop-by-hop headers in workerd (issue #13 item 8): none reaches the origin, a client's
Connection header cannot take away a header the gateway sets, a WebSocket handshake keeps its
Upgrade, and a GET body of unknown length is refused rather than dropped.

workerd's own HTTP server hands a Worker every hop-by-hop header it receives (Connection and
the headers it names, Keep-Alive, TE, Trailer, Upgrade, Proxy-*), and a GET's chunked body;
under `wrangler dev` a proxy Worker in front drops some of them before the gateway could see
them. So these requests go to tests/runtime/workers/as_served.py, which puts back what the
proxy dropped (`x-test-as-served`) and runs the real entry.py: what the origin then receives
is what the gateway forwards."""

import base64
import hashlib
import json
import os
import socket
from urllib.parse import urlsplit

import pytest
from entragate_tools.host_crypto import new_assertion_key
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

PREFIX = "x-entragate-"
AS_SERVED = "x-test-as-served"
# RFC 9110 §7.6.1 and the proxy ones; Upgrade is kept only for a WebSocket handshake.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "http2-settings"}


@pytest.fixture(scope="module")
def stack():
    with Stack(main="tests/runtime/workers/as_served.py", ASSERTION_SIGNING_KEY=new_assertion_key(),
               ASSERTION_ISSUER="entragate-test") as running:
        yield running


def as_served(set_=(), delete=()) -> tuple[str, str]:
    return AS_SERVED, json.dumps({"set": [list(pair) for pair in set_], "delete": list(delete)})


def raw(stack, method, path, headers, body=b""):
    """(status, headers, body) for one request over a raw socket; the answer read to its end."""
    url = urlsplit(stack.url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", *(f"{name}: {value}" for name, value in headers)]
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        file = sock.makefile("rb")
        status = int(file.readline().split()[1])
        answer_headers = {}
        while (line := file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        length = int(answer_headers.get("content-length", 0)) if method != "HEAD" else 0
        return status, answer_headers, file.read(length)


def received(echo: dict) -> dict:
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def test_no_hop_by_hop_header_reaches_the_origin(stack):
    """Proxy-Connection, Proxy-Authorization (a proxy's credential), Proxy-Authenticate and
    HTTP2-Settings pass workerd's fetch and wrangler's proxy alike; the rest only workerd's
    server passes. Controls beside them arrive, so the others were stripped, not lost."""
    stack.origin.clear()
    token = stack.tenant.mint()
    direct = [("Proxy-Connection", "keep-alive"), ("Proxy-Authorization", "Basic dXNlcjpzZWNyZXQ="),
              ("Proxy-Authenticate", "Basic"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]
    served = [("Connection", "keep-alive, Upgrade, HTTP2-Settings, TE"), ("Keep-Alive", "timeout=5, max=100"),
              ("TE", "trailers, deflate"), ("Trailer", "X-Checksum"), ("Upgrade", "h2c"),
              ("Transfer-Encoding", "chunked")]
    controls = [("X-Control", "kept"), ("Expect-CT", "max-age=0"), ("Sec-WebSocket-Protocol", "chat")]
    status, _, body = raw(stack, "GET", "/api/hops", [("Authorization", f"Bearer {token}"), *direct, *controls,
                                                      as_served(served)])
    assert status == 200, body[:300]
    (echo,) = stack.origin.requests
    seen = received(echo)
    assert not HOP_BY_HOP & set(seen), HOP_BY_HOP & set(seen)
    assert "dXNlcjpzZWNyZXQ=" not in json.dumps(echo)
    assert echo["body_length"] == 0  # no Transfer-Encoding: no empty chunked body made up for the GET
    for name, value in controls:
        assert seen[name.lower()] == [value]
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid] and seen[PREFIX + "rule"] == ["api-read"]


def test_a_connection_header_cannot_take_away_a_header_the_gateway_sets(stack):
    """The classic trick: `Connection: <name>` asks the next hop to drop <name>, say the
    identity or an X-Forwarded-For a proxy added. The gateway removes what the client's
    Connection names from the client's own headers, sets its own afterwards, and never passes
    the Connection header on: every identity header arrives once, with the gateway's value."""
    stack.origin.clear()
    token = stack.tenant.mint(claims={"roles": ["Reader"]})
    ours = ["user-oid", "tenant-id", "rule", "request-id", "assertion", "roles", "token-kind", "scopes"]
    named = ", ".join([PREFIX + name for name in ours] + ["X-Forwarded-For", "X-Client-Note", "Cookie"])
    served = [("Connection", named), ("X-Entragate-User-Oid", "attacker"), ("X-Client-Note", "hop"),
              ("X-Forwarded-For", "203.0.113.9"), ("Cookie", "session=hop")]
    status, headers, body = raw(stack, "GET", "/api/me", [("Authorization", f"Bearer {token}"), as_served(served)])
    assert status == 200, body[:300]
    (echo,) = stack.origin.requests
    seen = received(echo)
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid]
    assert seen[PREFIX + "tenant-id"] == [stack.tenant.tenant_id]
    assert seen[PREFIX + "rule"] == ["api-read"] and seen[PREFIX + "roles"] == ["Reader"]
    assert seen[PREFIX + "request-id"] == [headers["x-request-id"]]
    assert len(seen[PREFIX + "assertion"]) == 1
    assert all(len(seen[PREFIX + name]) == 1 for name in ours)
    for dropped in ("connection", "x-client-note", "x-forwarded-for", "cookie"):
        assert dropped not in seen, dropped
    assert "attacker" not in json.dumps(echo) and "203.0.113.9" not in json.dumps(echo)


def test_without_connection_options_the_same_headers_pass(stack):
    """Control for the test above: the headers it had nominated pass when nothing names them."""
    stack.origin.clear()
    status, _, body = raw(stack, "GET", "/api/me", [("Authorization", f"Bearer {stack.tenant.mint()}"),
                                                    ("X-Client-Note", "kept"), ("Cookie", "session=kept")])
    assert status == 200
    seen = received(stack.origin.requests[0])
    assert seen["x-client-note"] == ["kept"] and seen["cookie"] == ["session=kept"]


def test_a_websocket_handshake_keeps_its_upgrade_and_loses_the_connection_options(stack):
    stack.origin.clear()
    url = urlsplit(stack.url)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /api/ws HTTP/1.1", f"Host: {url.netloc}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"Authorization: Bearer {stack.tenant.mint()}",
             "X-Hop-Named: hop", "%s: %s" % as_served([("Connection", "Upgrade, X-Hop-Named")])]
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        file = sock.makefile("rb")
        assert int(file.readline().split()[1]) == 101
        while file.readline() not in (b"\r\n", b""):
            pass
        mask = os.urandom(4)
        payload = b"through the gateway"
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        assert file.read(2 + len(payload)) == bytes([0x81, len(payload)]) + payload
    (echo,) = stack.origin.requests
    seen = received(echo)
    assert seen["upgrade"] == ["websocket"] and "x-hop-named" not in seen
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_or_head_body_of_unknown_length_is_refused_not_dropped(stack, method):
    """workerd's server hands a Worker a chunked GET body (no Content-Length); the fetch API
    would send that GET to the origin without it. The gateway answers 411 Length Required
    instead: the body is never silently lost, and nothing reaches the origin."""
    stack.origin.clear()
    token = stack.tenant.mint()
    served = as_served([("Transfer-Encoding", "chunked")], delete=["content-length"])
    status, headers, body = raw(stack, method, "/api/search", [("Authorization", f"Bearer {token}"),
                                                              ("Content-Length", "5"), served], b"hello")
    assert status == 411
    assert headers["cache-control"] == "no-store"
    if method == "GET":
        answer = json.loads(body)
        assert answer["error"] == "length_required" and answer["request_id"] == headers["x-request-id"]
    assert stack.origin.requests == []
    line = stack.runner.audit_line(headers["x-request-id"])
    assert (line["decision"], line["reason"], line["status"], line["rule"], line["oid"]) == \
        ("deny", "length_required", 411, "api-read", stack.tenant.user_oid)


def test_the_same_get_body_with_its_length_is_forwarded(stack):
    """Control for the test above: the request as sent, with its Content-Length."""
    stack.origin.clear()
    status, _, body = raw(stack, "GET", "/api/search", [("Authorization", f"Bearer {stack.tenant.mint()}"),
                                                        ("Content-Length", "5")], b"hello")
    assert status == 200
    (echo,) = stack.origin.requests
    assert echo["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
