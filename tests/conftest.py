"""Shared by every test layer.

- Policies: the product's tests run on their own policies, the examples (examples/policies/),
  compiled where each test needs them (host: entragate_tools.compiler; runtime: the Stack gives
  each Worker its own compiled_policy.py). They never read the user's policies/ nor the
  src/compiled_policy.py that `make policy` builds from it; `make test` checks those with the
  user's own cases (`tools/entragate.py test`).
- Hypothesis: examples are derived from each test's name (derandomize), so `make test` and
  CI give the same verdict on the same code. `make fuzz` explores with fresh random examples.
"""

import os

from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
