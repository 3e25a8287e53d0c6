"""Platform adapters: the only module besides entry.py that touches `js` (Workers APIs).

Each adapter implements one small interface of the pure core: HTTP JSON fetch (keys),
key-value store (KV), signature verification (WebCrypto), clock and console.
"""

import asyncio
import json
import secrets
import time
from urllib.parse import urlencode

import js
from pyodide.ffi import JsException, create_once_callable, jsnull, to_js

from entragate.entra import HttpFailure
from entragate.keys import KeyFetchError

MAX_DOCUMENT_BYTES = 512 * 1024  # Entra's discovery and key documents are a few KB
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
    every option passed to the platform.)"""

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
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
                raise KeyFetchError(f"{url} document too large")
            text = await response.text()
        except JsException as error:
            raise KeyFetchError(f"{url} fetch failed: {error.name}") from None
        if len(text) > MAX_DOCUMENT_BYTES:
            raise KeyFetchError(f"{url} document too large")
        try:
            return json.loads(text)
        except ValueError:
            raise KeyFetchError(f"{url} did not return JSON") from None

    async def post_form(self, url: str, fields: dict, timeout: float):
        """POST an HTML form to a token endpoint: (status, JSON object or None). Never follows a
        redirect; every failure to get an answer is an HttpFailure."""
        init = _js_object({
            "method": "POST",
            "headers": {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
            "body": urlencode(fields),
            "redirect": "manual",
            "signal": js.AbortSignal.timeout(int(timeout * 1000)),
        })
        try:
            response = await js.fetch(url, init)
            body = await read_capped(response.body, MAX_DOCUMENT_BYTES)
        except JsException as error:
            raise HttpFailure(f"{url} fetch failed: {error.name}") from None
        if body is None:
            raise HttpFailure(f"{url} answer too large")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        return response.status, document if isinstance(document, dict) else None


async def read_capped(stream, limit: int) -> bytes | None:
    """A body stream read to its end, or None (the stream cancelled) past `limit` bytes."""
    if stream is None or stream is jsnull:
        return b""
    reader = stream.getReader()
    chunks, size = [], 0
    while True:
        chunk = await reader.read()
        if chunk.done:
            return b"".join(chunks)
        data = chunk.value.to_bytes()
        size += len(data)
        if size > limit:
            await reader.cancel()
            return None
        chunks.append(data)


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
        self.random_bytes = secrets.token_bytes


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


async def forward(js_request, url: str, strip, add, timeout: float):
    """Send the request on to the origin: same method and streamed body, headers edited,
    redirects handed back to the client rather than followed. The timeout covers the wait
    for the response headers only, so a long download is never cut off."""
    headers = js.Headers.new(js_request.headers)
    # The origin's Host comes from `url`: the client's Host named the gateway, and workerd
    # would send a client-set Host on within the zone.
    headers.delete("host")
    for name in strip:
        headers.delete(name)
    for name, value in add:
        headers.set(name, value)
    controller = js.AbortController.new()
    init = {"method": js_request.method, "headers": headers, "redirect": "manual", "signal": controller.signal}
    if js_request.body:
        init["body"] = js_request.body
    pending = asyncio.ensure_future(js.fetch(url, _js_object(init)))
    try:
        return await asyncio.wait_for(asyncio.shield(pending), timeout)
    except TimeoutError:
        controller.abort()
        pending.add_done_callback(lambda future: future.exception())  # the AbortError is expected
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
