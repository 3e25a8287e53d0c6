"""Every option the Worker passes to a platform API is one the Workers runtime (workerd) accepts.

Node's fetch is more permissive than workerd's: `redirect: "error"` works in Node and is a
TypeError in workerd (issue #11: every key fetch failed, every token got a 503). The runtime
tests now run in workerd itself; this test pins the option sets on the host as well, so an
option workerd does not know is caught before anything runs, with the reason in its name.

platform_io is imported with a recording stand-in for `js` and `pyodide.ffi`; each adapter is
driven once, and every dictionary it hands to a JS API is checked against the Workers set
(and the forward's options against what they are for: no cache, no redirects followed):
- fetch / new Request init: workerd's RequestInitializerDict (src/workerd/api/http.h):
  method, headers, body, redirect ("follow" | "manual"; "error" is refused), fetcher, cf,
  cache ("no-store" | "no-cache"), integrity (""), signal, encodeResponseBody
  ("automatic" | "manual"). Anything else is ignored by workerd, so an option added for
  its effect elsewhere would silently do nothing at the edge: refused here.
- new Response init: ResponseInitializerDict (status, statusText, headers, cf, webSocket,
  encodeBody) or a Response, which workerd accepts in its place.
- WebCrypto: the JWK and algorithm members workerd's crypto implementation reads.
"""

import asyncio
import importlib
import json
import sys
import types

import pytest

REQUEST_INIT = {
    "method": None, "headers": None, "body": None, "fetcher": None, "cf": None, "signal": None,
    "redirect": {"follow", "manual"},
    "cache": {"no-store", "no-cache"},
    "integrity": {""},
    "encodeResponseBody": {"automatic", "manual"},
}
RESPONSE_INIT = {"status", "statusText", "headers", "cf", "webSocket", "encodeBody"}
RSA_JWK_MEMBERS = {"kty", "n", "e", "ext", "alg", "key_ops", "use"}
EC_JWK_MEMBERS = {"kty", "crv", "x", "y", "d", "ext", "alg", "key_ops", "use"}
IMPORT_ALGORITHMS = [{"name": "RSASSA-PKCS1-v1_5", "hash": {"SHA-256", "SHA-384", "SHA-512"}},
                     {"name": "ECDSA", "namedCurve": {"P-256"}}]


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def of(self, api: str) -> list[tuple]:
        return [args for name, args in self.calls if name == api]


class FakeJsException(Exception):
    name = "TypeError"


class FakeHeaders:
    def __init__(self, init=None):
        self.values = dict(init or {})

    def get(self, name):
        return self.values.get(name.lower())

    def delete(self, name):
        self.values.pop(name.lower(), None)

    def set(self, name, value):
        self.values[name.lower()] = value


class FakeArrayBuffer:
    """An ArrayBuffer that BYOB reads transfer: the old object is detached, its bytes move."""

    def __init__(self, size=0, data=None):
        self.data = bytearray(size) if data is None else data
        self.detached = False

    def transfer(self):
        assert not self.detached, "read into a buffer a BYOB read had already taken"
        self.detached = True
        return FakeArrayBuffer(data=self.data)


class FakeUint8Array:
    def __init__(self, buffer, offset=0, length=None):
        self.buffer, self.offset = buffer, offset
        self.byteLength = len(buffer.data) - offset if length is None else length

    def to_bytes(self):
        assert not self.buffer.detached
        return bytes(self.buffer.data[self.offset:self.offset + self.byteLength])


