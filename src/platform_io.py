"""Platform adapters: the only module besides entry.py that touches `js` (Workers APIs).

Each adapter implements one small interface of the pure core: HTTP JSON fetch (keys),
key-value store (KV), signature verification (WebCrypto), clock and console.
"""

import asyncio
import json
import os
import time
from urllib.parse import urlencode

import js
from pyodide.ffi import JsException, create_once_callable, jsnull, to_js

from entragate.entra import HttpFailure
from entragate.keys import KeyFetchError

# Entra's discovery and key documents are a few KB (64 keys of the largest size keys.py
# keeps, with certificates, stay under 256 KiB). Counted while reading: see read_capped.
MAX_DOCUMENT_BYTES = 512 * 1024
_WEBCRYPTO_HASHES = {"RS256": "SHA-256", "RS384": "SHA-384", "RS512": "SHA-512"}
# Memory: each entry holds one key's strings, bounded in keys.py (n <= 1366 characters), and a
# CryptoKey: ~0.3 MB for all 128 at most.
MAX_IMPORTED_KEYS = 128


def _js_object(value: dict):
    return to_js(value, dict_converter=js.Object.fromEntries)


# Date.now()'s clock (Pyodide's clock_gettime reads it), without a trip through the JS proxy
# layer: ~1 µs instead of 4-10 µs in Pyodide, and the gateway reads the clock several times
# a request.
clock = time.time


def log(message: str) -> None:
    js.console.error(message)


def emit(line: str) -> None:
    js.console.log(line)


class WorkersHttp:
    """GET a JSON document with the Workers fetch API; every failure is a KeyFetchError.

    A redirect is never followed: with "manual", workerd hands back the 3xx itself, which is
    refused like any answer but 200. (Workers know only "follow" and "manual": "error", which
    Node's fetch accepts, is a TypeError in workerd; tests/host/test_platform_options.py pins
    every option passed to the platform.) The timeout's signal also aborts reading the body,
    so a document that trickles in is cut off at the timeout too (tests/runtime/test_faults.py,
    mode "drip")."""

    async def get_json(self, url: str, timeout: float):
        init = _js_object({
            "method": "GET",
            "headers": {"accept": "application/json"},
            "redirect": "manual",
            "signal": js.AbortSignal.timeout(int(timeout * 1000)),
        })
        try:
            response = await js.fetch(url, init)
            if response.status != 200:
                raise KeyFetchError(f"{url} answered HTTP {response.status}")
            body = await read_capped(response.body, MAX_DOCUMENT_BYTES)
        except JsException as error:
            raise KeyFetchError(f"{url} fetch failed: {error.name}") from None
        if body is None:
            raise KeyFetchError(f"{url} document over {MAX_DOCUMENT_BYTES} bytes")
        try:
            return json.loads(body.decode("utf-8"))  # bytes to json.loads could also be UTF-16/32
        except ValueError:
            raise KeyFetchError(f"{url} did not return JSON") from None

    async def post_form(self, url: str, fields: dict, timeout: float):
        """POST an HTML form to a token endpoint: (status, JSON object or None). Never follows a
        redirect; every failure to get an answer is an HttpFailure."""
        status, document, _ = await self._post(url, "application/x-www-form-urlencoded", urlencode(fields), {}, timeout)
        return status, document

    async def post_json(self, url: str, document: dict, headers: dict, timeout: float):
        """POST a JSON document to an API (Microsoft Graph, Google IAM Credentials): (status, JSON
        object or None, the Retry-After header or None). Never follows a redirect; the timeout
        covers the body too; every failure to get an answer is an HttpFailure."""
        return await self._post(url, "application/json", json.dumps(document), headers, timeout)

    async def _post(self, url: str, content_type: str, body: str, headers: dict, timeout: float):
        init = _js_object({
            "method": "POST",
            "headers": {**headers, "content-type": content_type, "accept": "application/json"},
            "body": body,
            "redirect": "manual",
            "signal": js.AbortSignal.timeout(int(timeout * 1000)),
        })
        try:
            response = await js.fetch(url, init)
            answer = await read_capped(response.body, MAX_DOCUMENT_BYTES)
        except JsException as error:
            raise HttpFailure(f"{url} fetch failed: {error.name}") from None
        if answer is None:
            raise HttpFailure(f"{url} answer too large")
        try:
            document = json.loads(answer)
        except ValueError:
            document = None
        return response.status, document if isinstance(document, dict) else None, response.headers.get("retry-after")


