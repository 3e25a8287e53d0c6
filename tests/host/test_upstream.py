"""Headers sent to the origin: what is stripped, what is added, how values are encoded."""

from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entragate.identity import APP, Identity
from entragate.upstream import (
    _SAFE, _SAFE_IN_LIST, HOP_BY_HOP_HEADERS, LOOKALIKE_IDENTITY_FAMILIES, LOOKALIKE_IDENTITY_HEADERS, MAX_FORWARDED_GROUPS,
    MAX_REMEMBERED_NAME_LENGTH, MAX_REMEMBERED_NAMES, ROUTING_OVERRIDE_HEADERS, HeaderStripper, connection_options,
    forwarded_groups, header_list, header_value, identity_headers, is_websocket_handshake, referenced_groups,
)

IDENTITY = Identity(
    oid="o-1", tid="t-1", sub="s-1", name="Zoë\r\nX-Injected: 1", username="zoe@example.com",
    groups=("g1", "g2", "g3"), groups_overage=True, roles=("A,B", "C"), scopes=("s1", "s2"),
    client_id="c-1", kind=APP, version="2.0", issuer="i", audience="a", expires_at=0,
)


def headers_to_strip(names, prefix="x-entragate-", forward_authorization=True, **extra):
    return HeaderStripper(prefix, forward_authorization, **extra)(names)


def test_strips_prefix_in_any_case_and_underscore_form_and_lookalikes():
    names = ["X-Entragate-User-Oid", "x_entragate_roles", "X_ENTRAGATE_GROUPS", "X-Forwarded-User",
             "x-ms-client-principal-name", "Authorization", "Accept", "X-Entragatex", "Cookie"]
    assert headers_to_strip(names, forward_authorization=False) == names[:6]
    assert "Authorization" not in headers_to_strip(names, forward_authorization=True)


@pytest.mark.parametrize("name", [
    "X-Entragate.User-Oid", "x.entragate.roles", "X~Entragate~Groups", "X--Entragate--Name", "X-Entragate",
    "x_entragate", "X-Entragate-User-Oid.", "X.Forwarded.User", "X_Original_URL", "x.ms.client.principal",
])
def test_any_separator_spelling_of_a_protected_name_is_stripped(name):
    # lighttpd's CGI/FastCGI variable names map every non-alphanumeric to "_", so
    # "X-Entragate.User-Oid" arrives as HTTP_X_ENTRAGATE_USER_OID, the same as ours.
    assert headers_to_strip([name, "Accept"]) == [name]


@pytest.mark.parametrize("name", ["X-Entragatex", "X-Entragate2-User", "Xentragate-User", "Accept-Entragate-User"])
def test_names_that_only_resemble_the_prefix_are_kept(name):
    assert headers_to_strip([name]) == []


