"""Gateway.handle decisions that depend on the request itself, with a real compiled policy."""

import pytest
from fixtures.host_gateway import IPV6_POLICY, gateway_answer

from entragate.denials import Answer
from entragate.gateway import Forward


@pytest.mark.parametrize("host", ["a.example.com..", ".a.example.com", "a..example.com", "app.example.net.."])
def test_hosts_with_empty_labels_are_refused(host):
    result = gateway_answer(f"https://{host}/healthz")
    assert isinstance(result, Answer) and (result.status, result.code) == (400, "ambiguous_path")


@pytest.mark.parametrize("host", ["app.example.net", "app.example.net.", "APP.example.net:8443"])
def test_ordinary_hosts_reach_the_public_route(host):
    result = gateway_answer(f"https://{host}/healthz")
    assert isinstance(result, Forward) and result.url == "https://origin.example/healthz"


@pytest.mark.parametrize("url", ["http://[::1]/api/x", "http://[::1]:8787/api/x", "http://[0:0::1]/x"])
def test_ipv6_literal_hosts_are_matched_with_their_brackets(tmp_path, url):
    # urlsplit().hostname drops the brackets; the gateway once matched "::1" as ":" and so
    # skipped the host's own route for the any-host public one.
    (tmp_path / "p.toml").write_text(IPV6_POLICY)
    result = gateway_answer(url, policies=tmp_path)
    if "0:0::1" in url:  # another spelling of the same address names another host: no host route
        assert isinstance(result, Forward) and result.rule == "any-open"
    else:
        assert isinstance(result, Answer) and (result.status, result.code, result.rule) == (401, "missing_token", "v6-deny")


def test_token_refusals_name_the_route_that_asked_for_the_token():
    result = gateway_answer("https://app.example.net/api/items")
    assert isinstance(result, Answer) and (result.status, result.code, result.rule) == (401, "missing_token", "api-read")


@pytest.mark.parametrize("url, expected", [
    ("https://App.Example.NET:443/a%20b?x=1", ("app.example.net", "/a%20b?x=1", "/a b", None)),
    ("http://[::1]:8787/", ("[::1]", "/", "/", None)),
    ("https://user@h.example/x", ("h.example", "/x", "/x", None)),
    ("https://h.example/.well-known/entragate/health?x", ("h.example", "/.well-known/entragate/health?x", None, "health")),
    ("https://h.example/.well-known/entragate/jwks.json", ("h.example", "/.well-known/entragate/jwks.json", None, "jwks")),
])
def test_request_target(url, expected):
    from entragate.target import request_target

    target = request_target(url)
    assert (target.host, target.path_and_query, target.path, target.endpoint) == expected


@pytest.mark.parametrize("url", ["https://h.example", "https://:443/x", "nonsense", "https://h.example/a/../b",
                                 "https://h.example../x", "https://h.example/%2e%2e/x"])
def test_request_target_refuses_what_has_no_single_reading(url):
    from entragate.errors import AmbiguousPath
    from entragate.target import request_target

    with pytest.raises(AmbiguousPath):
        request_target(url)


def test_forward_strips_other_gateways_and_the_operators_headers_on_every_route():
    import asyncio
    import json

    from entragate_tools.compiler import compile_policies
    from entragate_tools.host_crypto import HostVerifier
    from fixtures.host_gateway import ENV, PROJECT_POLICIES, OfflineHttp

    from entragate.config import Config
    from entragate.gateway import IncomingRequest, assemble
    from entragate.policy import Policy

    config = Config.from_env({**ENV, "STRIP_HEADERS": "X-Corp-User, x-sso-*"}.get)
    policy = Policy.from_json(json.loads(compile_policies(PROJECT_POLICIES).json_text))
    gateway = assemble(config, policy, http=OfflineHttp(), store=None, verifier=HostVerifier(), clock=lambda: 0,
                       log=lambda message: None)
    sent = ("Accept", "CF-Connecting-IP", "Cf-Access-Jwt-Assertion", "X_Goog_Authenticated_User_Email",
            "x-corp-user", "X.SSO.Groups", "X-Pomerium-Claim-Email", "Cookie")
    request = IncomingRequest(method="GET", url="https://app.example.net/healthz", request_id="r", header_names=sent)
    result = asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))
    assert isinstance(result, Forward)
    assert result.strip == ("Cf-Access-Jwt-Assertion", "X_Goog_Authenticated_User_Email", "x-corp-user",
                            "X.SSO.Groups", "X-Pomerium-Claim-Email")


