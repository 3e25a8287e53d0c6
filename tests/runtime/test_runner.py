"""The offline runner itself: real Pyodide 3.14, real SDK, readable unhandled errors."""

import json
import tempfile
from pathlib import Path

import pytest
from fixtures.stack import Runner, environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))


@pytest.fixture(scope="module")
def raising_runner():
    with tempfile.TemporaryDirectory() as state:
        runner = Runner({}, persist_to=Path(state), main="tests/runtime/workers/raising.py")
        yield runner
        runner.stop()


def test_ready_line_reports_python_314_and_startup_time(raising_runner):
    ready = raising_runner.ready
    assert ready["python"].startswith("3.14.")
    assert ready["main"] == "tests/runtime/workers/raising.py"
    assert ready["startup_ms"] > 0 and ready["import_ms"] > 0


def test_unhandled_exception_is_a_500_with_request_id_logged_once_readably(raising_runner):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(raising_runner.url + "/some/path", timeout=30)
    error = caught.value
    body = json.loads(error.read())
    assert error.code == 500 and body["error"] == "internal_error"
    assert body["request_id"] == error.headers["x-request-id"]
    assert "boom" not in json.dumps(body), "no internal details to the client"

    import time
    deadline = time.monotonic() + 5
    while "ValueError" not in raising_runner.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    log = raising_runner.stderr
    assert log.count(f"unhandled error (request {body['request_id']})") == 1
    assert "ValueError: boom at http://127.0.0.1" in log
    assert 'File "/app/tests/runtime/workers/raising.py"' in log
    assert len(log) < 20_000, "the minified Pyodide source must not be dumped"
