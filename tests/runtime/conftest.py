"""Runtime layer: the Worker's code in real Pyodide 3.14 under Node (runner/)."""

import uuid

import pytest
from fixtures.pyodide import SCRATCH


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/runtime/" in str(item.path):
            item.add_marker(pytest.mark.runtime)


@pytest.fixture
def scratch_file():
    """A file under the project (the only host folder Pyodide sees), removed afterwards."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / f"{uuid.uuid4().hex}.json"
    yield path
    path.unlink(missing_ok=True)
