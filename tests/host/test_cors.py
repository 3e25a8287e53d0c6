"""CORS at the edge (entragate/cors.py): the policy settings `check` accepts, warns about and
refuses; preflights answered without a token; CORS headers on forwarded responses and on the
gateway's own refusals. Runtime: tests/runtime/test_grpc.py (the example policy) and
tests/runtime/test_cors_browser.py (a real browser)."""

import asyncio
import json
import textwrap

import pytest
from fixtures.host_gateway import ENV, OfflineHttp

from entragate.config import Config
from entragate.cors import CorsPolicy, header_list, parse_origin
from entragate.denials import Answer
from entragate.gateway import UNAUDITED, Forward, IncomingRequest, assemble, origin_failure
from entragate.policy import Policy
from entragate_tools.compiler import PolicyError, compile_policies
from entragate_tools.host_crypto import HostVerifier

APP = "https://app.example.com"

POLICY = """
[[routes]]
name = "api"
paths = ["/api/**"]
methods = ["GET", "POST", "DELETE"]
allow = { authenticated = true }
cors = { origins = ["https://app.example.com", "https://*.apps.example.com", "http://127.0.0.1:5173"], methods = ["GET", "POST"], headers = ["authorization", "content-type"], expose = ["x-total"], max_age = 600 }

[[routes]]
name = "raw-options"
paths = ["/raw"]
methods = ["OPTIONS"]
public = true

[[routes]]
name = "open-data"
paths = ["/data/**"]
methods = ["GET"]
public = true
cors = { origins = ["*"] }

[[routes]]
name = "session"
paths = ["/app/**"]
allow = { authenticated = true }
cors = { origins = ["https://app.example.com"], headers = ["authorization"], credentials = true }

[[routes]]
name = "plain"
paths = ["/plain/**"]
allow = { authenticated = true }
"""


def compile_text(tmp_path, text):
    (tmp_path / "p.toml").write_text(textwrap.dedent(text))
    return compile_policies(tmp_path)


def errors(tmp_path, text) -> str:
    with pytest.raises(PolicyError) as info:
        compile_text(tmp_path, text)
    return "\n".join(str(e) for e in info.value.errors)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    compiled = compile_text(tmp_path_factory.mktemp("cors"), POLICY)
    policy = Policy.from_json(json.loads(compiled.json_text))
    return assemble(Config.from_env(ENV.get), policy, http=OfflineHttp(), store=None, verifier=HostVerifier(),
                    clock=lambda: 0, log=lambda message: None)


def handle(gateway, method, path, **headers):
    request = IncomingRequest(method=method, url=f"https://gw.example{path}", request_id="r",
                              header_names=tuple(headers), **headers)
    return request, asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))


def preflight(gateway, path, origin=APP, method="POST", headers="authorization,content-type"):
    return handle(gateway, "OPTIONS", path, origin=origin, cors_method=method, cors_headers=headers)[1]


# ---------------------------------------------------------------- the policy file


def test_compiled_form(tmp_path):
    compiled = compile_text(tmp_path, POLICY)
    routes = {route["name"]: route for route in compiled.data["routes"]}
    assert routes["api"]["cors"] == {
        "origins": ["https://app.example.com", "https://*.apps.example.com", "http://127.0.0.1:5173"],
        "methods": ["GET", "POST"], "headers": ["authorization", "content-type"], "expose": ["x-total"],
        "credentials": False, "max_age": 600,
    }
    assert "cors" not in routes["plain"]
    assert not compiled.warnings


