"""WebSocket upgrades end to end in workerd (issue #5: "WebSocket upgrades pass through when
allowed"), with a plain-socket RFC 6455 client against the echo origin: an allowed upgrade
completes with 101 and carries messages both ways, the origin sees the identity and nothing
the client forged, refusals are ordinary HTTP answers that never reach the origin, and an
origin that declines the upgrade is answered as it answered.

workerd relays WebSocket *messages*, not bytes: it makes its own handshake with the origin
(its own Sec-WebSocket-Key) and answers the client's itself, so the two connections share
messages, pings and the close, not frames."""

import base64
import hashlib
import http.client
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

PREFIX = "x-entragate-"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@pytest.fixture(scope="module")
def stack():
    with Stack() as running:
        yield running


class Upgrade:
    """One client connection: the handshake request, the HTTP answer, then frames."""

    def __init__(self, stack, path, headers=(), *, version="13", early=b""):
        url = urlsplit(stack.url)
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {url.netloc}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {self.key}", f"Sec-WebSocket-Version: {version}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        # `early` goes in the same write as the request: the runner gets it as the upgrade's head.
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + early)
        self.file = self.sock.makefile("rb")
        status_line = self.file.readline().decode("iso-8859-1")
        self.status = int(status_line.split()[1])
        self.headers = http.client.parse_headers(self.file)

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        return self.file.read()

    def body(self) -> bytes:
        """The body of an ordinary (non-101) answer, by Content-Length or chunked."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.file.readline().split(b";")[0], 16):
                chunks.append(self.file.read(size))
                self.file.readline()
            return b"".join(chunks)
        return self.file.read(int(self.headers.get("content-length", 0)))

    def send(self, opcode, payload: bytes, fin=True):
        self.sock.sendall(frame(opcode, payload, fin=fin, mask=os.urandom(4)))

    def receive(self):
        first, second = self.file.read(2)
        assert not second & 0x80, "server frames are not masked"
        length = second & 0x7F
        if length >= 126:
            length = int.from_bytes(self.file.read(2 if length == 126 else 8), "big")
        return bool(first & 0x80), first & 0x0F, self.file.read(length)

    def close(self):
        self.file.close()
        self.sock.close()


def frame(opcode, payload: bytes, *, fin=True, mask=None) -> bytes:
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask else 0
    if len(payload) < 126:
        header = bytes([first, masked | len(payload)])
    elif len(payload) < 1 << 16:
        header = bytes([first, masked | 126]) + len(payload).to_bytes(2, "big")
    else:
        header = bytes([first, masked | 127]) + len(payload).to_bytes(8, "big")
    if not mask:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def seen_headers(echo) -> dict:
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def audit_for(stack, request_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stack.runner.stdout.splitlines():
            if line.startswith("{") and '"decision"' in line and json.loads(line)["request_id"] == request_id:
                return json.loads(line)
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


SPOOFED = [("X-Entragate-User-Oid", "attacker"), ("x_entragate_roles", "Admin"), ("X-Entragate-Rule", "forged")]


def test_allowed_upgrade_completes_and_messages_round_trip(stack):
    stack.origin.clear()
    token = stack.tenant.mint()
    early = frame(TEXT, b"sent with the handshake", mask=os.urandom(4))
    client = Upgrade(stack, "/api/ws?room=7", [("Authorization", f"Bearer {token}"), *SPOOFED], early=early)
    try:
        assert client.status == 101
        assert client.headers["upgrade"].lower() == "websocket" and client.headers["connection"].lower() == "upgrade"
        expected_accept = base64.b64encode(hashlib.sha1((client.key + WEBSOCKET_GUID).encode()).digest()).decode()
        assert client.headers["sec-websocket-accept"] == expected_accept

        assert client.receive() == (True, TEXT, b"sent with the handshake")
        client.send(TEXT, "héllo ✓".encode())
        assert client.receive() == (True, TEXT, "héllo ✓".encode())
        large = os.urandom(70_000)  # a 64-bit length, many TCP segments
        client.send(BINARY, large)
        assert client.receive() == (True, BINARY, large)
        client.send(PING, b"p")
        assert client.receive() == (True, PONG, b"p")
        client.send(CLOSE, (1000).to_bytes(2, "big"))
        assert client.receive() == (True, CLOSE, (1000).to_bytes(2, "big"))
        assert client.rest() == b"", "the origin's close ends the client's connection"
    finally:
        client.close()

    (echo,) = stack.origin.requests
    assert (echo["method"], echo["path"], echo["query"]) == ("GET", "/api/ws", "room=7")
    seen = seen_headers(echo)
    assert seen["upgrade"] == ["websocket"] and len(seen["sec-websocket-key"]) == 1  # workerd's own handshake
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid]
    assert seen[PREFIX + "tenant-id"] == [stack.tenant.tenant_id]
    assert seen[PREFIX + "token-kind"] == ["user"] and seen[PREFIX + "scopes"] == ["access_as_user"]
    assert seen[PREFIX + "rule"] == ["api-read"]
    assert "authorization" not in seen, "the bearer token is not passed on"
    assert PREFIX + "roles" not in seen and "x_entragate_roles" not in seen
    assert "attacker" not in json.dumps(seen) and "forged" not in json.dumps(seen)

    line = audit_for(stack, seen[PREFIX + "request-id"][0])
    assert (line["decision"], line["reason"], line["status"]) == ("allow", "allowed", 101)
    assert (line["method"], line["path"], line["rule"], line["oid"]) == ("GET", "/api/ws", "api-read", stack.tenant.user_oid)


def test_upgrade_without_a_token_is_401_and_never_reaches_the_origin(stack):
    stack.origin.clear()
    client = Upgrade(stack, "/api/ws", [("X-Entragate-User-Oid", "attacker")], early=frame(TEXT, b"x", mask=os.urandom(4)))
    try:
        body = json.loads(client.body())
    finally:
        client.close()
    assert client.status == 401 and "json" in client.headers["content-type"]
    assert client.headers["www-authenticate"].startswith("Bearer")
    assert body["error"] == "missing_token" and body["request_id"] == client.headers["x-request-id"]
    assert stack.origin.requests == []
    line = audit_for(stack, client.headers["x-request-id"])
    assert (line["decision"], line["reason"], line["status"], line["path"]) == ("deny", "missing_token", 401, "/api/ws")


@pytest.mark.parametrize(("path", "claims", "reason"), [
    ("/admin/ws", None, "condition_not_met"),  # not in platform-admins
    ("/api/ws", {"scp": "User.Read"}, "insufficient_scope"),  # no access_as_user
])
def test_upgrade_by_an_identity_the_policy_refuses_is_403(stack, path, claims, reason):
    stack.origin.clear()
    client = Upgrade(stack, path, [("Authorization", f"Bearer {stack.tenant.mint(claims=claims)}")])
    try:
        body = json.loads(client.body())
    finally:
        client.close()
    assert client.status == 403 and body["request_id"] == client.headers["x-request-id"]
    assert stack.origin.requests == []
    line = audit_for(stack, client.headers["x-request-id"])
    assert (line["decision"], line["reason"], line["status"]) == ("deny", reason, 403)


def test_origin_declining_the_upgrade_is_answered_as_the_origin_answered():
    """The echo origin answers upgrades under /__status/<code> with that code instead of 101."""
    with Stack(origin_base_path="/__status/403") as declining:
        client = Upgrade(declining, "/api/ws", [("Authorization", f"Bearer {declining.tenant.mint()}")])
        try:
            echo = json.loads(client.body())
        finally:
            client.close()
        assert client.status == 403
        assert client.headers["x-request-id"], "an ordinary response gets the gateway's request id"
        assert seen_headers(echo)[PREFIX + "user-oid"] == [declining.tenant.user_oid]
        assert declining.origin.requests == [echo] and echo["path"] == "/__status/403/api/ws"
        line = audit_for(declining, client.headers["x-request-id"])
        assert (line["decision"], line["status"]) == ("allow", 403)


def test_a_websocket_version_the_runtime_does_not_speak_is_426_from_the_runtime(stack):
    """workerd makes its own version-13 handshake with the origin, then refuses the client's
    version 8 itself: the origin accepted a socket nobody uses, and workerd closes it."""
    stack.origin.clear()
    client = Upgrade(stack, "/api/ws", [("Authorization", f"Bearer {stack.tenant.mint()}")], version="8")
    try:
        client.body()
    finally:
        client.close()
    assert client.status == 426 and client.headers["sec-websocket-version"] == "13"
    assert [seen_headers(echo)["sec-websocket-version"] for echo in stack.origin.requests] == [["13"]]


def test_upgrade_to_an_unreachable_origin_is_502():
    with Stack(ORIGIN_URL="http://127.0.0.1:9") as down:
        client = Upgrade(down, "/api/ws", [("Authorization", f"Bearer {down.tenant.mint()}")])
        try:
            body = json.loads(client.body())
        finally:
            client.close()
        assert client.status == 502 and body["error"] == "origin_unreachable"
        assert audit_for(down, client.headers["x-request-id"])["reason"] == "origin_unreachable"