# The identity headers each product sets for its origins, as its documentation names them
# (docs/SECURITY.md lists the sources). Every one must be stripped in every spelling.
OTHER_GATEWAYS = {
    "Cloudflare Access": ["Cf-Access-Jwt-Assertion", "Cf-Access-Authenticated-User-Email", "Cf-Access-Client-Id",
                          "Cf-Access-Client-Secret"],
    "Google IAP": ["X-Goog-Authenticated-User-Email", "X-Goog-Authenticated-User-Id", "X-Goog-Iap-Jwt-Assertion"],
    "AWS ALB OIDC": ["X-Amzn-Oidc-Accesstoken", "X-Amzn-Oidc-Identity", "X-Amzn-Oidc-Data"],
    "AWS Verified Access": ["X-Amzn-Ava-User-Context"],
    "Azure Easy Auth": ["X-MS-CLIENT-PRINCIPAL", "X-MS-CLIENT-PRINCIPAL-ID", "X-MS-CLIENT-PRINCIPAL-NAME",
                        "X-MS-CLIENT-PRINCIPAL-IDP", "X-MS-TOKEN-AAD-ACCESS-TOKEN", "X-MS-TOKEN-AAD-ID-TOKEN",
                        "X-MS-TOKEN-AAD-REFRESH-TOKEN", "X-MS-TOKEN-AAD-EXPIRES-ON", "X-MS-TOKEN-GOOGLE-ACCESS-TOKEN"],
    "Authelia": ["Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name"],
    "Kubernetes request-header": ["X-Remote-User", "X-Remote-Group", "X-Remote-Extra-Scopes"],
    "authentik": ["X-authentik-username", "X-authentik-groups", "X-authentik-entitlements", "X-authentik-email",
                  "X-authentik-name", "X-authentik-uid", "X-authentik-jwt", "X-authentik-meta-app"],
    "Pomerium": ["X-Pomerium-Jwt-Assertion", "X-Pomerium-Claim-Email", "X-Pomerium-Claim-Groups"],
    "Tailscale": ["Tailscale-User-Login", "Tailscale-User-Name", "Tailscale-User-Profile-Pic", "Tailscale-Headers-Info",
                  "Tailscale-App-Capabilities", "Tailscale-Login", "Tailscale-Tailnet"],
    "oauth2-proxy": ["X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups",
                     "X-Auth-Request-Preferred-Username", "X-Auth-Request-Access-Token", "X-Forwarded-User",
                     "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
                     "X-Forwarded-Access-Token"],
    "Vouch Proxy": ["X-Vouch-User", "X-Vouch-Success", "X-Vouch-Idp-Claims-Email"],
    "Grafana auth proxy": ["X-WEBAUTH-USER", "X-WEBAUTH-EMAIL", "X-WEBAUTH-NAME", "X-WEBAUTH-ROLE", "X-WEBAUTH-GROUPS"],
    "Kong / APISIX": ["X-Consumer-Id", "X-Consumer-Username", "X-Consumer-Custom-Id", "X-Credential-Identifier",
                      "X-Anonymous-Consumer", "X-Authenticated-Userid", "X-Authenticated-Scope"],
    "generic": ["X-User", "X-Email", "X-Username"],
}
SPELLINGS = {
    "as documented": lambda n: n,
    "lower": str.lower,
    "upper": str.upper,
    "underscores": lambda n: n.replace("-", "_"),
    "dots": lambda n: n.replace("-", "."),
    "mixed separators": lambda n: "_.".join(n.split("-", 1)) if "-" in n else n + ".",
}


@pytest.mark.parametrize("product", sorted(OTHER_GATEWAYS))
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_identity_headers_of_other_gateways_are_stripped_in_every_spelling(product, spelling):
    names = [SPELLINGS[spelling](name) for name in OTHER_GATEWAYS[product]]
    assert headers_to_strip(names + ["Accept"]) == names


def test_every_documented_family_and_name_is_exercised():
    """A family or name added to upstream.py without a product test above fails here."""
    tested = {HeaderStripper("x-entragate-", True).must_strip(n) for names in OTHER_GATEWAYS.values() for n in names}
    assert tested == {True}
    seen = [n.lower() + "-" for names in OTHER_GATEWAYS.values() for n in names]
    assert all(any(s.startswith(family) for s in seen) for family in LOOKALIKE_IDENTITY_FAMILIES)
    assert LOOKALIKE_IDENTITY_HEADERS <= {n.lower() for names in OTHER_GATEWAYS.values() for n in names}


ORDINARY = [
    "Accept", "Accept-Encoding", "Accept-Language", "Content-Type", "Content-Length", "Cookie", "User-Agent",
    "Origin", "Referer", "If-None-Match", "Cache-Control", "Traceparent", "Idempotency-Key", "X-Request-Id",
    "X-Correlation-Id", "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP", "True-Client-IP",
    # Cloudflare's own request headers: the edge sets or overwrites them; only cf-access-* is stripped.
    "CF-Connecting-IP", "CF-Connecting-IPv6", "CF-IPCountry", "CF-Ray", "CF-Visitor", "CF-Worker", "CDN-Loop",
    # Names that merely begin like a family without its separator.
    "X-Goog-Api-Key", "X-Goog-User-Project", "X-Amzn-Trace-Id", "X-MS-Client-Request-Id", "Remoteuser",
    "X-Users", "X-Emails", "X-Pomeriumx", "Tailscalex-User", "X-Consumers", "X-Vouched", "X-Authenticatedx",
    "Sec-Fetch-Mode", "Expect", "Sec-WebSocket-Protocol", "Upgrade-Insecure-Requests", "Tea", "Connections",
]


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_headers_pass(name):
    assert headers_to_strip([name, name.lower(), name.upper()], forward_authorization=False) == []


