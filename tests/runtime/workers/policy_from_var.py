"""The real Worker (src/entry.py) enforcing a policy a test compiled, not the examples the Stack gives it.

The test compiles its own policy directory on the host (entragate_tools.compiler) and passes
the JSON as `--var TEST_POLICY_JSON:...`; that is how it can name origins whose ports are only
known at test time. This module stands in for the generated `compiled_policy` module before
entry.py imports it, and re-exports entry's `Default`: every request runs entry.py's code.
"""

import sys
import types

from workers import env  # module-scope env, as in the Workers runtime

compiled_policy = types.ModuleType("compiled_policy")
compiled_policy.POLICY_JSON = str(env.TEST_POLICY_JSON)
compiled_policy.POLICY_VERSION = "test"
sys.modules["compiled_policy"] = compiled_policy

from entry import Default  # noqa: E402  (after compiled_policy is in place)

__all__ = ["Default"]