@pytest.mark.parametrize("cors, message", [
    ('{ origins = ["*"], credentials = true }', "'*' cannot be used with credentials"),
    ('{ origins = [\"https://a.example\"], headers = ["*"], credentials = true }', "headers: '*' cannot be used with credentials"),
    ('{ origins = [\"https://a.example\"], expose = ["*"], credentials = true }', "expose: '*' cannot be used with credentials"),
    ('{ origins = ["*", "https://a.example"] }', "list it alone"),
    ('{ origins = ["null"] }', "never allow it"),
    ('{ origins = ["https://a.example/"] }', "must be scheme://host[:port]"),
    ('{ origins = ["https://a.example/app"] }', "must be scheme://host[:port]"),
    ('{ origins = ["a.example"] }', "must be scheme://host[:port]"),
    ('{ origins = ["ftp://a.example"] }', "must be scheme://host[:port]"),
    ('{ origins = ["https://A.example"] }', "must be lower-case"),
    ('{ origins = ["https://a.example:443"] }', "leave out the default port"),
    ('{ origins = ["https://*.com"] }', "at least two labels"),
    ('{ origins = ["https://a.*.example"] }', "must be scheme://host[:port]"),
    ('{ origins = ["https://a.example", "https://a.example"] }', "listed twice"),
    ('{ origins = [] }', "at least 1 item"),
    ('{ origins = ["https://a.example"], methods = ["PUT"] }', "PUT not among the route's methods"),
    ('{ origins = ["https://a.example"], headers = ["x y"] }', "not an HTTP header name"),
    ('{ origins = ["https://a.example"], max_age = 100000 }', "less than or equal to 86400"),
    ('{ origins = ["https://a.example"], max_age = "600" }', "valid integer"),
    ('{ origins = ["https://a.example"], origin = "x" }', "unknown key 'origin'"),
])
def test_check_refuses_cors_settings_that_cannot_be_right(tmp_path, cors, message):
    text = f"""
        [[routes]]
        name = "r"
        paths = ["/r"]
        methods = ["GET", "POST"]
        allow = {{ authenticated = true }}
        cors = {cors}
    """
    assert message in errors(tmp_path, text)


def test_check_warns_when_browsers_could_not_send_what_the_route_needs(tmp_path):
    compiled = compile_text(tmp_path, """
        [[routes]]
        name = "no-authorization"
        paths = ["/a"]
        allow = { authenticated = true }
        cors = { origins = ["https://a.example"], headers = ["*"] }

        [[routes]]
        name = "public-needs-nothing"
        paths = ["/p"]
        public = true
        cors = { origins = ["*"] }
    """)
    (warning,) = [str(w) for w in compiled.warnings]
    assert '"no-authorization" .cors.headers' in warning and "does not name 'authorization'" in warning


# ---------------------------------------------------------------- origins


@pytest.mark.parametrize("origin, allowed", [
    (APP, True), ("https://x.apps.example.com", True), ("https://a.b.apps.example.com", True),
    ("http://127.0.0.1:5173", True),
    ("https://apps.example.com", False),  # the pattern is hosts below it
    ("http://x.apps.example.com", False), ("https://x.apps.example.com:8443", False),
    ("https://app.example.com:443", False), ("https://app.example.com.evil.example", False),
    ("https://evilapps.example.com", False), ("https://APP.example.com", False), ("null", False), ("", False),
    (None, False), ("https://x.apps.example.com/", False), ("http://127.0.0.1:5174", False),
])
def test_origin_matching(origin, allowed):
    cors = CorsPolicy({"origins": [APP, "https://*.apps.example.com", "http://127.0.0.1:5173"]})
    assert cors.allows_origin(origin) is allowed


def test_origin_and_header_parsing():
    assert parse_origin("http://[::1]:8787") == ("http", "[::1]", "8787")
    assert parse_origin("https://a.example") == ("https", "a.example", "")
    assert parse_origin("https://a.example/x") is None and parse_origin("null") is None
    assert header_list(" Authorization , content-type") == ["authorization", "content-type"]
    assert header_list("") == [] and header_list(None) == [] and header_list("a b") is None


# ---------------------------------------------------------------- preflights


