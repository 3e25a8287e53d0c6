"""The real Worker (src/entry.py), handed each request as workerd's own HTTP server hands it.

Under `wrangler dev` a proxy Worker stands in front of the Worker and passes every request on
with its own fetch, whose HTTP client drops Connection, Keep-Alive, TE, Trailer and Upgrade
(it writes its own) and sends a GET's chunked body as no body. workerd's HTTP server passes all
of them to a Worker (docs/SECURITY.md, "Hop-by-hop headers"), and so may the edge: the gateway
must handle them itself. A test sends what the proxy would drop in `x-test-as-served`, JSON
{"set": [[name, value], ...], "delete": [name, ...]}; this module puts that back on the request
(the body and everything else unchanged) and hands it to entry's Default. Requests without
the header run entry.py as they came.
"""

import json

import js
from pyodide.ffi import to_js
from workers import Request

from entry import Default as Gateway

TEST_HEADER = "x-test-as-served"


class Default(Gateway):
    async def fetch(self, request):
        js_request = request.js_object
        packed = js_request.headers.get(TEST_HEADER)
        if packed:
            edits = json.loads(packed)
            headers = js.Headers.new(js_request.headers)
            headers.delete(TEST_HEADER)
            for name in edits.get("delete", []):
                headers.delete(name)
            for name, value in edits.get("set", []):
                headers.append(name, value)
            # A Request passed on with new headers keeps its method and body (a GET's too).
            init = to_js({"headers": headers}, dict_converter=js.Object.fromEntries)
            request = Request(js.Request.new(js_request, init))
        return await super().fetch(request)
