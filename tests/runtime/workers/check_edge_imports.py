"""Importing the Worker (in workerd) loads no module the edge does not need, the lazy
`calendar` stand-in behaves like the real module once used, and PyJWT (with its algorithms
module replaced) verifies nothing itself. Must be the first check run in its isolate."""

import sys


async def run(payload):
    before = set(sys.modules)
    import entry  # noqa: F401

    loaded = sorted(set(sys.modules) - before)
    calendar_was_lazy = type(sys.modules["calendar"]).__name__ == "_LazyCalendar"

    # workerd snapshots the Worker's import-time state: the Worker's modules must hold no JS
    # object then (the `js` module itself is the platform's to restore).
    from pyodide.ffi import JsProxy

    js_objects_held = sorted(
        f"{module_name}.{name}"
        for module_name in loaded if module_name in ("entry", "platform_io") or module_name.startswith("entragate")
        for name, value in vars(sys.modules[module_name]).items()
        if isinstance(value, JsProxy) and name != "js"
    )

    import base64
    import calendar
    import hashlib
    import hmac

    import jwt.api_jwt

    timegm = jwt.api_jwt.timegm((2026, 11, 24, 0, 0, 0, 0, 0, 0))

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    # PyJWT at the edge has no algorithm of its own: asked to verify (none, HS256), it refuses.
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(b'{"sub":"x"}')
    hs256_token = signing_input + "." + b64(hmac.new(b"secret", signing_input.encode(), hashlib.sha256).digest())
    none_token = b64(b'{"alg":"none"}') + "." + b64(b'{"sub":"x"}') + "."
    refusals = {}
    for name, token, algorithms in (("HS256", hs256_token, ["HS256"]), ("none", none_token, ["none"])):
        try:
            jwt.decode(token, "secret", algorithms=algorithms)
            refusals[name] = "accepted"
        except jwt.InvalidAlgorithmError:
            refusals[name] = "InvalidAlgorithmError"

    return {
        "python": sys.version.split()[0],
        "loaded": loaded,
        "calendar_was_lazy": calendar_was_lazy,
        "js_objects_held": js_objects_held,
        "pyjwt_algorithms": jwt.api_jws.PyJWS().get_algorithms(),
        "pyjwt_refusals": refusals,
        "timegm": timegm,
        "month_name": calendar.month_name[3],
        "real_calendar_now": type(sys.modules["calendar"]).__name__,
    }
