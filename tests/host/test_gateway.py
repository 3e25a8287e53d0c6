"""Gateway.handle decisions that depend on the request itself, with a real compiled policy."""

import json

import pytest
from fixtures.host_gateway import IPV6_POLICY, gateway_answer

from entragate.denials import Answer
from entragate.gateway import Forward


@pytest.mark.parametrize("host", ["a.example.com..", ".a.example.com", "a..example.com", "app.example.net.."])
def test_hosts_with_empty_labels_are_refused(host):
    result = gateway_answer(f"https://{host}/healthz")
    assert isinstance(result, Answer) and (result.status, result.code) == (400, "ambiguous_path")
    assert json.loads(result.body)["detail"] == "host has an empty label"


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
    ("https://h.example/r?next=https://evil.example/x", ("h.example", "/r?next=https://evil.example/x", "/r", None)),
])
def test_request_target(url, expected):
    from entragate.target import request_target

    target = request_target(url)
    assert (target.host, target.path_and_query, target.path, target.endpoint) == expected


@pytest.mark.parametrize("url,detail", [
    ("https://h.example", "request URL has no host or path"), ("https://:443/x", "request URL has no host or path"),
    ("nonsense", "request URL has no host or path"), ("https:///x", "request URL has no host or path"),
    ("https://h.example/a/../b", None), ("https://h.example../x", "host has an empty label"),
    ("https://h.example/%2e%2e/x", None),
])
def test_request_target_refuses_what_has_no_single_reading(url, detail):
    from entragate.errors import AmbiguousPath
    from entragate.target import request_target

    with pytest.raises(AmbiguousPath) as refusal:
        request_target(url)
    if detail is not None:  # the path's own refusals: tests/host/test_paths.py
        assert refusal.value.detail == detail


def test_forward_strips_other_gateways_and_the_operators_headers_on_every_route():
    import asyncio
    import json

    from entragate_tools.compiler import compile_policies
    from entragate_tools.host_crypto import HostVerifier
    from fixtures.host_gateway import ENV, EXAMPLE_POLICIES, OfflineHttp, signin_platform

    from entragate.config import Config
    from entragate.gateway import IncomingRequest, assemble
    from entragate.policy import Policy

    config = Config.from_env({**ENV, "STRIP_HEADERS": "X-Corp-User, x-sso-*"}.get)
    policy = Policy.from_json(json.loads(compile_policies(EXAMPLE_POLICIES).json_text))
    gateway = assemble(config, policy, http=OfflineHttp(), store=None, verifier=HostVerifier(), clock=lambda: 0,
                       log=lambda message: None, platform=signin_platform(policy))
    sent = ("Accept", "CF-Connecting-IP", "Cf-Access-Jwt-Assertion", "X_Goog_Authenticated_User_Email",
            "x-corp-user", "X.SSO.Groups", "X-Pomerium-Claim-Email", "Cookie")
    request = IncomingRequest(method="GET", url="https://app.example.net/healthz", request_id="r", header_names=sent)
    result = asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))
    assert isinstance(result, Forward)
    assert result.strip == ("Cf-Access-Jwt-Assertion", "X_Goog_Authenticated_User_Email", "x-corp-user",
                            "X.SSO.Groups", "X-Pomerium-Claim-Email")


def handle(request, policies=None):
    from fixtures.host_gateway import EXAMPLE_POLICIES, host_gateway

    import asyncio

    gateway = host_gateway(policies or EXAMPLE_POLICIES)
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


# --- what the gateway strips before forwarding, through Gateway.handle ---------------------------

SPOOFED_IDENTITY = (  # our own identity headers, in every spelling a server might merge with ours
    "X-Entragate-User-Oid", "x-entragate-roles", "X_ENTRAGATE_GROUPS", "X.Entragate.Assertion",
    "x~entragate~token-kind", "X--Entragate--Rule", "X-Entragate-Request-Id", "X-Entragate", "x_entragate",
)
ROUTING_OVERRIDES = (
    "X-Original-URL", "x_rewrite_url", "X-ORIGINAL-URI", "X-Forwarded-Uri", "x.forwarded.path", "X-Forwarded-Prefix",
    "X-Forwarded-Host", "X-Forwarded-Server", "X-Original-Host", "X-Host", "Forwarded", "X-HTTP-Method-Override",
    "X_HTTP_Method", "X-Method-Override",
)
KEPT = ("Host", "Accept", "Accept-Encoding", "Content-Type", "Cookie", "User-Agent", "X-Forwarded-For",
        "X-Forwarded-Proto", "X-Request-Id", "CF-Connecting-IP", "Traceparent", "X-Entragatex", "Authorization-X")