async def read_capped(stream, cap: int) -> bytes | None:
    """A response body of at most `cap` bytes, or None: past `cap` the stream is cancelled
    (workerd closes the connection) and nothing more is read. Whatever Content-Length says or
    leaves out: a chunked body has none, and buffering one whole to measure it was the flaw.

    One buffer of cap + 1 bytes, filled by a BYOB reader's `readAtLeast` (a workerd extension)
    asking for all the room left: each awaited JS promise costs ~0.2-0.3 ms of CPU in
    workerd, and a default reader hands fetch bodies over in 4 KiB pieces (134 reads for
    512 KiB, against 1 here); an ordinary document takes two (its bytes, then the end)."""
    if stream is None or stream is jsnull:  # no body (a 204, an empty request)
        return b""
    reader = stream.getReader(_js_object({"mode": "byob"}))
    buffer = js.ArrayBuffer.new(cap + 1)
    filled, done = 0, False
    while not done and filled <= cap:
        room = cap + 1 - filled
        result = await reader.readAtLeast(room, js.Uint8Array.new(buffer, filled, room))
        if result.value is not None:  # each read hands the buffer back (BYOB reads transfer it)
            buffer = result.value.buffer
            filled += result.value.byteLength
        done = result.done
    if filled > cap:
        await reader.cancel()
        return None
    return js.Uint8Array.new(buffer, 0, filled).to_bytes()


class KvStore:
    """Workers KV: string values; a missing key arrives as JS null."""

    def __init__(self, binding):
        self._kv = binding

    async def get(self, key: str) -> str | None:
        value = await self._kv.get(key)
        return value if isinstance(value, str) else None

    async def put(self, key: str, value: str, ttl: int | None = None) -> None:
        """`ttl`: seconds until KV drops the value by itself (at least 60, KV's minimum)."""
        if ttl is None:
            await self._kv.put(key, value)
        else:
            await self._kv.put(key, value, _js_object({"expirationTtl": ttl}))


