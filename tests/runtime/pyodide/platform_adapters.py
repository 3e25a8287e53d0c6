"""Runs inside Pyodide: the platform adapters that replaced per-call JS crossings read what
the JS APIs they stand for read. Prints one JSON line."""

import json

import js
from pyodide.ffi import to_js

import platform_io

headers = js.Headers.new()
for name, value in [("Host", "gw.example"), ("X-Dup", "one"), ("x-dup", "two"), ("Authorization", "Bearer a.b.c"),
                    ("X-Entragate-User-Oid", "forged")]:
    headers.append(name, value)
request = js.Request.new("https://gw.example/p", to_js({"headers": headers}, dict_converter=js.Object.fromEntries))
read = platform_io.request_headers(request)

print(json.dumps({
    "clock_minus_date_now": platform_io.clock() - js.Date.now() / 1000,
    "headers": read,
    "get": {name: request.headers.get(name) for name in read},
}))
