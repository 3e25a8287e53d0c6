"""The benchmark Worker: bench/pipeline_bench.py's scenarios run inside workerd, beside the jose
pipeline in a JavaScript Worker (bench/workerd_jose.mjs) in the same workerd, reached through
the service binding JOSE. bench/run.py starts both under `wrangler dev` (offline) and drives them.

    POST /setup        the setup JSON bench/run.py writes (tokens, keys, config)
    POST /pipeline     {"repeat", "batch", "fresh_batch"} -> the scenarios, µs per request
    POST /primitives   {"n"} -> what single operations cost from Python in workerd
    POST /jose/...     handed to the JavaScript Worker

workerd's clock advances in whole milliseconds, so requests are timed in batches (see
pipeline_bench.timed): each figure is a batch mean, and the summary is over batch means.
"""

import json
import time

import js
from pyodide.ffi import to_js
from workers import Response, WorkerEntrypoint

import pipeline_bench
from entragate.pyjwt import base64url_decode
import platform_io

SETUP = {}


def _json(value) -> Response:
    return Response(json.dumps(value), headers={"content-type": "application/json"})


async def primitives(n: int) -> dict:
    """µs per operation, each a loop of n timed as one."""
    results = {}

    async def loop(name, step):
        started = time.perf_counter()
        for _ in range(n):
            await step()
        results[name] = round((time.perf_counter() - started) * 1e6 / n, 1)

    async def sync_call():
        js.Math.max(1, 2)

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

    await loop("a Python coroutine awaited (for scale)", nothing)
    await loop("a synchronous JS call (Math.max)", sync_call)
    await loop("await of an already resolved JS promise", resolved_promise)
    await loop("crypto.subtle.verify RS256, called and awaited from Python", webcrypto_verify)
    return results


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = "/" + request.url.split("/", 3)[3].partition("?")[0]
        if path.startswith("/jose/"):
            answer = await self.env.JOSE.fetch(request.js_object)
            return Response(await answer.text(), status=answer.status, headers={"content-type": "application/json"})
        body = json.loads(await request.text() or "{}")
        if path == "/setup":
            SETUP.clear()
            SETUP.update(body)
            return _json({"ok": True, "fresh_tokens": len(SETUP["fresh_tokens"])})
        if path == "/pipeline":
            return _json(await pipeline_bench.scenarios(SETUP, body["repeat"], body["batch"], body["fresh_batch"]))
        if path == "/primitives":
            return _json(await primitives(body["n"]))
        return Response("not found", status=404)
