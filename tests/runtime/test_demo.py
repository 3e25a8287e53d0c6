"""`make demo` in workerd (scripts/demo.py's own Stack): it starts with no configuration
problem, signs a browser in against the mock tenant and lands it on the echo origin, serves the
examples' bearer routes, and reloads the policy when a file in its folder changes."""

import shutil
import textwrap
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
from fixtures.demo_script import demo
from fixtures.examples import EXAMPLE_POLICIES
from fixtures.signin_stack import Browserless, echo
from entragate_mocks.stack import environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))





@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """A copy of the examples, so the reload test can edit it."""
    copy = tmp_path_factory.mktemp("demo") / "policies"
    shutil.copytree(EXAMPLE_POLICIES, copy)
    return copy


@pytest.fixture(scope="module")
def stack(policies, tmp_path_factory):
    running = demo.demo_stack(0, tmp_path_factory.mktemp("demo-state"), policies=policies)
    yield running
    running.stop()


def test_the_demo_starts_with_no_configuration_problem(stack):
    assert "configuration problem" not in stack.runner.output
    assert stack.variables["ENTRA_CLIENT_CERTIFICATE"] and stack.variables["SESSION_KEYS"]
    with urllib.request.urlopen(stack.url + "/.well-known/entragate/health", timeout=30) as response:
        assert response.status == 200


def test_a_browser_is_sent_to_the_mock_tenant_and_lands_on_the_echo_origin_signed_in(stack):
    status, headers = demo.navigate(stack.url, demo.SIGNIN_PATH, {"sec-fetch-mode": "navigate", "accept": "text/html"})
    location = headers["location"]
    assert status == 302 and location.startswith(f"{stack.tenant.authority}/{stack.tenant.tenant_id}/oauth2/v2.0/authorize?")
    assert stack.runner.audit_line(headers["x-request-id"])["rule"] == "app"

    browser = Browserless()
    url, status, _, data = browser.sign_in(stack, demo.SIGNIN_PATH + "page?x=1", user="grace")
    assert (status, url) == (200, stack.url + "/app/page?x=1")
    seen = echo(data)
    assert seen["raw_target"] == "/app/page?x=1"
    assert seen["by_name"]["x-entragate-auth-method"] == ["session"]
    assert seen["by_name"]["x-entragate-name"] == ["Grace Hopper"]
    assert seen["by_name"]["x-entragate-rule"] == ["app"]
    assert urlsplit(stack.origin.url).port != urlsplit(stack.url).port  # the echo origin answered, via the gateway


def test_the_examples_bearer_routes_answer_as_the_banner_says(stack):
    user = stack.tenant.mint()
    assert stack.request("GET", "/api/hello?name=ada", token=user)[0] == 200
    assert stack.request("GET", "/api/hello")[0] == 401
    assert stack.request("POST", "/api/items", token=user, body=b"{}")[0] == 403
    assert stack.request("GET", "/healthz")[0] == 200
    assert stack.request("GET", "/elsewhere", token=user)[0] == 403


def test_an_edited_policy_is_recompiled_and_reloaded(stack, policies):
    assert stack.request("GET", "/hello-from-an-edit")[0] == 403
    (policies / "edit.toml").write_text(textwrap.dedent("""
        [[routes]]
        name = "edit"
        paths = ["/hello-from-an-edit"]
        public = true
    """))
    deadline = time.monotonic() + 90
    while stack.request("GET", "/hello-from-an-edit")[0] != 200:
        assert time.monotonic() < deadline, stack.runner.output[-3000:]
        time.sleep(1)
    assert "compiled 11 routes" in stack.runner.output
