"""Every option the Worker passes to a platform API is one the Workers runtime (workerd) accepts.

Node's fetch is more permissive than workerd's: `redirect: "error"` works in Node and is a
TypeError in workerd (issue #11: every key fetch failed, every token got a 503). The runtime
tests now run in workerd itself; this test pins the option sets on the host as well, so an
option workerd does not know is caught before anything runs, with the reason in its name.

platform_io is imported with a recording stand-in for `js` and `pyodide.ffi`; each adapter is
driven once, and every dictionary it hands to a JS API is checked against the Workers set:
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


class FakeResponse:
    def __init__(self, status=200, text="{}", headers=None):
        self.status = status
        self.headers = FakeHeaders(headers)
        self.body = object()
        self._text = text

    async def text(self):
        return self._text


def fake_js(recorder: Recorder, fetch_answer):
    def record(name):
        def call(*args):
            recorder.calls.append((name, args))
        return call

    async def fetch(url, init):
        recorder.calls.append(("fetch", (url, init)))
        return fetch_answer

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
    js.Uint8Array = types.SimpleNamespace(new=lambda buffer: types.SimpleNamespace(to_bytes=lambda: bytes(buffer)))
    js.crypto = types.SimpleNamespace(subtle=types.SimpleNamespace(importKey=import_key, verify=verify, sign=sign))
    js.console = types.SimpleNamespace(log=record("console.log"), error=record("console.error"))
    return js


@pytest.fixture
def platform(monkeypatch):
    """(platform_io imported against the recording stand-ins, recorder, set_answer)."""
    recorder = Recorder()
    answer = {"response": FakeResponse(200, '{"keys": []}')}

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
    monkeypatch.setitem(sys.modules, "js", fake_js(recorder, Proxy()))
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


def test_forwarding_uses_only_workers_options(platform):
    module, recorder, _ = platform
    request = types.SimpleNamespace(method="POST", headers=FakeHeaders({"host": "gw", "x": "1"}), body=object())
    response = asyncio.run(module.forward(request, "https://origin.example/p", ("x",), (("x-id", "1"),), 5.0))
    [(url, init)] = recorder.of("fetch")
    assert url == "https://origin.example/p"
    assert_request_init(init)
    assert init["redirect"] == "manual"  # origin redirects go back to the client
    module.with_request_id(response, "req-1")
    [(_, response_init)] = recorder.of("Response")
    assert response_init is response or set(response_init) <= RESPONSE_INIT  # a Response as init: workerd takes it


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


class FakeStream:
    """A response body stream: one chunk, then done (what read_capped reads)."""

    def __init__(self, data: bytes):
        self._chunks = [data]

    def getReader(self):
        chunks = self._chunks

        class Reader:
            async def read(self):
                if chunks:
                    return types.SimpleNamespace(done=False, value=types.SimpleNamespace(to_bytes=lambda: chunks.pop()))
                return types.SimpleNamespace(done=True, value=None)

            async def cancel(self):
                chunks.clear()

        return Reader()


def test_graph_calls_use_only_workers_options_and_hand_back_retry_after(platform):
    """post_json (Microsoft Graph, graph.py): a JSON POST with the app token, never following a
    redirect, the timeout as an AbortSignal; the answer's Retry-After is handed back."""
    module, recorder, answer = platform
    response = FakeResponse(429, "", {"retry-after": "17"})
    response.body = FakeStream(b'{"error": {"code": "TooManyRequests"}}')
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
    response.body = FakeStream(b"x" * (module.MAX_DOCUMENT_BYTES + 1))
    answer["response"] = response
    with pytest.raises(module.HttpFailure, match="too large"):
        asyncio.run(module.WorkersHttp().post_json("https://graph.example/x", {}, {}, 1.0))
