"""The platform adapters that replaced per-call JS crossings read what the JS APIs they stand
for read (in workerd)."""

import js
from pyodide.ffi import to_js

import platform_io


async def run(payload):
    headers = js.Headers.new()
    for name, value in payload["headers"]:
        headers.append(name, value)
    request = js.Request.new("https://gw.example/p", to_js({"headers": headers}, dict_converter=js.Object.fromEntries))
    read = platform_io.request_headers(request)
    return {
        "clock_minus_date_now": platform_io.clock() - js.Date.now() / 1000,
        "headers": read,
        "get": {name: request.headers.get(name) for name in read},
    }
