"""The runner configured like wrangler: a wrangler.toml given with --config (its [vars], TOML
numbers and booleans included, and its KV bindings), the .dev.vars beside it, and --var on
top, in that order of precedence. A configuration the gateway cannot run with is an audited
500 gateway_misconfigured."""

import json
import re
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from entragate_mocks.echo_origin import EchoOrigin
from entragate_mocks.mock_entra import MockTenant
from entragate_tools.host_crypto import new_session_key
from entragate_mocks.stack import PROJECT, Runner, environment_ok, worker_source

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def services():
    tenant = MockTenant().start()
    origin = EchoOrigin().start()
    yield tenant, origin
    origin.stop()
    tenant.stop()


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(value)


def write_wrangler_toml(directory: Path, variables: dict, *, kv: bool = True) -> Path:
    """The project's wrangler.toml, moved to `directory` beside a src/ of its own (src/entry.py
    and the examples' compiled policy: entragate_mocks.stack.worker_source), [build] left out, [vars]
    replaced, and the KV bindings kept or dropped."""
    project = tomllib.loads((PROJECT / "wrangler.toml").read_text())
    worker_source(directory)
    lines = [f"{key} = {_toml_value(project[key])}" for key in ("name", "compatibility_date", "compatibility_flags")]
    lines.append(f"main = {_toml_value(project['main'])}")
    if kv:
        for namespace in project["kv_namespaces"]:
            lines += ["", "[[kv_namespaces]]", *(f"{k} = {_toml_value(v)}" for k, v in namespace.items())]
    lines += ["", "[vars]", *(f"{name} = {_toml_value(value)}" for name, value in variables.items())]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "wrangler.toml"
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text())["vars"] == variables  # types survive: numbers stay numbers
    return path


def tenant_vars(tenant, origin) -> dict:
    return {
        "ENTRA_TENANT_ID": tenant.tenant_id,
        "ENTRA_AUTHORITY": tenant.authority,
        "ENTRA_AUDIENCES": f"{tenant.client_id},{tenant.app_id_uri}",
        "ORIGIN_URL": origin.url,
        # The examples' policy has a browser sign-in route (app.toml), which needs these.
        "ENTRA_CLIENT_ID": tenant.client_id,
        "ENTRA_CLIENT_SECRET": tenant.client_secret,
        "SESSION_KEYS": new_session_key(),
    }


