"""`make demo`'s configuration (scripts/demo.py): the examples' policy, whose /app/ route signs
browsers in, with what sign-in needs against the mock tenant. Checked here the way the Worker
and `tools/entragate.py config` read it, and by the gateway's own code on CPython, which sends
a browser to the mock tenant's sign-in page (tests/runtime/test_demo.py: the same in workerd)."""

import asyncio
import json
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from fixtures.demo_script import demo
from entragate_mocks.echo_origin import EchoOrigin
from entragate_mocks.mock_entra import MockTenant
from entragate_tools.compiler import compile_policies
from entragate_tools.config_check import check
from entragate_tools.host_crypto import HostSignInPlatform, HostVerifier
from entragate_tools.host_io import MemoryStore, UrllibHttp
from fixtures.examples import EXAMPLE_POLICIES
from entragate_mocks.stack import stack_variables

from entragate.config import Config
from entragate.denials import Answer
from entragate.gateway import IncomingRequest, assemble
from entragate.upstream import referenced_groups

GATEWAY = "http://127.0.0.1:8787"




@pytest.fixture(scope="module")
def services():
    with MockTenant() as tenant, EchoOrigin() as origin:
        yield tenant, origin


def demo_variables(tenant, origin) -> dict:
    """The variables the demo's Stack hands the Worker: demo_settings() as Stack passes them on."""
    settings = demo.demo_settings()
    assert settings.pop("policies") == EXAMPLE_POLICIES and settings.pop("watch") is True
    return stack_variables(tenant, origin, **settings)


def test_the_demo_runs_the_examples_whose_app_route_signs_people_in():
    policy = compile_policies(EXAMPLE_POLICIES).policy
    route = policy.match("GET", "127.0.0.1", demo.SIGNIN_PATH)
    assert route is not None and route.name == "app" and route.login
    assert "/app/" in demo.SIGNIN_PATH


def test_the_demos_variables_have_no_problem(services):
    tenant, origin = services
    variables = demo_variables(tenant, origin)
    report = check(variables, login_routes=True)
    assert (report.problems, report.warnings) == ([], [])
    config = Config.from_env(variables.get)
    assert config.client.client_id == tenant.client_id and config.client.certificate is not None
    assert config.client.secret is None and config.sessions is not None
    assert config.authority == tenant.authority and variables["ORIGIN_URL"] == origin.url
    assert demo.demo_settings()["SESSION_KEYS"] != demo.demo_settings()["SESSION_KEYS"]  # fresh each run


def test_the_demo_gateway_sends_a_browser_to_the_mock_tenants_sign_in_page(services):
    tenant, origin = services
    compiled = compile_policies(EXAMPLE_POLICIES)
    config = Config.from_env(demo_variables(tenant, origin).get)
    gateway = assemble(config, compiled.policy, http=UrllibHttp(), store=MemoryStore(), verifier=HostVerifier(),
                       clock=time.time, log=lambda message: None, policy_groups=referenced_groups(compiled.data),
                       platform=HostSignInPlatform())
    request = IncomingRequest(method="GET", url=GATEWAY + demo.SIGNIN_PATH, request_id="r", header_names=("accept",),
                              accept="text/html", sec_fetch_mode="navigate")
    answer = asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))
    assert isinstance(answer, Answer) and answer.status == 302, answer
    location = dict(answer.headers)["location"]
    assert location.startswith(f"{tenant.authority}/{tenant.tenant_id}/oauth2/v2.0/authorize?")
    query = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    assert query["client_id"] == tenant.client_id
    assert query["redirect_uri"] == GATEWAY + "/.well-known/entragate/callback"
    assert query["code_challenge_method"] == "S256"
    # The page a browser then sees: the mock tenant's test users to pick from.
    with urllib.request.urlopen(location, timeout=10) as page:
        html = page.read().decode()
    assert page.status == 200
    assert all(user.name in html for user in tenant.users.values())
    # A script on the same route is never redirected.
    script = IncomingRequest(method="GET", url=GATEWAY + demo.SIGNIN_PATH, request_id="r", header_names=("accept",),
                             accept="application/json", sec_fetch_mode="cors")
    refused = asyncio.run(gateway.handle(script, lambda coroutine: coroutine.close()))
    assert refused.status == 401 and json.loads(refused.body)["error"] == "missing_token"
