"""The benchmark Worker: bench/pipeline_bench.py's scenarios run inside workerd, beside the jose
pipeline in a JavaScript Worker (bench/workerd_jose.mjs) in the same workerd, reached through
the service binding JOSE. bench/run.py starts both under `wrangler dev` (offline) and drives them.

    POST /imports      -> the Worker's modules' import time (ask first, in a fresh isolate)
    POST /setup        the setup JSON bench/run.py writes (tokens, keys, config)
    POST /pipeline     {"repeat", "batch", "fresh_batch"} -> the scenarios, µs per request
    POST /breakdown    {"batch"} -> where a fresh token's time goes (pipeline_bench.fresh_breakdown)
    POST /primitives   {"n"} -> what single operations cost from Python in workerd
    POST /jose/...     handed to the JavaScript Worker

workerd's clock advances in whole milliseconds, so requests are timed in batches (see
pipeline_bench.timed): each figure is a batch mean, and the summary is over batch means.
"""

import asyncio
import json
import sys
import time

import js
from pyodide.ffi import to_js
from workers import Response, WorkerEntrypoint

SETUP = {}
IMPORTS = {}


def import_worker() -> dict:
    """Import src/entry.py and every module it imports (the compiled policy included), timed,
    on this isolate's first request. Not at the top level: workerd's clock stands still while
    a Worker's modules are evaluated at the isolate's start (an import there reads 0 ms), and
    nothing here imports the gateway's modules before this."""
    if not IMPORTS:
        before = set(sys.modules)
        started = time.perf_counter()
        import entry  # noqa: F401

        IMPORTS["worker_import_ms"] = round((time.perf_counter() - started) * 1000, 1)
        IMPORTS["modules_loaded"] = len(set(sys.modules) - before)
        IMPORTS["python"] = sys.version.split()[0]
    return IMPORTS


def _json(value) -> Response:
    return Response(json.dumps(value), headers={"content-type": "application/json"})


async def primitives(n: int) -> dict:
    """µs per operation, each a loop of n timed as one."""
    import platform_io
    from entragate.pyjwt import base64url_decode

    results = {}

    async def loop(name, step):
        started = time.perf_counter()
        for _ in range(n):
            await step()
        results[name] = round((time.perf_counter() - started) * 1e6 / n, 1)

    async def sync_call():
        js.Math.max(1, 2)

    async def loop_turn():
        await asyncio.sleep(0)

    async def resolved_promise():
        await js.Promise.resolve(None)

    setup = SETUP
    jwk = next(key for key in setup["keys"] if key["kid"] == setup["signing_kid"])
    token = setup["repeated_token"]
    signing_input = token.rpartition(".")[0].encode("ascii")
    signature = base64url_decode(token.rpartition(".")[2].encode("ascii"))
    verifier = platform_io.WebCryptoVerifier()
    key = await verifier._import("RS256", jwk)
    subtle_verify = js.crypto.subtle.verify

    async def webcrypto_verify():
        assert await subtle_verify("RSASSA-PKCS1-v1_5", key, to_js(signature), to_js(signing_input))

    async def nothing():
        pass

    # Keys shared with bench/workerd_jose.mjs's primitives: bench/run.py sets them side by side.
    await loop("a Python coroutine awaited", nothing)
    await loop("a synchronous JS call (js.Math.max: three proxy crossings)", sync_call)
    # Pyodide's event loop runs each resumed task as a JS task of its own (scheduleCallback:
    # a MessageChannel message where there is one): one turn, no JS promise involved.
    await loop("one event-loop turn (Python: asyncio.sleep(0); JS: a MessageChannel message)", loop_turn)
    await loop("await of an already resolved JS promise", resolved_promise)
    await loop("crypto.subtle.verify RS256, called and awaited", webcrypto_verify)
    return results


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = "/" + request.url.split("/", 3)[3].partition("?")[0]
        if path.startswith("/jose/"):
            answer = await self.env.JOSE.fetch(request.js_object)
            return Response(await answer.text(), status=answer.status, headers={"content-type": "application/json"})
        import_worker()  # before pipeline_bench, which imports the gateway's modules
        import pipeline_bench

        body = json.loads(await request.text() or "{}")
        if path == "/imports":
            return _json(IMPORTS)
        if path == "/setup":
            SETUP.clear()
            SETUP.update(body)
            return _json({"ok": True, "fresh_tokens": len(SETUP["fresh_tokens"])})
        if path == "/pipeline":
            return _json(await pipeline_bench.scenarios(SETUP, body["repeat"], body["batch"], body["fresh_batch"]))
        if path == "/breakdown":
            return _json(await pipeline_bench.fresh_breakdown(SETUP, body["batch"]))
        if path == "/primitives":
            return _json(await primitives(body["n"]))
        return Response("not found", status=404)