class WebCryptoVerifier:
    """RSASSA-PKCS1-v1_5 verification with crypto.subtle; imported keys cached per kid."""

    def __init__(self):
        self._imported = {}
        # Each attribute step through `js` is a crossing of the proxy layer (~7 µs in Pyodide):
        # the method is looked up once (it stays bound to crypto.subtle).
        self._subtle_verify = js.crypto.subtle.verify

    async def _import(self, algorithm: str, jwk: dict):
        cache_key = (algorithm, jwk["kid"], jwk["n"], jwk["e"])
        key = self._imported.get(cache_key)
        if key is None:
            if len(self._imported) >= MAX_IMPORTED_KEYS:
                self._imported.clear()
            key = await js.crypto.subtle.importKey(
                "jwk",
                _js_object({"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "ext": True}),
                _js_object({"name": "RSASSA-PKCS1-v1_5", "hash": _WEBCRYPTO_HASHES[algorithm]}),
                False,
                to_js(["verify"]),
            )
            self._imported[cache_key] = key
        return key

    async def verify(self, algorithm: str, jwk: dict, signing_input: bytes, signature: bytes) -> bool:
        try:
            key = await self._import(algorithm, jwk)
            return bool(await self._subtle_verify("RSASSA-PKCS1-v1_5", key, to_js(signature), to_js(signing_input)))
        except JsException:
            return False  # a key WebCrypto cannot import verifies nothing


class Flight:
    """Work several requests await (entragate.flights): an asyncio task in the request that
    started it, and a JS promise settled when the task is done. Waiters await the promise,
    never the task: workerd resumes each in its own request context only through a JS
    promise (a shared Python future would wake them in the finishing request's context)."""

    __slots__ = ("_task", "_promise")

    def __init__(self, coroutine):
        self._task = asyncio.ensure_future(coroutine)

        def executor(resolve, reject):
            self._task.add_done_callback(lambda _: resolve(None))

        self._promise = js.Promise.new(create_once_callable(executor))

    def __await__(self):
        yield from self._promise.__await__()
        return self._task.result()  # the value, or the exception the work raised


def share(coroutine) -> Flight:
    return Flight(coroutine)


def deferrer(ctx):
    """`defer(coroutine)`: run it after the response, kept alive by ctx.waitUntil."""

    def defer(coroutine) -> None:
        task = asyncio.ensure_future(coroutine)

        def executor(resolve, reject):
            task.add_done_callback(lambda _: resolve(None))

        ctx.waitUntil(js.Promise.new(create_once_callable(executor)))

    return defer


def env_getter(env):
    """Variables as the Worker sees them: strings (secrets, string vars), numbers and booleans
    (TOML vars); anything else is handed on for Config to refuse, never silently dropped."""

    def get(name: str):
        value = getattr(env, name, None)
        return None if value is None or value is jsnull else value

    return get


class AesGcmCipher:
    """AES-256-GCM for sealed cookies (entragate.sessions.Cipher); imported keys cached."""

    def __init__(self):
        self._keys = {}

    async def _key(self, secret: bytes):
        key = self._keys.get(secret)
        if key is None:
            key = await js.crypto.subtle.importKey(
                "raw", to_js(secret), _js_object({"name": "AES-GCM"}), False, to_js(["encrypt", "decrypt"]))
            self._keys[secret] = key
        return key

    async def seal(self, secret: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        algorithm = _js_object({"name": "AES-GCM", "iv": to_js(iv), "additionalData": to_js(aad), "tagLength": 128})
        sealed = await js.crypto.subtle.encrypt(algorithm, await self._key(secret), to_js(plaintext))
        return js.Uint8Array.new(sealed).to_bytes()

    async def open(self, secret: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        algorithm = _js_object({"name": "AES-GCM", "iv": to_js(iv), "additionalData": to_js(aad), "tagLength": 128})
        try:
            plaintext = await js.crypto.subtle.decrypt(algorithm, await self._key(secret), to_js(sealed))
        except JsException:
            return None  # the tag does not verify: tampered, truncated, or another key or cookie
        return js.Uint8Array.new(plaintext).to_bytes()


class RsaSigner:
    """RS256 signatures with a PKCS#8 private key (the client assertion, entragate.client_auth)."""

    def __init__(self):
        self._keys = {}

    async def sign(self, pkcs8_der: bytes, signing_input: bytes) -> bytes:
        key = self._keys.get(pkcs8_der)
        if key is None:
            key = await js.crypto.subtle.importKey(
                "pkcs8", to_js(pkcs8_der), _js_object({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}), False,
                to_js(["sign"]))
            self._keys[pkcs8_der] = key
        signature = await js.crypto.subtle.sign("RSASSA-PKCS1-v1_5", key, to_js(signing_input))
        return js.Uint8Array.new(signature).to_bytes()


class SignInPlatform:
    """What browser sign-in needs from the platform (entragate.gateway.assemble)."""

    def __init__(self):
        self.cipher = AesGcmCipher()
        self.rsa_signer = RsaSigner()
        self.random_bytes = os.urandom  # crypto.getRandomValues underneath, in Pyodide


class WebCryptoSigner:
    """ES256 signatures for the identity assertion; the private key is imported once."""

    def __init__(self, private_jwk: dict):
        self._jwk = private_jwk
        self._key = None

    async def sign(self, signing_input: bytes) -> bytes:
        if self._key is None:
            self._key = await js.crypto.subtle.importKey(
                "jwk", _js_object(dict(self._jwk, ext=False)),
                _js_object({"name": "ECDSA", "namedCurve": "P-256"}), False, to_js(["sign"]),
            )
        signature = await js.crypto.subtle.sign(
            _js_object({"name": "ECDSA", "hash": "SHA-256"}), self._key, to_js(signing_input),
        )
        return js.Uint8Array.new(signature).to_bytes()


# Looked up on first use, not at import: workerd snapshots the Worker's import-time state, and
# a JS object held from then cannot be part of the snapshot.
_object_from_entries = None


def request_headers(js_request) -> dict[str, str]:
    """Every request header in one crossing of the proxy layer instead of one or two per
    header: names lower-cased, a repeated header's values joined with ", " (what
    Headers.get returns)."""
    global _object_from_entries
    if _object_from_entries is None:
        _object_from_entries = js.Object.fromEntries
    return _object_from_entries(js_request.headers).to_py()


class OriginTimeout(Exception):
    pass


class OriginUnreachable(Exception):
    pass


# Every subrequest to the origin bypasses Cloudflare's cache: with the RequestInit option
# `cache: "no-store"` (compatibility flag cache_option_enabled, on from 2024-11-11) the runtime
# neither looks the request up in the cache nor stores the origin's answer, whatever its
# Cache-Control says, so one user's answer is never served to another (docs/ORIGIN.md, "Caching").
# workerd sends `Cache-Control: no-cache` and `Pragma: no-cache` with it when the client sent
# neither. ("no-cache" would still store answers; workerd knows no other value.)
SUBREQUEST_CACHE = "no-store"
# The fetch API refuses a body in a RequestInit for these methods, but lets a Request passed on
# as it is keep one: their body (of declared length: gateway.METHODS_NEEDING_BODY_LENGTH) goes
# with the client's Request.
_BODY_ONLY_AS_RECEIVED = frozenset({"GET", "HEAD"})
_MAX_STREAM_LENGTH = 2**53 - 1  # a JS number


def _upload_stream(content_length: str | None):
    """The native stream the request body is passed through on its way to the origin, so the
    gateway learns when the origin has all of it. A declared length is kept (FixedLengthStream:
    the origin gets the client's Content-Length, and a body that ends early is an error), any
    other body streams as it comes (IdentityTransformStream: chunked). Both pipe inside the
    runtime: no byte of the body passes through Python."""
    if content_length and content_length.isascii() and content_length.isdigit() \
            and int(content_length) <= _MAX_STREAM_LENGTH:
        return js.FixedLengthStream.new(int(content_length))
    return js.IdentityTransformStream.new()


def _retrieve(future) -> None:
    if not future.cancelled():
        future.exception()  # an upload cut short fails the fetch too, which reports it


async def forward(js_request, url: str, strip, add, timeout: float):
    """Send the request on to the origin: the client's Request (method, body byte for byte)
    with its headers edited, redirects handed back to the client rather than followed, never
    through Cloudflare's cache. The timeout is the origin's: it runs from when the origin has
    the whole request body (at once without one) until its response headers, so neither a
    client's slow upload nor a long download is cut off."""
    headers = js.Headers.new(js_request.headers)
    # The origin's Host comes from `url`: the client's Host named the gateway, and workerd
    # would send a client-set Host on within the zone.
    headers.delete("host")
    for name in strip:
        headers.delete(name)
    for name, value in add:  # after stripping: nothing the client sent can remove or replace these
        headers.set(name, value)
    controller = js.AbortController.new()
    init = {"headers": headers, "redirect": "manual", "signal": controller.signal, "cache": SUBREQUEST_CACHE,
            "cf": {}}  # the client's request.cf (where it came from) is not a subrequest option
    uploaded = None
    if js_request.body and js_request.method not in _BODY_ONLY_AS_RECEIVED:
        stream = _upload_stream(js_request.headers.get("content-length"))
        uploaded = asyncio.ensure_future(js_request.body.pipeTo(stream.writable))
        uploaded.add_done_callback(_retrieve)
        init["body"] = stream.readable
    outgoing = js.Request.new(js_request, _js_object(init))
    pending = asyncio.ensure_future(js.fetch(url, outgoing))
    try:
        if uploaded is not None:
            # While the body is still coming from the client the origin is not late; it may
            # answer before taking all of it (a 413, a 401), and that answer goes back at once.
            await asyncio.wait((pending, uploaded), return_when=asyncio.FIRST_COMPLETED)
        return await asyncio.wait_for(asyncio.shield(pending), timeout)
    except TimeoutError:
        controller.abort()
        pending.add_done_callback(_retrieve)  # the AbortError is expected
        raise OriginTimeout() from None
    except JsException as error:
        raise OriginUnreachable(error.name) from None


def with_request_id(js_response, request_id: str):
    """The origin's response with the gateway's request id added. A WebSocket upgrade (101)
    is passed on as it is: re-wrapping it would detach the socket."""
    if js_response.status == 101:
        return js_response
    response = js.Response.new(js_response.body, js_response)
    response.headers.set("x-request-id", request_id)
    return response


def with_cors(js_response, headers):
    """The response (from `with_request_id`) with a route's CORS headers: the origin's own
    `Access-Control-*` headers are replaced (the gateway answers CORS for the route), `Vary`
    is added to. A WebSocket upgrade (101) is passed on as it is."""
    if js_response.status == 101:
        return js_response
    response_headers = js_response.headers
    theirs = [name for name in response_headers.keys() if name.startswith("access-control-")]
    for name in theirs:
        response_headers.delete(name)
    for name, value in headers:
        if name == "vary":
            response_headers.append(name, value)
        else:
            response_headers.set(name, value)
    return js_response


# What a refusal reads of the request body before answering (platform_io.drain_body).
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


async def drain_body(js_request) -> None:
    """Read and discard the request body the gateway is refusing, up to DRAIN_BYTES and
    DRAIN_SECONDS. workerd closes a connection whose request body was left unread, and an
    HTTP/1.1 client still sending its body (Connect's Node transport streams it after the
    headers) then gets a broken pipe instead of the answer (tests/runtime/test_grpc.py). A
    larger or slower body is left, as before."""
    if not js_request.body or js_request.bodyUsed:
        return
    try:
        await asyncio.wait_for(read_capped(js_request.body, DRAIN_BYTES), DRAIN_SECONDS)
    except (TimeoutError, JsException):
        pass