class FakeByteStream:
    """A response body handed over `piece` bytes at a time, as a network delivers it; records
    what the reader asked for and whether it cancelled."""

    def __init__(self, data: bytes, piece=4096):
        self.data, self.piece = data, piece
        self.position = 0
        self.reader_options = None
        self.requests = []  # (min, room) of each readAtLeast
        self.cancelled = False

    def getReader(self, options=None):
        self.reader_options = options
        return self

    async def readAtLeast(self, minimum, view):
        assert not self.cancelled
        self.requests.append((minimum, view.byteLength))
        buffer = view.buffer.transfer()
        taken = 0
        while taken < minimum and self.position < len(self.data):
            piece = self.data[self.position:self.position + min(self.piece, view.byteLength - taken)]
            buffer.data[view.offset + taken:view.offset + taken + len(piece)] = piece
            taken += len(piece)
            self.position += len(piece)
        done = taken == 0 and self.position == len(self.data)
        return types.SimpleNamespace(value=FakeUint8Array(buffer, view.offset, taken), done=done)

    async def cancel(self):
        self.cancelled = True

    def handed_over(self) -> int:
        return self.position


class FakeResponse:
    def __init__(self, status=200, text="{}", headers=None, body=...):
        self.status = status
        self.headers = FakeHeaders(headers)
        self.body = FakeByteStream(text.encode() if isinstance(text, str) else text) if body is ... else body


class FakeStream:
    """A native stream (FixedLengthStream / IdentityTransformStream): its ends are markers."""

    def __init__(self, kind, length=None):
        self.kind, self.length = kind, length
        self.writable, self.readable = ("writable", self), ("readable", self)
        self.ended = asyncio.Event()  # the whole body went through


class FakeBody:
    """A request body: pipeTo takes `upload_seconds` (the client's upload)."""

    def __init__(self, recorder, upload_seconds=0.0):
        self.recorder, self.upload_seconds = recorder, upload_seconds

    async def pipeTo(self, destination):
        self.recorder.calls.append(("pipeTo", (destination,)))
        await asyncio.sleep(self.upload_seconds)
        self.recorder.calls.append(("uploaded", ()))
        destination[1].ended.set()


class FakeRequest:
    def __init__(self, method="POST", headers=None, body=None):
        self.method, self.headers, self.body = method, FakeHeaders(headers), body


def fake_js(recorder: Recorder, fetch_answer, fetch_seconds=0.0):
    def record(name):
        def call(*args):
            recorder.calls.append((name, args))
        return call

    async def fetch(url, init):
        """Like an origin that reads the whole body before it answers."""
        recorder.calls.append(("fetch", (url, init)))
        body = getattr(init, "init", {}).get("body")
        if body is not None and not getattr(init, "answers_early", False):
            await body[1].ended.wait()
        await asyncio.sleep(fetch_seconds)
        recorder.calls.append(("answered", ()))
        return fetch_answer

    def request_new(request, init):
        recorder.calls.append(("Request", (request, init)))
        return types.SimpleNamespace(passed_on=request, init=init, answers_early=getattr(request, "answers_early", False))

    async def import_key(*args):
        recorder.calls.append(("importKey", args))
        return object()

    async def verify(*args):
        recorder.calls.append(("verify", args))
        return True

    async def sign(*args):
        recorder.calls.append(("sign", args))
        return b"\0" * 64

    def response_new(body, init):
        recorder.calls.append(("Response", (body, init)))
        return FakeResponse()

    js = types.ModuleType("js")
    js.fetch = fetch
    js.Object = types.SimpleNamespace(fromEntries=dict)
    js.AbortSignal = types.SimpleNamespace(timeout=lambda ms: ("signal", ms))
    js.AbortController = types.SimpleNamespace(new=lambda: types.SimpleNamespace(signal="signal", abort=lambda: None))
    js.Headers = types.SimpleNamespace(new=lambda init=None: FakeHeaders(getattr(init, "values", None)))
    js.Response = types.SimpleNamespace(new=response_new)
    js.Request = types.SimpleNamespace(new=request_new)
    js.FixedLengthStream = types.SimpleNamespace(new=lambda length: FakeStream("fixed", length))
    js.IdentityTransformStream = types.SimpleNamespace(new=lambda: FakeStream("identity"))
    js.Uint8Array = types.SimpleNamespace(
        new=lambda buffer, *view: FakeUint8Array(buffer, *view) if view else types.SimpleNamespace(to_bytes=lambda: bytes(buffer)))
    js.ArrayBuffer = types.SimpleNamespace(new=FakeArrayBuffer)
    js.crypto = types.SimpleNamespace(subtle=types.SimpleNamespace(importKey=import_key, verify=verify, sign=sign))
    js.console = types.SimpleNamespace(log=record("console.log"), error=record("console.error"))
    return js


