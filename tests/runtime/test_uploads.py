"""Request bodies end to end in workerd, byte for byte (issue #13 item 8): chunked uploads
(many chunks, odd sizes, chunk extensions, trailers), large uploads with Content-Length and
chunked, every byte value, empty bodies, each method that carries a body, GET/HEAD bodies,
`Expect: 100-continue`, and slow uploads against ORIGIN_TIMEOUT_MS. The echo origin hashes
what it receives (`body_sha256`, `body_length`) and reports the framing it got.

The client is a raw socket, so the framing is exactly the test's. Under `wrangler dev` the
request passes wrangler's proxy Worker first (its own fetch, see runner/dev.py); what the
gateway then forwards is what reaches the origin."""

import hashlib
import http.client
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from entragate_mocks.stack import Stack, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

API_WRITERS = "22222222-2222-4222-8222-222222222222"  # alias api-writers in examples/policies/gateway.toml
# Short, so that a slow upload outlasts it several times over; long enough for a loaded machine
# to answer an ordinary request well within it.
ORIGIN_TIMEOUT_MS = 3000
MB = 1024 * 1024
EVERY_BYTE = bytes(range(256)) * 1024  # 256 KiB: each value, at every offset modulo 256


@pytest.fixture(scope="module")
def stack():
    with Stack(ORIGIN_TIMEOUT_MS=str(ORIGIN_TIMEOUT_MS)) as running:
        yield running


@pytest.fixture(scope="module")
def writer(stack):
    """A bearer token of the api-writers group: POST/PUT/PATCH/DELETE on /api/** (api-write)."""
    return stack.tenant.mint(claims={"groups": [API_WRITERS]})


def chunked(pieces, extensions=None) -> bytes:
    """The chunked encoding of `pieces`, with an extension on each chunk line if given."""
    lines = []
    for index, piece in enumerate(pieces):
        extension = extensions[index % len(extensions)] if extensions else ""
        lines.append(f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n")
    return b"".join(lines)


class Exchange:
    """One request over a raw socket: the head is sent at once, the body as the test says."""

    def __init__(self, stack, method, path, headers, token=None):
        url = urlsplit(stack.url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=120)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_slowly(self, pieces, pause: float, tail: bytes = b""):
        """Each piece after `pause` seconds, from a thread, so the answer can be read meanwhile
        (a gateway that gives up closes the connection: the rest is then not sent)."""

        def run():
            try:
                for piece in pieces:
                    time.sleep(pause)
                    self.sock.sendall(piece)
                self.sock.sendall(tail)
            except OSError:
                pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def response(self, interim: bool = False, head: bool = False):
        """(status, headers, body) of the final answer; with `interim`, a list of the 1xx
        statuses that came before it, first. `head`: the answer to a HEAD has no body."""
        interims = []
        while True:
            status = int(self.file.readline().split()[1])
            headers = http.client.parse_headers(self.file)
            if status >= 200:
                break
            interims.append(status)
        if head:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.file.readline().split(b";")[0], 16):
                body += self.file.read(size)
                self.file.readline()
        else:
            body = self.file.read(int(headers.get("content-length", 0)))
        self.file.close()
        self.sock.close()
        return (interims, status, headers, body) if interim else (status, headers, body)


def received(body: bytes) -> tuple[dict, dict]:
    """The echo and its headers (lower-cased names, all values)."""
    echo = json.loads(body)
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return echo, headers