def get(runner, path, token=None, headers=None, body=None, method="GET"):
    request = urllib.request.Request(runner.url + path, data=body, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def assert_misconfigured(runner, path="/api/x", **request):
    status, headers, body = get(runner, path + "?secret=1", **request)
    problem = json.loads(body)
    request_id = headers["x-request-id"]
    assert status == 500 and problem["error"] == "gateway_misconfigured", (status, body)
    assert UUID.match(request_id) and problem["request_id"] == request_id
    line = runner.audit_line(request_id)
    assert {k: line[k] for k in ("method", "host", "path", "rule", "decision", "reason", "status")} == {
        "method": "GET", "host": "127.0.0.1", "path": path, "rule": None, "decision": "deny",
        "reason": "gateway_misconfigured", "status": 500,
    }
    assert (line["oid"], line["tid"], line["client_id"], line["token_kind"]) == (None, None, None, None)
    return problem


def echoed_headers(body: bytes) -> dict:
    headers = {}
    for name, value in json.loads(body)["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def test_toml_vars_then_dev_vars_then_var_each_override_the_one_before(services, tmp_path):
    tenant, origin = services
    site = tmp_path / "site"
    config = write_wrangler_toml(site, {
        **tenant_vars(tenant, origin),
        "CLOCK_SKEW_SECONDS": 9999,          # a TOML number, out of range (0-600)
        "IDENTITY_HEADER_PREFIX": "x-from-toml-",
        "FORWARD_AUTHORIZATION": True,       # a TOML boolean
        "AUDIT_ALLOW_SAMPLE_RATE": 0,        # a TOML number: no audit lines for allowed requests
    })
    kv = tmp_path / "kv"

    # 1. wrangler.toml alone: the number is read, and refused, so every request is an audited 500.
    runner = Runner({}, persist_to=kv, config=config)
    try:
        assert_misconfigured(runner)
        # The health endpoint says why (every problem, no secret values), and so did the runner at start.
        status, _, body = get(runner, "/.well-known/entragate/health")
        assert status == 500 and json.loads(body) == {
            "status": "misconfigured", "problems": ["CLOCK_SKEW_SECONDS must be between 0 and 600"]}
        assert "entragate dev: configuration problem: CLOCK_SKEW_SECONDS must be between 0 and 600" in \
            runner.output.split("Ready on")[0]
        assert wait_for(lambda: "CLOCK_SKEW_SECONDS must be between 0 and 600" in runner.stderr), runner.stderr[-2000:]
    finally:
        runner.stop()

    # 2. .dev.vars beside the config overrides [vars]; the rest of [vars] still applies.
    (site / ".dev.vars").write_text("CLOCK_SKEW_SECONDS=120\nIDENTITY_HEADER_PREFIX=x-from-dev-vars-\n")
    runner = Runner({}, persist_to=kv, config=config)
    try:
        token = tenant.mint()
        status, headers, body = get(runner, "/api/x", token=token)
        assert status == 200, body
        seen = echoed_headers(body)
        assert seen["x-from-dev-vars-user-oid"] == [tenant.user_oid]
        assert not [name for name in seen if name.startswith(("x-from-toml-", "x-entragate-"))]
        assert seen["authorization"] == [f"Bearer {token}"], "FORWARD_AUTHORIZATION = true (TOML boolean)"
        _, denied, _ = get(runner, "/api/x")
        assert runner.audit_line(denied["x-request-id"])["reason"] == "missing_token"
        assert all(line["decision"] == "deny" for line in runner.audit_lines()), "AUDIT_ALLOW_SAMPLE_RATE = 0"
    finally:
        runner.stop()

    # 3. --var overrides both: .dev.vars' prefix and [vars]' boolean and number.
    runner = Runner({"IDENTITY_HEADER_PREFIX": "x-from-cli-", "FORWARD_AUTHORIZATION": "false",
                     "AUDIT_ALLOW_SAMPLE_RATE": "1"}, persist_to=kv, config=config)
    try:
        status, headers, body = get(runner, "/api/x", token=tenant.mint())
        assert status == 200, body
        seen = echoed_headers(body)
        assert seen["x-from-cli-user-oid"] == [tenant.user_oid]
        assert not [name for name in seen if name.startswith(("x-from-toml-", "x-from-dev-vars-", "x-entragate-"))]
        assert "authorization" not in seen
        line = runner.audit_line(headers["x-request-id"])
        assert (line["decision"], line["reason"], line["status"]) == ("allow", "allowed", 200)
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def without_kv(services, tmp_path_factory):
    tenant, origin = services
    site = tmp_path_factory.mktemp("no-kv")
    config = write_wrangler_toml(site, tenant_vars(tenant, origin), kv=False)
    runner = Runner({}, persist_to=site / "kv", config=config)
    yield runner
    runner.stop()


def test_a_config_without_the_kv_binding_is_an_audited_500(services, without_kv):
    tenant, _ = services
    assert_misconfigured(without_kv, token=tenant.mint())
    assert_misconfigured(without_kv)
    assert wait_for(lambda: "JWKS_CACHE" in without_kv.stderr), without_kv.stderr[-2000:]
    assert "entragate is misconfigured" in without_kv.stderr


def test_a_misconfigured_gateway_answers_grpc_clients_in_grpc_terms(without_kv):
    """docs/DENIALS.md: every refusal, 500 gateway_misconfigured among them, is given in the
    client's terms: trailers-only grpc-status 13 (INTERNAL) to a gRPC client."""
    status, headers, body = get(without_kv, "/shop.v1.Orders/GetOrder", method="POST", body=b"\0\0\0\0\0",
                                headers={"content-type": "application/grpc", "te": "trailers"})
    request_id = headers["x-request-id"]
    assert (status, body) == (200, b""), (status, body)
    assert headers["content-type"] == "application/grpc" and headers["grpc-status"] == "13"
    assert "gateway_misconfigured" in headers["grpc-message"] and request_id in headers["grpc-message"]
    line = without_kv.audit_line(request_id)
    assert (line["reason"], line["status"], line.get("grpc_status")) == ("gateway_misconfigured", 200, 13)


def test_a_misconfigured_gateway_answers_browsers_with_a_page(without_kv):
    status, headers, body = get(without_kv, "/api/x", headers={"accept": "text/html"})
    assert status == 500 and headers["content-type"].startswith("text/html")
    assert headers["x-request-id"] in body.decode()


def test_a_toml_array_var_is_refused_not_read_as_text(services, tmp_path):
    """docs/CONFIGURATION.md: in [vars] a table or array is refused."""
    tenant, origin = services
    config = write_wrangler_toml(tmp_path / "site", {**tenant_vars(tenant, origin), "ENTRA_TOKEN_VERSIONS": ["2.0"]})
    runner = Runner({}, persist_to=tmp_path / "kv", config=config)
    try:
        assert_misconfigured(runner, token=tenant.mint())
        assert wait_for(lambda: "ENTRA_TOKEN_VERSIONS must be a string, number or boolean" in runner.stderr), \
            runner.stderr[-2000:]
    finally:
        runner.stop()
