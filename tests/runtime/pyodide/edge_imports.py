"""Runs inside Pyodide: importing the Worker loads no module the edge does not need, the lazy
`calendar` stand-in behaves like the real module once used, and PyJWT (with its algorithms
module replaced) verifies nothing itself. Prints one JSON line."""

import json
import sys
import time

import workers  # noqa: F401  (the platform's SDK, imported before the Worker as in workerd)

before = set(sys.modules)
started = time.perf_counter()
import entry  # noqa: E402,F401

import_ms = (time.perf_counter() - started) * 1000
loaded = sorted(set(sys.modules) - before)
calendar_was_lazy = type(sys.modules["calendar"]).__name__ == "_LazyCalendar"

# workerd snapshots the Worker's import-time state: the Worker's modules must hold no JS object
# then (the `js` module itself is the platform's to restore).
from pyodide.ffi import JsProxy  # noqa: E402

js_objects_held = sorted(
    f"{module_name}.{name}"
    for module_name in loaded if module_name in ("entry", "platform_io") or module_name.startswith("entragate")
    for name, value in vars(sys.modules[module_name]).items()
    if isinstance(value, JsProxy) and name != "js"
)

import jwt.api_jwt  # noqa: E402

timegm = jwt.api_jwt.timegm((2026, 11, 24, 0, 0, 0, 0, 0, 0))
import calendar  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402


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

print(json.dumps({
    "import_ms": import_ms,
    "loaded": loaded,
    "calendar_was_lazy": calendar_was_lazy,
    "js_objects_held": js_objects_held,
    "pyjwt_algorithms": jwt.api_jws.PyJWS().get_algorithms(),
    "pyjwt_refusals": refusals,
    "timegm": timegm,
    "month_name": calendar.month_name[3],
    "real_calendar_now": type(sys.modules["calendar"]).__name__,
}))
