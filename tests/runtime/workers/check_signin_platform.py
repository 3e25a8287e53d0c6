"""The platform pieces browser sign-in uses, in workerd: AES-256-GCM sealing (and what does not
open), RS256 with a PKCS#8 key, KV with an expiration, the capped body reader, and a
Response with several Set-Cookie headers."""

import base64

import js
from pyodide.ffi import to_js
from workers import Response, env

import platform_io


async def run(payload):
    cipher = platform_io.AesGcmCipher()
    key, other_key = bytes(range(32)), bytes(range(1, 33))
    iv = bytes(12)
    sealed = await cipher.seal(key, iv, b"hello session", b"__Host-entragate-session")
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    opened = {
        "right": (await cipher.open(key, iv, sealed, b"__Host-entragate-session")).decode(),
        "other_cookie_name": await cipher.open(key, iv, sealed, b"__Host-entragate-signin-"),
        "other_key": await cipher.open(other_key, iv, sealed, b"__Host-entragate-session"),
        "tampered": await cipher.open(key, iv, tampered, b"__Host-entragate-session"),
        "truncated": await cipher.open(key, iv, sealed[:-1], b"__Host-entragate-session"),
    }
    signature = await platform_io.RsaSigner().sign(base64.b64decode(payload["pkcs8"]), b"signing input")
    kv = platform_io.KvStore(env.JWKS_CACHE)
    await kv.put("entragate:test:ttl", "kept", ttl=120)
    capped = await platform_io.read_capped(js.Response.new("0123456" * 5).body, 10)
    whole = await platform_io.read_capped(js.Response.new("0123456789").body, 10)
    response = Response("x", headers=[("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2; Path=/"), ("x-y", "z")])
    return {
        "sealed_length": len(sealed), "opened": {k: v for k, v in opened.items()},
        "signature": base64.b64encode(signature).decode(), "kv": await kv.get("entragate:test:ttl"),
        "capped": capped, "whole": whole.decode(),
        "set_cookies": list(response.js_object.headers.getSetCookie()),
    }