@pytest.fixture
def platform(monkeypatch):
    """(platform_io imported against the recording stand-ins, recorder, set_answer)."""
    recorder = Recorder()
    answer = {"response": FakeResponse(200, '{"keys": []}'), "fetch_seconds": 0.0}

    class Proxy:  # the fetch answer can be swapped per test
        def __getattr__(self, name):
            return getattr(answer["response"], name)

    ffi = types.ModuleType("pyodide.ffi")
    ffi.JsException = FakeJsException
    ffi.create_once_callable = lambda f: f
    ffi.jsnull = object()
    ffi.to_js = lambda value, dict_converter=None: value
    pyodide = types.ModuleType("pyodide")
    pyodide.ffi = ffi
    js = fake_js(recorder, Proxy())
    fetch = js.fetch

    async def timed_fetch(url, init):  # the delay can be swapped per test too
        await asyncio.sleep(answer["fetch_seconds"])
        return await fetch(url, init)

    js.fetch = timed_fetch
    monkeypatch.setitem(sys.modules, "js", js)
    monkeypatch.setitem(sys.modules, "pyodide", pyodide)
    monkeypatch.setitem(sys.modules, "pyodide.ffi", ffi)
    monkeypatch.delitem(sys.modules, "platform_io", raising=False)
    module = importlib.import_module("platform_io")
    yield module, recorder, answer
    sys.modules.pop("platform_io", None)


def assert_request_init(init: dict):
    for name, value in init.items():
        assert name in REQUEST_INIT, f"fetch option {name!r} is not one workerd knows (it would be ignored)"
        allowed = REQUEST_INIT[name]
        assert allowed is None or value in allowed, f"workerd refuses {name}: {value!r} (accepts {sorted(allowed)})"


def test_key_document_fetch_uses_only_workers_options(platform):
    module, recorder, _ = platform
    asyncio.run(module.WorkersHttp().get_json("https://login.example/keys", 5.0))
    [(url, init)] = recorder.of("fetch")
    assert url == "https://login.example/keys"
    assert_request_init(init)
    # The redirect option keeps its purpose: a key endpoint's redirect is never followed.
    assert init["redirect"] == "manual"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308, 0])
def test_a_redirect_from_a_key_endpoint_is_a_fetch_error_not_followed(platform, status):
    """With redirect "manual", workerd hands back the 3xx itself (Node: an opaque redirect,
    status 0); either way the document is refused and nothing is fetched from Location."""
    module, recorder, answer = platform
    answer["response"] = FakeResponse(status, "", {"location": "https://attacker.example/keys"})
    with pytest.raises(module.KeyFetchError, match=f"HTTP {status}"):
        asyncio.run(module.WorkersHttp().get_json("https://login.example/keys", 5.0))
    assert [url for url, _ in recorder.of("fetch")] == ["https://login.example/keys"]


def forward(module, request, strip=("x",), add=(("x-id", "1"),), timeout=5.0):
    return asyncio.run(module.forward(request, "https://origin.example/p", strip, add, timeout))