@pytest.fixture(scope="module")
def tenant():
    from entragate_mocks.mock_entra import MockTenant

    return MockTenant()  # minting only: the gateway reads its keys from memory


def forward_of(gateway, path, names, authorization=None, method="GET"):
    import asyncio

    from entragate.gateway import IncomingRequest

    request = IncomingRequest(method, f"https://gw.example{path}", "r-1", names, authorization=authorization)
    result = asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))
    assert isinstance(result, Forward), result
    return result


def test_routing_override_list_is_the_one_tested_here():
    from entragate.upstream import ROUTING_OVERRIDE_HEADERS, normalised_name

    assert {normalised_name(name) for name in ROUTING_OVERRIDES} == ROUTING_OVERRIDE_HEADERS


def test_a_token_route_strips_spoofed_identity_routing_overrides_and_authorization_and_nothing_else(tenant):
    from fixtures.host_gateway import token_gateway

    names = KEPT[:4] + SPOOFED_IDENTITY + ("Authorization",) + ROUTING_OVERRIDES + KEPT[4:]
    result = forward_of(token_gateway(tenant), "/api/items", names, f"Bearer {tenant.mint()}")
    assert result.strip == SPOOFED_IDENTITY + ("Authorization",) + ROUTING_OVERRIDES  # as sent, in order
    assert result.url == "https://origin.example/api/items"  # Host: the origin's, set by the platform from the URL
    added = dict(result.add)
    assert added["x-entragate-user-oid"] == tenant.user_oid and added["x-entragate-rule"] == "api-read"
    assert all(name.startswith("x-entragate-") for name in added)


def test_forward_authorization_keeps_the_authorization_header_and_strips_the_rest(tenant):
    from fixtures.host_gateway import token_gateway

    names = SPOOFED_IDENTITY + ("authorization",) + ROUTING_OVERRIDES + KEPT
    gateway = token_gateway(tenant, FORWARD_AUTHORIZATION="true")
    result = forward_of(gateway, "/api/items", names, f"Bearer {tenant.mint()}")
    assert result.strip == SPOOFED_IDENTITY + ROUTING_OVERRIDES


def test_a_public_route_strips_the_same_headers_and_adds_only_the_request_id(tenant):
    """No token is asked for, but a client's identity headers and overrides must still not
    reach the origin; Authorization too (it was not checked, so the origin must not trust it)."""
    from fixtures.host_gateway import token_gateway

    names = SPOOFED_IDENTITY + ("AUTHORIZATION",) + ROUTING_OVERRIDES + KEPT
    result = forward_of(token_gateway(tenant), "/healthz", names, "Bearer not-checked")
    assert result.strip == SPOOFED_IDENTITY + ("AUTHORIZATION",) + ROUTING_OVERRIDES
    assert result.add == (("x-entragate-request-id", "r-1"),) and result.identity is None
    kept = forward_of(token_gateway(tenant, FORWARD_AUTHORIZATION="true"), "/healthz", names, "Bearer not-checked")
    assert kept.strip == SPOOFED_IDENTITY + ROUTING_OVERRIDES


def test_a_custom_prefix_strips_its_own_spellings_and_no_longer_the_default_ones(tenant):
    from fixtures.host_gateway import token_gateway

    names = ("X-Corp-Id-User-Oid", "x_corp_id_roles", "X-Corp-Id", "X-Entragate-User-Oid", "Accept")
    result = forward_of(token_gateway(tenant, IDENTITY_HEADER_PREFIX="x-corp-id-"), "/api/items", names,
                        f"Bearer {tenant.mint()}")
    assert result.strip == ("X-Corp-Id-User-Oid", "x_corp_id_roles", "X-Corp-Id")
    assert dict(result.add)["x-corp-id-user-oid"] == tenant.user_oid
