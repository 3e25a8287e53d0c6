"""Shared by every test layer.

- Policies: the tests (and the runner they start with --no-build) load src/compiled_policy.py,
  so it is compiled from policies/ once per session, as `make test` and wrangler's [build]
  do: a bare `pytest` after editing a policy tests the edited policy, never a stale one.
- Hypothesis: examples are derived from each test's name (derandomize), so `make test` and
  CI give the same verdict on the same code. `make fuzz` explores with fresh random examples.
"""

import io
import os
from pathlib import Path

from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_sessionstart(session):
    from entragate_tools.cli import main

    root = Path(__file__).resolve().parents[1]
    report = io.StringIO()
    status = main(["compile", "--policies", str(root / "policies"), "--out", str(root / "src" / "compiled_policy.py")],
                  out=report, err=report)
    if status != 0:
        raise SystemExit(f"policies/ do not compile (exit {status}):\n{report.getvalue()}")