def test_forwarding_uses_only_workers_options(platform):
    module, recorder, _ = platform
    request = FakeRequest("POST", {"host": "gw", "x": "1", "content-length": "5"}, FakeBody(recorder))
    response = forward(module, request)
    [(passed_on, init)] = recorder.of("Request")
    [(url, outgoing)] = recorder.of("fetch")
    assert url == "https://origin.example/p" and outgoing.passed_on is request and outgoing.init is init
    assert_request_init(init)
    assert init["redirect"] == "manual"  # origin redirects go back to the client
    # Never served from or stored in Cloudflare's cache: "no-store" skips both the lookup and
    # the store ("no-cache" would still store); the client's request.cf is not passed on.
    assert init["cache"] == "no-store" and init["cf"] == {}
    assert "method" not in init  # the client's, with the Request passed on
    module.with_request_id(response, "req-1")
    [(_, response_init)] = recorder.of("Response")
    assert response_init is response or set(response_init) <= RESPONSE_INIT  # a Response as init: workerd takes it


def test_the_gateways_headers_are_set_after_the_clients_are_stripped(platform):
    """A header the client named (or spoofed) and the gateway sets arrives with the gateway's value."""
    module, recorder, _ = platform
    request = FakeRequest("GET", {"host": "gw", "x-entragate-rule": "forged", "connection": "x-entragate-rule",
                                  "accept": "a"})
    forward(module, request, strip=("x-entragate-rule", "connection"), add=(("x-entragate-rule", "api-read"),))
    [(_, init)] = recorder.of("Request")
    assert init["headers"].values == {"accept": "a", "x-entragate-rule": "api-read"}


@pytest.mark.parametrize(("content_length", "stream"), [("5", ("fixed", 5)), ("0", ("fixed", 0)),
                                                        (None, ("identity", None)), ("5, 5", ("identity", None)),
                                                        ("9" * 17, ("identity", None)), ("٥", ("identity", None))])
def test_a_body_goes_through_a_native_stream_that_keeps_its_framing(platform, content_length, stream):
    """Declared length: FixedLengthStream (the origin gets the same Content-Length); anything
    else streams (chunked). The pipe runs in the runtime: the gateway only learns when it ends."""
    module, recorder, _ = platform
    headers = {"content-length": content_length} if content_length is not None else {}
    forward(module, FakeRequest("PUT", headers, FakeBody(recorder)))
    [(destination,)] = recorder.of("pipeTo")
    [(_, init)] = recorder.of("Request")
    used = destination[1]
    assert destination[0] == "writable" and init["body"] == ("readable", used)
    assert (used.kind, used.length) == stream


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_or_head_body_rides_with_the_clients_request(platform, method):
    """fetch refuses a GET/HEAD body in a RequestInit (a TypeError, which was answered 502)
    but keeps the body of a Request passed on as it is."""
    module, recorder, _ = platform
    request = FakeRequest(method, {"content-length": "5"}, FakeBody(recorder))
    forward(module, request)
    [(passed_on, init)] = recorder.of("Request")
    assert passed_on is request and "body" not in init and recorder.of("pipeTo") == []


def test_the_origin_timeout_does_not_run_while_the_client_is_still_uploading(platform):
    module, recorder, answer = platform
    slow_upload = FakeBody(recorder, upload_seconds=0.3)
    response = forward(module, FakeRequest("PUT", {"content-length": "5"}, slow_upload), timeout=0.1)
    assert response is not None
    assert [name for name, _ in recorder.calls if name in ("uploaded", "answered")] == ["uploaded", "answered"]


def test_the_origin_timeout_runs_once_the_origin_has_the_whole_body(platform):
    module, recorder, answer = platform
    answer["fetch_seconds"] = 5.0  # the origin never answers in time
    with pytest.raises(module.OriginTimeout):
        forward(module, FakeRequest("PUT", {"content-length": "5"}, FakeBody(recorder, upload_seconds=0.2)),
                timeout=0.1)
    assert [name for name, _ in recorder.calls if name == "uploaded"] == ["uploaded"]
    with pytest.raises(module.OriginTimeout):  # and from the start without a body
        forward(module, FakeRequest("GET", {}), timeout=0.1)