def test_operator_added_names_and_families_are_stripped_in_every_spelling():
    strip = HeaderStripper("x-entragate-", True, names=frozenset({"x-corp-user"}), families=("x-sso-",))
    names = ["X-Corp-User", "x_corp_user", "X.CORP.USER", "X-Sso", "X-SSO-Email", "x_sso_groups", "x.sso.claim.a"]
    assert strip(names + ["X-Corp-Users", "X-Ssox", "Accept"]) == names


def test_routing_overrides_and_authorization():
    for name in ROUTING_OVERRIDE_HEADERS:
        assert headers_to_strip([name.upper().replace("-", "_")]) == [name.upper().replace("-", "_")]
    assert headers_to_strip(["AUTHORIZATION", "authorization"], forward_authorization=False) == ["AUTHORIZATION", "authorization"]
    assert headers_to_strip(["Authorization"], forward_authorization=True) == []
    assert headers_to_strip(["Authorization-X", "X-Authorization"], forward_authorization=False) == []


# RFC 9110 §7.6.1 (Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade),
# RFC 9110 §6.6.2 (Trailer), §11.7 (the Proxy-Authenticate/-Authorization credentials of one
# hop), RFC 7540 §3.2.1 (HTTP2-Settings). Upgrade is decided per request (below).
HOP_BY_HOP = ["Connection", "Keep-Alive", "Proxy-Connection", "TE", "Transfer-Encoding", "Trailer",
              "Proxy-Authorization", "Proxy-Authenticate", "HTTP2-Settings"]


def test_the_hop_by_hop_list_is_the_rfcs():
    assert HOP_BY_HOP_HEADERS == {name.lower() for name in HOP_BY_HOP}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("forward_authorization", [False, True])
def test_hop_by_hop_headers_are_stripped_in_every_spelling(spelling, forward_authorization):
    """Proxy-Authorization is a proxy's credential: stripped even when Authorization is forwarded.
    (CGI reads `Transfer_Encoding` as HTTP_TRANSFER_ENCODING; `Connection.` is another name.)"""
    names = [SPELLINGS[spelling](name) for name in HOP_BY_HOP if "-" in name or spelling != "mixed separators"]
    assert headers_to_strip(names + ["Accept", "Expect"], forward_authorization=forward_authorization) == names


@pytest.mark.parametrize(("method", "upgrade", "handshake"), [
    ("GET", "websocket", True), ("GET", "WebSocket", True), ("GET", " websocket\t", True),
    ("POST", "websocket", False), ("get", "websocket", False),  # methods arrive upper-cased from the gateway
    ("GET", "h2c", False), ("GET", "websocket, h2c", False), ("GET", "TLS/1.0", False), ("GET", "", False),
    ("GET", None, False),
])
def test_a_websocket_handshake_is_a_get_with_upgrade_websocket(method, upgrade, handshake):
    assert is_websocket_handshake(method, upgrade) is handshake


def test_upgrade_is_kept_only_for_a_websocket_handshake_whatever_the_memo_holds():
    strip = HeaderStripper("x-entragate-", True)
    for _ in range(2):  # the second round comes from the remembered verdicts
        assert strip(["Upgrade", "Sec-WebSocket-Key"], "Upgrade", websocket=True) == []
        assert strip(["Upgrade", "Sec-WebSocket-Key"], "Upgrade", websocket=False) == ["Upgrade"]
        assert strip(["upgrade"]) == ["upgrade"]


@pytest.mark.parametrize(("connection", "options"), [
    ("keep-alive, X-Foo", {"keep-alive", "x-foo"}),
    (" close ,\tX-Forwarded-For,,  ", {"close", "x-forwarded-for"}),
    ("Upgrade, HTTP2-Settings", {"upgrade", "http2-settings"}),
    ("x foo, x\"y, , ;", set()),  # not field names: name nothing
    ("", set()), (None, set()),
])
def test_connection_options_are_the_field_names_it_lists(connection, options):
    assert connection_options(connection) == options


def test_headers_the_connection_header_names_are_stripped_for_that_request_only():
    strip = HeaderStripper("x-entragate-", True)
    names = ["Connection", "Keep-Alive", "X-Foo", "X-Foo-Bar", "X-Forwarded-For", "Cookie", "Accept", "Upgrade"]
    connection = "keep-alive, X-FOO, x-forwarded-for, Upgrade, not a name"
    assert strip(names, connection, websocket=True) == ["Connection", "Keep-Alive", "X-Foo", "X-Forwarded-For"]
    assert strip(names, connection) == ["Connection", "Keep-Alive", "X-Foo", "X-Forwarded-For", "Upgrade"]
    # The next request, without those options, keeps them: nothing nominated is remembered.
    assert strip(names) == ["Connection", "Keep-Alive", "Upgrade"]


