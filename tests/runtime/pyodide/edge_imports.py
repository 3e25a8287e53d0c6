"""Runs inside Pyodide: importing the Worker loads no module the edge does not need, and the
lazy `calendar` stand-in behaves like the real module once used. Prints one JSON line."""

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

import jwt.api_jwt  # noqa: E402

timegm = jwt.api_jwt.timegm((2026, 11, 24, 0, 0, 0, 0, 0, 0))
import calendar  # noqa: E402

print(json.dumps({
    "import_ms": import_ms,
    "loaded": loaded,
    "calendar_was_lazy": calendar_was_lazy,
    "timegm": timegm,
    "month_name": calendar.month_name[3],
    "real_calendar_now": type(sys.modules["calendar"]).__name__,
}))
