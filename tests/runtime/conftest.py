"""Runtime layer: the Worker's code in the real workerd, under `wrangler dev`, offline
(runner/dev.py; tools/entragate_mocks/stack.py)."""

import json
import tempfile
import urllib.request
from pathlib import Path

import pytest
from entragate_mocks.stack import Runner, environment_ok


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/runtime/" in str(item.path):
            item.add_marker(pytest.mark.runtime)


class EdgeChecks:
    """Checks of the edge code run inside workerd (tests/runtime/workers/checks.py)."""

    def __init__(self, runner: Runner):
        self.runner = runner
        # Importing the Worker must be the first thing its isolate does: run it now.
        self.edge_imports = self.run("edge_imports", {})

    def run(self, name: str, payload):
        request = urllib.request.Request(f"{self.runner.url}/{name}", data=json.dumps(payload).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())


@pytest.fixture(scope="session")
def edge_checks():
    reason = environment_ok()
    if reason is not None:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory() as state:
        runner = Runner({}, persist_to=Path(state), main="tests/runtime/workers/checks.py")
        try:
            yield EdgeChecks(runner)
        finally:
            runner.stop()