def test_verdict_memo_is_bounded_by_entries_and_name_length_oldest_out_first():
    strip = HeaderStripper("x-entragate-", True)
    strip(["Accept"])
    strip([f"X-Flood-{n}" for n in range(MAX_REMEMBERED_NAMES)])
    assert len(strip._verdicts) == MAX_REMEMBERED_NAMES and "Accept" not in strip._verdicts
    assert "X-Flood-1" in strip._verdicts and "X-Flood-0" in strip._verdicts
    long_names = ["X-Entragate-" + "a" * MAX_REMEMBERED_NAME_LENGTH, "X-" + "b" * MAX_REMEMBERED_NAME_LENGTH]
    assert strip(long_names) == long_names[:1]  # judged every time, never remembered
    assert not set(long_names) & set(strip._verdicts)
    assert sum(map(len, strip._verdicts)) <= MAX_REMEMBERED_NAMES * MAX_REMEMBERED_NAME_LENGTH


def test_identity_headers_encode_values_so_nothing_can_be_injected():
    headers = dict(identity_headers(IDENTITY, ["g1"], "x-p-"))
    assert headers["x-p-name"] == "Zo%C3%AB%0D%0AX-Injected: 1" and unquote(headers["x-p-name"]) == IDENTITY.name
    assert headers["x-p-roles"] == "A%2CB,C"
    assert headers["x-p-groups"] == "g1" and headers["x-p-groups-overage"] == "true"
    assert headers["x-p-token-kind"] == "app" and headers["x-p-scopes"] == "s1 s2"
    assert all("\r" not in v and "\n" not in v for v in headers.values())


def test_groups_are_those_the_policy_names_and_bounded():
    many = Identity(**{**{f: getattr(IDENTITY, f) for f in Identity.__slots__}, "groups": tuple(f"g{i}" for i in range(500))})
    referenced = frozenset(f"g{i}" for i in range(0, 500, 2))
    forwarded = forwarded_groups(many, referenced)
    assert len(forwarded) == MAX_FORWARDED_GROUPS and all(g in referenced for g in forwarded)


def test_referenced_groups_walks_nested_conditions():
    policy = {"routes": [
        {"allow": ["any", [["groups", ["a"]], ["not", ["groups", ["b"]]], ["all", [["roles", ["r"]], ["groups", ["c"]]]]]], "deny": None},
        {"allow": None, "deny": ["groups", ["d"]]},
    ]}
    assert referenced_groups(policy) == {"a", "b", "c", "d"}


@given(st.text(max_size=40))
def test_fast_path_encodes_exactly_like_quote(value):
    assert header_value(value) == quote(value, safe=_SAFE)
    assert header_list([value, value]) == ",".join([quote(value, safe=_SAFE_IN_LIST)] * 2)


def test_identity_headers_are_exactly_these_names_and_values():
    headers = identity_headers(IDENTITY, ["g1", "g,2"], "x-entragate-")
    assert headers == [
        ("x-entragate-user-oid", "o-1"), ("x-entragate-tenant-id", "t-1"), ("x-entragate-subject", "s-1"),
        ("x-entragate-name", "Zo%C3%AB%0D%0AX-Injected: 1"), ("x-entragate-username", "zoe@example.com"),
        ("x-entragate-client-id", "c-1"), ("x-entragate-token-kind", APP), ("x-entragate-auth-method", "bearer"),
        ("x-entragate-groups-overage", "true"),
        ("x-entragate-scopes", "s1 s2"), ("x-entragate-groups", "g1,g%2C2"), ("x-entragate-roles", "A%2CB,C"),
    ]
    plain = Identity(oid="o", tid=None, sub=None, name=None, username=None, groups=(), groups_overage=False, roles=(),
                     scopes=(), client_id=None, kind=APP, version="2.0", issuer="", audience="", expires_at=0)
    assert identity_headers(plain, [], "p-") == [("p-user-oid", "o"), ("p-token-kind", APP), ("p-auth-method", "bearer")]  # nothing empty, no overage


def test_a_policy_without_routes_refers_to_no_group():
    assert referenced_groups({}) == frozenset()