def assert_arrived(body: bytes, payload: bytes, method: str = "PUT", framing: str | None = None):
    """The origin got `payload` byte for byte; `framing`: "content-length" or "chunked", as sent."""
    echo, headers = received(body)
    assert echo["method"] == method
    assert (echo["body_length"], echo["body_sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
    if framing == "chunked":
        assert headers["transfer-encoding"] == ["chunked"] and "content-length" not in headers
    elif framing == "content-length":
        assert headers["content-length"] == [str(len(payload))] and "transfer-encoding" not in headers
    return echo, headers


ODD_CHUNKINGS = {
    "one byte at a time": [bytes([b]) for b in b"entragate \x00\xff\r\n0\r\n"],
    "odd sizes": [os.urandom(n) for n in (1, 3, 7, 15, 4095, 4097, 65535, 65537, 131071, 2)],
    "many small chunks": [os.urandom(17) for _ in range(3000)],
    "one large chunk": [os.urandom(3 * MB + 1)],
    "chunk-like content": [b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"\r\n"],
}


@pytest.mark.parametrize("name", sorted(ODD_CHUNKINGS))
def test_chunked_uploads_arrive_byte_for_byte(stack, writer, name):
    pieces = ODD_CHUNKINGS[name]
    exchange = Exchange(stack, "POST", f"/api/chunked/{name.replace(' ', '-')}", [("Transfer-Encoding", "chunked")],
                        writer)
    exchange.send(chunked(pieces) + b"0\r\n\r\n")
    status, _, body = exchange.response()
    assert status == 200
    assert_arrived(body, b"".join(pieces), "POST", framing="chunked")


def test_chunk_extensions_and_trailers_are_framing_not_content(stack, writer):
    """Extensions (RFC 9112 §7.1.1) and trailer fields belong to the connection's framing: the
    body arrives without them, and no trailer turns into a header at the origin."""
    pieces = [b"first", b"second", EVERY_BYTE]
    extensions = [';name=value', ';quoted="a, b;c"', ";bare", ' ; spaced = "x"']
    exchange = Exchange(stack, "PUT", "/api/extensions", [("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum")],
                        writer)
    exchange.send(chunked(pieces, extensions) + b"0;last=yes\r\nX-Checksum: abc\r\nX-Entragate-Rule: forged\r\n\r\n")
    status, _, body = exchange.response()
    assert status == 200
    _, headers = assert_arrived(body, b"".join(pieces), framing="chunked")
    assert "x-checksum" not in headers and "trailer" not in headers
    assert headers["x-entragate-rule"] == ["api-write"]


@pytest.mark.parametrize("size_mb", [10, 50])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_uploads_arrive_byte_for_byte_with_their_framing(stack, writer, size_mb, framing):
    """The client's framing is kept: a declared length reaches the origin as that
    Content-Length (an origin may need it), a chunked body as chunked."""
    payload = os.urandom(size_mb * MB)
    headers = [("Content-Type", "application/octet-stream")]
    headers.append(("Content-Length", str(len(payload))) if framing == "content-length"
                   else ("Transfer-Encoding", "chunked"))
    exchange = Exchange(stack, "PUT", f"/api/large/{size_mb}", headers, writer)
    started = time.monotonic()
    if framing == "chunked":
        for offset in range(0, len(payload), 1 << 20):  # 1 MiB chunks
            exchange.send(chunked([payload[offset:offset + (1 << 20)]]))
        exchange.send(b"0\r\n\r\n")
    else:
        exchange.send(payload)
    status, _, body = exchange.response()
    seconds = time.monotonic() - started
    assert status == 200, body[:300]
    assert_arrived(body, payload, framing=framing)
    print(f"{size_mb} MB {framing}: {seconds:.2f} s, {size_mb / seconds:.0f} MB/s")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_every_byte_value_arrives_with_every_method(stack, writer, method, framing):
    headers = [("Content-Type", "application/octet-stream")]
    if framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        data = chunked([EVERY_BYTE[:1000], EVERY_BYTE[1000:]]) + b"0\r\n\r\n"
    else:
        headers.append(("Content-Length", str(len(EVERY_BYTE))))
        data = EVERY_BYTE
    exchange = Exchange(stack, method, "/api/bytes", headers, writer)
    exchange.send(data)
    status, _, body = exchange.response()
    assert status == 200
    assert_arrived(body, EVERY_BYTE, method, framing=framing)


@pytest.mark.parametrize(("method", "headers", "data", "origin_framing"), [
    ("POST", [("Content-Length", "0")], b"", ("content-length", "0")),
    ("PUT", [("Transfer-Encoding", "chunked")], b"0\r\n\r\n", ("transfer-encoding", "chunked")),
    ("PATCH", [], b"", ("content-length", "0")),  # no body at all: a POST-like method gets "0"
    ("DELETE", [], b"", None),
    ("DELETE", [("Content-Length", "0")], b"", ("content-length", "0")),
])
def test_empty_bodies_stay_empty(stack, writer, method, headers, data, origin_framing):
    exchange = Exchange(stack, method, "/api/empty", headers, writer)
    exchange.send(data)
    status, _, body = exchange.response()
    assert status == 200
    echo, seen = assert_arrived(body, b"", method)
    if origin_framing:
        name, value = origin_framing
        assert seen.get(name, [value]) == [value]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_or_head_body_with_a_content_length_is_forwarded(stack, method):
    """The Workers fetch API refuses a GET/HEAD body in a RequestInit (a TypeError: such
    requests were answered 502 origin_unreachable); the gateway passes the client's Request on
    instead, which keeps it. (A GET body of unknown length: tests/runtime/test_hop_by_hop.py.)"""
    stack.origin.clear()
    query = '{"query": "caf\xc3\xa9", "size": 10}'.encode("latin-1")
    exchange = Exchange(stack, method, "/api/search",
                        [("Content-Length", str(len(query))), ("Content-Type", "application/json")], stack.tenant.mint())
    exchange.send(query)
    status, _, body = exchange.response(head=method == "HEAD")
    assert status == 200
    (echo,) = stack.origin.requests
    assert echo["method"] == method
    assert (echo["body_length"], echo["body_sha256"]) == (len(query), hashlib.sha256(query).hexdigest())
    if method == "GET":
        assert json.loads(body) == echo


def test_a_get_with_content_length_zero_is_an_ordinary_get(stack):
    stack.origin.clear()
    exchange = Exchange(stack, "GET", "/api/zero", [("Content-Length", "0")], stack.tenant.mint())
    status, _, body = exchange.response()
    assert status == 200
    (echo,) = stack.origin.requests
    assert echo["body_length"] == 0 and echo["method"] == "GET"


def test_expect_100_continue_then_the_body(stack, writer):
    """A client that waits for `100 Continue` gets it, then its body is forwarded byte for
    byte. Expect is end to end (RFC 9110 §10.1.1): the origin gets it too (the echo origin
    answers it with its own 100, which the runtime's HTTP client takes in its stride)."""
    payload = os.urandom(100_000)
    exchange = Exchange(stack, "PUT", "/api/expect",
                        [("Expect", "100-continue"), ("Content-Length", str(len(payload)))], writer)
    assert exchange.file.readline().split()[1] == b"100"
    assert exchange.file.readline() == b"\r\n"
    exchange.send(payload)
    status, _, body = exchange.response()
    assert status == 200
    _, headers = assert_arrived(body, payload, framing="content-length")
    assert headers["expect"] == ["100-continue"]


def test_expect_100_continue_on_a_refused_request_never_reaches_the_origin(stack):
    stack.origin.clear()
    exchange = Exchange(stack, "PUT", "/api/expect", [("Expect", "100-continue"), ("Content-Length", "5")])
    exchange.send(b"hello")  # whether or not a 100 came first
    interims, status, headers, body = exchange.response(interim=True)
    assert interims in ([], [100]) and status == 401 and json.loads(body)["error"] == "missing_token"
    assert stack.origin.requests == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_slow_upload_is_not_cut_by_the_origin_timeout(stack, writer, framing):
    """ORIGIN_TIMEOUT_MS times the origin, not the client: it runs from when the origin has the
    whole body. Here the upload alone takes about twice the timeout (it used to be answered
    504 origin_timeout after ORIGIN_TIMEOUT_MS, the upload cut off)."""
    pieces = [bytes([n]) * 4099 for n in range(10)]
    pause = 2 * ORIGIN_TIMEOUT_MS / 1000 / len(pieces)
    payload = b"".join(pieces)
    if framing == "chunked":
        headers, data, tail = [("Transfer-Encoding", "chunked")], [chunked([p]) for p in pieces], b"0\r\n\r\n"
    else:
        headers, data, tail = [("Content-Length", str(len(payload)))], pieces, b""
    exchange = Exchange(stack, "PUT", "/api/slow-upload", headers, writer)
    started = time.monotonic()
    exchange.send_slowly(data, pause, tail)
    status, _, body = exchange.response()
    assert status == 200, body[:300]
    assert time.monotonic() - started >= 2 * ORIGIN_TIMEOUT_MS / 1000 - pause
    assert_arrived(body, payload, framing=framing)


def test_the_origin_timeout_still_bounds_the_origin_after_an_upload(stack, writer):
    """The echo origin reads the whole body, then sleeps (`__slow`): 504 once it has been
    silent for ORIGIN_TIMEOUT_MS after the upload, not after the origin's sleep."""
    payload = os.urandom(1 * MB)
    exchange = Exchange(stack, "PUT", "/api/late?__slow=20", [("Content-Length", str(len(payload)))], writer)
    started = time.monotonic()
    exchange.send(payload)
    status, _, body = exchange.response()
    elapsed = time.monotonic() - started
    assert status == 504 and json.loads(body)["error"] == "origin_timeout"
    assert ORIGIN_TIMEOUT_MS / 1000 <= elapsed < ORIGIN_TIMEOUT_MS / 1000 + 10
    line = stack.runner.audit_line(json.loads(body)["request_id"])
    assert (line["decision"], line["reason"], line["status"], line["method"]) == ("allow", "origin_timeout", 504, "PUT")
