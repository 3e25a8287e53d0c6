"""Real-browser layer: headless Chromium (Debian's `chromium`) driven by Playwright, against the
whole stack (the Worker in workerd, the mock tenant, the echo origin). Skipped, with the
reason, when there is no Chromium — unless ENTRAGATE_REQUIRE_BROWSER is set (CI sets it), in
which case a missing browser fails the tests."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a machine without a network or a display (the probe's, in /work/.library).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/browser/" in str(item.path):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_executable():
    if CHROMIUM is None:
        if os.environ.get("ENTRAGATE_REQUIRE_BROWSER"):
            pytest.fail("ENTRAGATE_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium); .ci/run installs it")
    return CHROMIUM


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in this thread
# while it is open, and every asyncio.run() after it in the session would refuse to start.
@pytest.fixture(scope="module")
def chromium(chromium_executable):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