def handle(request, policies=None):
    from fixtures.host_gateway import PROJECT_POLICIES, host_gateway

    import asyncio

    gateway = host_gateway(policies or PROJECT_POLICIES)
    return asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))


def test_a_connection_header_cannot_take_away_what_the_gateway_sets():
    """The classic trick: `Connection: <header>` asks a hop to drop that header. Every name it
    lists is stripped from the client's headers, Connection itself goes too, and the gateway's
    own headers are set after stripping (platform_io.forward), so they all still arrive."""
    from entragate.gateway import IncomingRequest

    ours = "x-entragate-request-id, X-Entragate-Rule, x-entragate-user-oid, x-forwarded-for, cookie, keep-alive"
    sent = ("Connection", "Keep-Alive", "X-Entragate-Rule", "X-Forwarded-For", "Cookie", "Accept", "Upgrade")
    request = IncomingRequest(method="GET", url="https://app.example.net/healthz", request_id="r", header_names=sent,
                              connection=ours, upgrade="h2c")
    result = handle(request)
    assert isinstance(result, Forward)
    assert result.strip == ("Connection", "Keep-Alive", "X-Entragate-Rule", "X-Forwarded-For", "Cookie", "Upgrade")
    assert result.add == (("x-entragate-request-id", "r"),)


@pytest.mark.parametrize(("method", "upgrade", "kept"), [("GET", "websocket", True), ("GET", "h2c", False)])
def test_upgrade_stays_only_for_a_websocket_handshake(method, upgrade, kept):
    from entragate.gateway import IncomingRequest

    request = IncomingRequest(method=method, url="https://app.example.net/healthz", request_id="r",
                              header_names=("Connection", "Upgrade", "Sec-WebSocket-Key"), connection="Upgrade",
                              upgrade=upgrade)
    result = handle(request)
    assert isinstance(result, Forward)
    assert result.strip == (("Connection",) if kept else ("Connection", "Upgrade"))


OPEN_POLICY = '[[routes]]\nname = "open"\npaths = ["/**"]\npublic = true\n'


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_or_head_body_without_a_length_is_refused_not_dropped(tmp_path, method):
    """workerd's fetch sends a GET/HEAD body only with a declared length: a chunked one would
    reach the origin empty. The refusal is the route's, after the decision, with a 411."""
    from entragate.gateway import IncomingRequest

    (tmp_path / "open.toml").write_text(OPEN_POLICY)
    request = IncomingRequest(method=method, url="https://app.example.net/up", request_id="r", header_names=(),
                              body_without_length=True)
    result = handle(request, tmp_path)
    assert isinstance(result, Answer) and (result.status, result.code, result.rule) == (411, "length_required", "open")
    assert ("cache-control", "no-store") in result.headers
    # A refusal decided earlier stays that refusal (no token on a protected route: 401).
    protected = IncomingRequest(method=method, url="https://app.example.net/api/items", request_id="r",
                                header_names=(), body_without_length=True)
    assert (handle(protected).status, handle(protected).code) == (401, "missing_token")


@pytest.mark.parametrize(("method", "body_without_length"), [("POST", True), ("PUT", True), ("GET", False),
                                                             ("HEAD", False)])
def test_other_bodies_are_forwarded(tmp_path, method, body_without_length):
    from entragate.gateway import IncomingRequest

    (tmp_path / "open.toml").write_text(OPEN_POLICY)
    request = IncomingRequest(method=method, url="https://app.example.net/up", request_id="r", header_names=(),
                              body_without_length=body_without_length)
    assert isinstance(handle(request, tmp_path), Forward)