def test_a_preflight_is_answered_without_a_token(gateway):
    answer = preflight(gateway, "/api/items")
    assert isinstance(answer, Answer) and (answer.status, answer.code, answer.body, answer.rule) == (
        204, "cors_preflight", None, "api")
    headers = dict(answer.headers)
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    assert headers["access-control-max-age"] == "600"
    assert headers["vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert "access-control-allow-credentials" not in headers
    assert "cors_preflight" in UNAUDITED


@pytest.mark.parametrize("change, detail", [
    ({"origin": "https://evil.example"}, "the origin is not allowed"),
    ({"headers": "authorization,x-debug"}, "a requested header is not allowed"),
    ({"headers": "bad header"}, "the requested headers are malformed"),
    ({"method": "DELETE"}, "the method is not allowed"),  # the route takes it, its CORS does not
])
def test_a_preflight_outside_the_policy_is_refused_without_cors_headers(gateway, change, detail):
    answer = preflight(gateway, "/api/items", **change)
    assert (answer.status, answer.code, answer.rule) == (403, "cors_preflight_refused", "api")
    assert json.loads(answer.body)["detail"] == f"CORS preflight refused: {detail}"
    assert not any(name.startswith("access-control-") for name, _ in answer.headers)
    assert "evil" not in answer.body and "x-debug" not in answer.body  # nothing from the request is echoed


def test_preflights_for_routes_without_cors_are_decided_as_before(gateway):
    # A route without CORS: the OPTIONS request goes through the policy like any other.
    answer = preflight(gateway, "/plain/x")
    assert (answer.status, answer.code, answer.rule) == (401, "missing_token", "plain")
    # Not a method at all: not a preflight the gateway answers.
    for method in ("", " ", "GET POST", "G\u00c9T"):
        answer = preflight(gateway, "/api/items", method=method)
        assert (answer.status, answer.code) == (403, "method_not_allowed"), method
    # A method no route takes at this path: decided as before too.
    answer = preflight(gateway, "/api/items", method="PUT")
    assert (answer.status, answer.code) == (403, "method_not_allowed")
    # A route that takes OPTIONS itself, and has no CORS: the preflight is forwarded to its origin.
    _, result = handle(gateway, "OPTIONS", "/raw", origin=APP, cors_method="GET")
    assert isinstance(result, Forward) and result.rule == "raw-options" and result.cors is None
    # An OPTIONS request that is not a preflight, on a CORS route: decided as any request.
    _, result = handle(gateway, "OPTIONS", "/api/items", origin=APP)  # no Access-Control-Request-Method
    assert (result.status, result.code) == (403, "method_not_allowed")


def test_any_origin_and_credentials(gateway):
    answer = preflight(gateway, "/data/x", origin="https://anyone.example", method="GET", headers="")
    headers = dict(answer.headers)
    assert answer.status == 204 and headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-headers" not in headers and headers["access-control-allow-methods"] == "GET"
    answer = preflight(gateway, "/app/x", headers="authorization")
    headers = dict(answer.headers)
    assert (headers["access-control-allow-origin"], headers["access-control-allow-credentials"]) == (APP, "true")
    assert headers["access-control-allow-methods"] == "POST"  # a route of every method: the one asked for


# ---------------------------------------------------------------- actual responses


def test_forwarded_responses_get_the_routes_cors_headers(gateway):
    request, result = handle(gateway, "GET", "/data/set", origin="https://anyone.example")
    assert isinstance(result, Forward) and result.cors is not None
    assert result.cors.response_headers(request.origin) == (("access-control-allow-origin", "*"),)
    cors = CorsPolicy({"origins": [APP], "expose": ["x-total"], "credentials": True})
    assert cors.response_headers(APP) == (
        ("access-control-allow-origin", APP), ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-total"), ("vary", "Origin"))
    assert cors.response_headers("https://evil.example") == (("vary", "Origin"),)
    _, result = handle(gateway, "GET", "/plain/x")
    assert isinstance(result, Answer) and not any(name.startswith("access-control") for name, _ in result.headers)


def test_the_gateways_own_refusals_are_readable_by_the_calling_script(gateway):
    _, answer = handle(gateway, "POST", "/api/items", origin=APP, content_type="application/grpc-web+proto")
    headers = dict(answer.headers)
    assert (answer.status, answer.code, headers["grpc-status"]) == (200, "missing_token", "16")
    assert headers["access-control-allow-origin"] == APP and headers["vary"] == "Origin"
    exposed = headers["access-control-expose-headers"].split(", ")
    assert exposed[0] == "x-total"
    assert {"grpc-status", "grpc-message", "www-authenticate", "x-request-id"} <= set(exposed)
    assert "content-type" not in exposed and "cache-control" not in exposed
    # method_not_allowed on a CORS route is readable too.
    _, answer = handle(gateway, "PUT", "/api/items", origin=APP)
    assert answer.code == "method_not_allowed" and dict(answer.headers)["access-control-allow-origin"] == APP
    # An origin failure, answered after the forward, gets them too.
    request, result = handle(gateway, "GET", "/data/set", origin="https://anyone.example")
    failure = origin_failure(request, timed_out=False, cors=result.cors)
    assert failure.status == 502 and dict(failure.headers)["access-control-allow-origin"] == "*"
