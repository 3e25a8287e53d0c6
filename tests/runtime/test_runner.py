"""The runtime the tests and `make dev` use: the real workerd, offline, running the Python that
wrangler.toml's compatibility_date selects (3.14), and what it does with an unhandled error."""

import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from entragate_mocks.stack import Runner, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))


@pytest.fixture(scope="module")
def probe():
    with tempfile.TemporaryDirectory() as state:
        runner = Runner({}, persist_to=Path(state), main="tests/runtime/workers/probe.py")
        yield runner
        runner.stop()


def test_the_worker_runs_python_314_as_the_compatibility_date_selects(probe):
    with urllib.request.urlopen(probe.url + "/version", timeout=30) as response:
        assert response.read().decode().startswith("3.14.")
    assert probe.ready["main"] == "tests/runtime/workers/probe.py" and probe.ready["startup_ms"] > 0
    # runner/dev.py ran it offline, with the development bundle built for this workerd.
    assert '"entragate_dev": "offline"' in probe.output and "build/pyodide-bundle/workerd-" in probe.output


def test_an_unhandled_exception_is_a_500_and_its_traceback_is_logged(probe):
    """The gateway itself never lets one escape (an audited 500 internal_error, tests/host);
    this is the runtime's own answer, which `wrangler dev` shows with the traceback and the
    edge as Cloudflare's error page."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(probe.url + "/some/path", timeout=30)
    assert caught.value.code == 500
    deadline = time.monotonic() + 5
    while "ValueError: boom at http://127.0.0.1" not in probe.output and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ValueError: boom at http://127.0.0.1" in probe.output
    assert 'probe.py", line 10, in _explode' in probe.output