def test_an_origin_answering_before_the_upload_ends_is_passed_on_at_once(platform):
    module, recorder, _ = platform
    endless = FakeBody(recorder, upload_seconds=30.0)
    request = FakeRequest("PUT", {}, endless)
    request.answers_early = True  # e.g. a 413 or a 401 before reading the body
    response = forward(module, request, timeout=0.1)
    assert response is not None and [name for name, _ in recorder.calls if name == "uploaded"] == []


def test_webcrypto_calls_use_only_members_workerd_reads(platform):
    module, recorder, _ = platform
    jwk = {"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB", "issuer": "https://x"}
    assert asyncio.run(module.WebCryptoVerifier().verify("RS256", jwk, b"a.b", b"sig")) is True
    private = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "d"}
    asyncio.run(module.WebCryptoSigner(private).sign(b"a.b"))
    imports = recorder.of("importKey")
    assert len(imports) == 2
    for (fmt, key, algorithm, extractable, usages), members in zip(imports, (RSA_JWK_MEMBERS, EC_JWK_MEMBERS)):
        assert fmt == "jwk" and extractable is False
        assert set(key) <= members, f"JWK members workerd does not read: {set(key) - members}"
        assert any(algorithm["name"] == spec["name"]
                   and all(algorithm[k] in v for k, v in spec.items() if k != "name") for spec in IMPORT_ALGORITHMS)
        assert set(usages) <= {"verify", "sign"}
    [(verify_algorithm, *_)] = recorder.of("verify")
    assert verify_algorithm == "RSASSA-PKCS1-v1_5"
    [(sign_algorithm, *_)] = recorder.of("sign")
    assert sign_algorithm == {"name": "ECDSA", "hash": "SHA-256"}


# --- the document size cap, counted while reading (issue #13 item 5) ------------------------------
# In workerd: tests/runtime/test_faults.py (modes "chunked_huge" and "drip").

CAP = 1000


def fetch_document(module, answer, monkeypatch, data: bytes, piece=4096):
    monkeypatch.setattr(module, "MAX_DOCUMENT_BYTES", CAP)
    stream = FakeByteStream(data, piece)
    answer["response"] = FakeResponse(200, body=stream)  # no Content-Length, as with chunked coding
    return stream, module.WorkersHttp().get_json("https://login.example/keys", 5.0)


def document_of(size: int) -> bytes:
    return b'{"x":"' + b"a" * (size - 8) + b'"}'


@pytest.mark.parametrize("size", [8, 200, CAP])
def test_a_document_within_the_cap_is_read_whole_in_few_reads(platform, monkeypatch, size):
    module, _, answer = platform
    stream, fetching = fetch_document(module, answer, monkeypatch, document_of(size))
    assert asyncio.run(fetching) == {"x": "a" * (size - 8)}
    assert stream.reader_options == {"mode": "byob"}  # readAtLeast exists on BYOB readers only
    assert len(stream.requests) <= 3 and not stream.cancelled
    assert stream.requests[0] == (CAP + 1, CAP + 1)  # one read asks for all the room there is


@pytest.mark.parametrize("size,piece", [(CAP + 1, 4096), (CAP + 1, 7), (50 * CAP, 4096), (50 * CAP, 100)])
def test_a_document_over_the_cap_is_refused_after_reading_cap_plus_one_bytes(platform, monkeypatch, size, piece):
    module, _, answer = platform
    stream, fetching = fetch_document(module, answer, monkeypatch, document_of(size), piece)
    with pytest.raises(module.KeyFetchError, match=f"document over {CAP} bytes"):
        asyncio.run(fetching)
    assert stream.cancelled, "the rest of an oversized body must be cancelled, not drained"
    assert stream.handed_over() == CAP + 1, "never a byte past the cap is read"
    assert all(room <= CAP + 1 for _, room in stream.requests)


def test_a_content_length_is_not_needed_for_the_cap_nor_trusted(platform, monkeypatch):
    """A declared length below the real size changes nothing: the bytes are counted."""
    module, _, answer = platform
    stream, fetching = fetch_document(module, answer, monkeypatch, document_of(5 * CAP))
    answer["response"].headers = FakeHeaders({"content-length": "10"})
    with pytest.raises(module.KeyFetchError, match="document over"):
        asyncio.run(fetching)
    assert stream.cancelled


@pytest.mark.parametrize("data", [
    '{"keys": []}'.encode("utf-16"), '{"keys": []}'.encode("utf-32"), b'{"x": "\xff"}', b"", b"<html>",
])
def test_a_body_that_is_not_utf8_json_is_refused(platform, monkeypatch, data):
    module, _, answer = platform
    _, fetching = fetch_document(module, answer, monkeypatch, data)
    with pytest.raises(module.KeyFetchError, match="did not return JSON"):
        asyncio.run(fetching)


def test_a_response_without_a_body_is_refused(platform):
    module, _, answer = platform
    answer["response"] = FakeResponse(200, body=None)
    with pytest.raises(module.KeyFetchError, match="did not return JSON"):
        asyncio.run(module.WorkersHttp().get_json("https://login.example/keys", 5.0))


def test_graph_calls_use_only_workers_options_and_hand_back_retry_after(platform):
    """post_json (Microsoft Graph, graph.py): a JSON POST with the app token, never following a
    redirect, the timeout as an AbortSignal; the answer's Retry-After is handed back."""
    module, recorder, answer = platform
    response = FakeResponse(429, "", {"retry-after": "17"})
    response.body = FakeByteStream(b'{"error": {"code": "TooManyRequests"}}', 4096)
    answer["response"] = response
    status, document, retry_after = asyncio.run(module.WorkersHttp().post_json(
        "https://graph.example/v1.0/users/u/checkMemberGroups", {"groupIds": ["g"]}, {"authorization": "Bearer t"}, 2.5))
    assert (status, document, retry_after) == (429, {"error": {"code": "TooManyRequests"}}, "17")
    [(url, init)] = recorder.of("fetch")
    assert url == "https://graph.example/v1.0/users/u/checkMemberGroups"
    assert_request_init(init)
    assert init["redirect"] == "manual" and init["signal"] == ("signal", 2500) and init["method"] == "POST"
    assert init["headers"]["authorization"] == "Bearer t" and init["headers"]["content-type"] == "application/json"
    assert json.loads(init["body"]) == {"groupIds": ["g"]}


def test_a_graph_answer_over_the_size_cap_is_a_failure(platform):
    module, _, answer = platform
    response = FakeResponse(200, "")
    response.body = FakeByteStream(b"x" * (module.MAX_DOCUMENT_BYTES + 1), 65536)
    answer["response"] = response
    with pytest.raises(module.HttpFailure, match="too large"):
        asyncio.run(module.WorkersHttp().post_json("https://graph.example/x", {}, {}, 1.0))


@pytest.mark.parametrize("status", [200, 302, 403])
def test_the_json_post_for_google_uses_only_workers_options_and_follows_no_redirect(platform, status):
    """IAM Credentials generateIdToken (google.py): a JSON POST with a bearer token, never
    redirected elsewhere with that token; a 3xx is handed back as the answer."""
    module, recorder, answer = platform
    answer["response"] = FakeResponse(status, '{"token": "t"}',
                                      headers={"retry-after": "7", "location": "https://attacker.example/"})
    got = asyncio.run(module.WorkersHttp().post_json(
        "https://iam.example/v1/x:generateIdToken", {"audience": "a"}, {"authorization": "Bearer f"}, 5.0))
    assert got == (status, {"token": "t"}, "7")
    [(url, init)] = recorder.of("fetch")
    assert url == "https://iam.example/v1/x:generateIdToken"
    assert_request_init(init)
    assert init["redirect"] == "manual" and init["method"] == "POST"
    assert init["headers"]["authorization"] == "Bearer f" and init["headers"]["content-type"] == "application/json"
