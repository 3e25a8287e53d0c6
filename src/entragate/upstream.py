"""Headers of the request sent to the origin: spoofed identity headers out, ours in.

Identity headers (prefix configurable, default `x-entragate-`):

| header           | value                                                            |
|------------------|------------------------------------------------------------------|
| `user-oid`       | `oid`: the user's (or service principal's) object id              |
| `tenant-id`      | `tid`                                                             |
| `subject`        | `sub`                                                             |
| `name`           | `name`                                                            |
| `username`       | `preferred_username` (v2) or `upn` / `unique_name` (v1)           |
| `client-id`      | `azp` (v2) or `appid` (v1): the calling application               |
| `token-kind`     | `user` or `app`                                                   |
| `auth-method`    | `bearer` (an access token) or `session` (browser sign-in)         |
| `groups`         | comma-separated group ids that the policy refers to (see below)   |
| `groups-overage` | `true` when Entra left groups out of the token                    |
| `roles`          | comma-separated app roles                                         |
| `scopes`         | space-separated delegated scopes (`scp`)                          |
| `rule`           | the policy route that allowed the request                         |
| `request-id`     | the gateway's request id (also on every denial)                   |
| `assertion`      | the signed identity assertion (assertion.py), when configured     |

Groups are bounded: only groups some policy rule names are forwarded (at most
MAX_FORWARDED_GROUPS), because a user in 200 groups would otherwise add 7 KB to every request.
Values outside printable ASCII, and `%`, are percent-encoded as UTF-8 (RFC 3986), so an
origin recovers them with one `unquote`; names like "José" survive, header injection cannot.
In the comma-separated lists each item's own commas are encoded too.

Before ours are added, every client-sent header whose name, lower-cased with every run of
characters other than letters and digits read as one `-`, starts with the prefix (or is the
prefix without its last `-`) is removed:
WSGI/CGI servers turn `X_Entragate_User` into the same variable as `X-Entragate-User`, and
lighttpd's CGI/FastCGI/SCGI encoding maps every non-alphanumeric (`X-Entragate.User`) to `_`.
Removed in the same way are the identity headers of other proxies and platforms that an
origin moved behind entragate might still trust (LOOKALIKE_IDENTITY_FAMILIES, by prefix, and
LOOKALIKE_IDENTITY_HEADERS), the operator's own (STRIP_HEADERS), and headers with which some
origin frameworks replace the request's path, host or method (ROUTING_OVERRIDE_HEADERS): the
gateway decided on the request line and Host, so the origin must not act on anything else.

Hop-by-hop headers (RFC 9110 §7.6.1: Connection, the headers it names, Keep-Alive, TE,
Transfer-Encoding, Trailer, Upgrade, and the proxy ones) describe one connection, not the
request: they are removed too, so that what the origin receives does not depend on what the
runtime's HTTP client happens to drop (HOP_BY_HOP_HEADERS). The one exception is
`Upgrade: websocket` on a GET, which the runtime turns into its own WebSocket handshake with
the origin. Whatever the client's Connection header names is removed from the *client's*
headers only: the gateway's own headers are set afterwards, and the Connection header itself
never reaches the origin, so no hop after the gateway can be told to drop one of them.
"""

import re
import sys
from urllib.parse import quote

from .identity import Identity

DEFAULT_PREFIX = "x-entragate-"
MAX_FORWARDED_GROUPS = 64
# Identity headers that other proxies and platforms set for their origins. An origin moved
# behind entragate from one of them may still trust these, so a client must never supply
# them. A family (a name ending in "-") is stripped by prefix: the name without its last "-"
# and every name starting with it. Sources: each product's documentation (see SECURITY.md).
LOOKALIKE_IDENTITY_FAMILIES = (
    "cf-access-",                   # Cloudflare Access: Cf-Access-Jwt-Assertion, -Authenticated-User-Email,
                                    # service-token Cf-Access-Client-Id/-Secret (not cf-connecting-ip, cf-ray, ...)
    "x-goog-authenticated-user-",   # Google IAP: X-Goog-Authenticated-User-Email/-Id
    "x-goog-iap-",                  # Google IAP: X-Goog-Iap-Jwt-Assertion
    "x-amzn-oidc-",                 # AWS ALB authenticate-oidc: X-Amzn-Oidc-Accesstoken/-Identity/-Data
    "x-amzn-ava-",                  # AWS Verified Access: X-Amzn-Ava-User-Context
    "x-ms-client-principal-",       # Azure App Service Easy Auth: X-MS-CLIENT-PRINCIPAL(-ID/-NAME/-IDP)
    "x-ms-token-",                  # Easy Auth provider tokens: X-MS-TOKEN-AAD-ACCESS-TOKEN, -ID-TOKEN, ...
    "remote-",                      # Authelia and similar forward-auth: Remote-User/-Groups/-Email/-Name
    "x-remote-",                    # Kubernetes / OpenShift request-header auth: X-Remote-User/-Group/-Extra-*
    "x-authentik-",                 # authentik proxy outpost: X-authentik-username/-groups/-email/-uid/-jwt/-meta-*
    "x-pomerium-",                  # Pomerium: X-Pomerium-Jwt-Assertion, X-Pomerium-Claim-*
    "tailscale-",                   # Tailscale Serve / nginx-auth: Tailscale-User-Login/-Name/-Profile-Pic, ...
    "x-auth-request-",              # oauth2-proxy --set-xauthrequest: X-Auth-Request-User/-Email/-Groups/...
    "x-vouch-",                     # Vouch Proxy: X-Vouch-User, X-Vouch-Idp-Claims-*
    "x-webauth-",                   # Grafana's auth proxy convention: X-WEBAUTH-USER/-EMAIL/-NAME/-ROLE/-GROUPS
    "x-consumer-",                  # Kong / APISIX: X-Consumer-Id/-Username/-Custom-Id/-Groups
    "x-authenticated-",             # Kong OAuth2 / LDAP: X-Authenticated-Userid/-Scope/-Groups
)
# Single names of families that also hold ordinary headers (x-forwarded-for, -proto stay).
LOOKALIKE_IDENTITY_HEADERS = frozenset({
    # oauth2-proxy --pass-user-headers / --pass-access-token
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    # Kong / APISIX
    "x-credential-identifier", "x-anonymous-consumer",
    # generic SSO setups (nginx auth_request examples, Pomerium's jwt_claims_headers examples)
    "x-user", "x-email", "x-username",
})
# Headers that make some origin frameworks route on another path, host or method than the
# request line and Host the policy decided on: IIS URL Rewrite / Symfony / Laravel / Zend
# (X-Original-URL, X-Rewrite-URL), nginx auth_request setups (X-Original-URI,
# X-Forwarded-Uri), Spring's ForwardedHeaderFilter and similar (Forwarded, X-Forwarded-Host,
# -Prefix, -Path, -Server), and method-override middleware (a GET decided as a read would be
# served as a DELETE). A client never has a reason to send them to a gateway.
ROUTING_OVERRIDE_HEADERS = frozenset({
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-uri", "x-forwarded-path",
    "x-forwarded-prefix", "x-forwarded-host", "x-forwarded-server", "x-original-host", "x-host",
    "forwarded", "x-http-method-override", "x-http-method", "x-method-override",
})
# Hop-by-hop headers: meaningful for one connection, never forwarded by a proxy (RFC 9110
# §7.6.1, RFC 9112 §9.6, RFC 7230 §A.1.2, RFC 7540 §3.2.1). On a subrequest workerd's HTTP client
# writes its own Connection, Keep-Alive, TE, Trailer, Upgrade and Transfer-Encoding and drops
# the client's, but passes Proxy-Connection, Proxy-Authorization (a credential meant for a
# proxy, not for the origin), Proxy-Authenticate, HTTP2-Settings and every header a Connection
# header names: the gateway removes them all itself (docs/SECURITY.md, "Hop-by-hop headers").
# The body is forwarded with its own framing (platform_io.forward), never by these headers.
HOP_BY_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "trailer",
    "proxy-authorization", "proxy-authenticate", "http2-settings",
})
# Hop-by-hop as well, but workerd's fetch reads `Upgrade: websocket` to make its own WebSocket
# handshake with the origin: kept for that (a GET, as RFC 6455 requires), removed otherwise.
UPGRADE = "upgrade"
WEBSOCKET = "websocket"
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.1 token
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")
_SAFE_IN_LIST = _SAFE.replace(",", "")


# Most values (GUIDs, UPNs, role names) need no encoding; skip quote() for them.
_NEEDS_NO_ENCODING = re.compile(r"[\x20-\x24\x26-\x7e]*+")
_LIST_ITEM_NEEDS_NO_ENCODING = re.compile(r"[\x20-\x24\x26-\x2b\x2d-\x7e]*+")


def header_value(value: str) -> str:
    return value if _NEEDS_NO_ENCODING.fullmatch(value) else quote(value, safe=_SAFE)


def header_list(items) -> str:
    # An item's own commas are encoded, so splitting on "," is always right.
    return ",".join(
        item if _LIST_ITEM_NEEDS_NO_ENCODING.fullmatch(item) else quote(item, safe=_SAFE_IN_LIST) for item in items
    )


_SEPARATORS = re.compile(r"[^a-z0-9]+")


def normalised_name(name: str) -> str:
    """Lower-cased, every run of characters other than letters and digits read as one "-":
    the spellings WSGI/CGI servers (and lighttpd) merge into one variable."""
    return _SEPARATORS.sub("-", name.lower())


def is_websocket_handshake(method: str, upgrade: str | None) -> bool:
    """A WebSocket opening handshake as workerd's fetch reads one: `Upgrade: websocket` (any
    case), on a GET. workerd's own server refuses the header on any other method; the gateway
    removes it there, so the origin never gets a GET handshake for a request decided as a POST."""
    return method == "GET" and upgrade is not None and upgrade.strip(" \t").lower() == WEBSOCKET


def connection_options(connection: str | None) -> frozenset[str]:
    """The header names a Connection header nominates as hop-by-hop (lower-cased); anything
    that is not a field name (an empty item, spaces inside) names nothing."""
    if not connection:
        return frozenset()
    options = (item.strip(" \t").lower() for item in connection.split(","))
    return frozenset(option for option in options if _FIELD_NAME.fullmatch(option))


# Clients send the same few dozen header names over and over: remember each name's verdict.
# Bounded, since names are attacker-chosen: at most MAX_REMEMBERED_NAMES names of at most
# MAX_REMEMBERED_NAME_LENGTH characters (~1024 x (128 + ~120 bytes of str and dict slot)
# = 0.25 MB at worst); a longer name is judged afresh each time, and the oldest goes first.
MAX_REMEMBERED_NAMES = 1024
MAX_REMEMBERED_NAME_LENGTH = 128
_KEEP, _STRIP, _UPGRADE = 0, 1, 2  # remembered verdicts


class HeaderStripper:
    """Which client headers must not reach the origin: every spelling of the identity prefix,
    the lookalike families and names above, routing overrides, hop-by-hop headers (and those
    the client's Connection header names), the operator's additions (STRIP_HEADERS), and
    Authorization unless it is to be forwarded."""

    def __init__(self, prefix: str, forward_authorization: bool, names=frozenset(), families=()):
        names = LOOKALIKE_IDENTITY_HEADERS | ROUTING_OVERRIDE_HEADERS | HOP_BY_HOP_HEADERS | frozenset(names)
        self._names = names if forward_authorization else names | {"authorization"}
        # A family matches its name without the last "-" too: (name + "-").startswith(family).
        self._families = (normalised_name(prefix), *LOOKALIKE_IDENTITY_FAMILIES, *families)
        self._verdicts: dict[str, bool] = {}

    def must_strip(self, name: str) -> bool:
        normal = normalised_name(name)
        return normal in self._names or (normal + "-").startswith(self._families)

    def _verdict(self, name: str) -> int:
        if name.lower() == UPGRADE:
            return _UPGRADE  # decided per request (__call__), not by the name
        return _STRIP if self.must_strip(name) else _KEEP

    def __call__(self, names, connection: str | None = None, websocket: bool = False) -> list[str]:
        """Names (as sent) of client headers that must not reach the origin. `connection`:
        the client's Connection header, whose options are removed too; `websocket`: the
        request is a WebSocket handshake (is_websocket_handshake), whose Upgrade stays."""
        verdicts = self._verdicts
        nominated = connection_options(connection)
        strip = []
        for name in names:
            verdict = verdicts.get(name)
            if verdict is None:
                verdict = self._verdict(name)
                if len(name) <= MAX_REMEMBERED_NAME_LENGTH:
                    if len(verdicts) >= MAX_REMEMBERED_NAMES:
                        del verdicts[next(iter(verdicts))]
                    verdicts[name] = verdict
            if verdict == _UPGRADE:
                if not websocket:
                    strip.append(name)
            elif verdict == _STRIP or (nominated and name.lower() in nominated):
                strip.append(name)
        return strip


def forwarded_groups(identity: Identity, policy_groups: frozenset[str]) -> list[str]:
    return [group for group in identity.groups if group in policy_groups][:MAX_FORWARDED_GROUPS]


def identity_headers(identity: Identity, groups: list[str], prefix: str) -> list[tuple[str, str]]:
    fields = [
        ("user-oid", identity.oid),
        ("tenant-id", identity.tid),
        ("subject", identity.sub),
        ("name", identity.name),
        ("username", identity.username),
        ("client-id", identity.client_id),
        ("token-kind", identity.kind),
        ("auth-method", identity.auth_method),
        ("groups-overage", "true" if identity.groups_overage else None),
        ("scopes", " ".join(identity.scopes)),
    ]
    # Names interned: every remembered identity (gateway.py) shares one copy of each.
    headers = [(sys.intern(prefix + name), header_value(value)) for name, value in fields if value]
    lists = [("groups", groups), ("roles", identity.roles)]
    return headers + [(sys.intern(prefix + name), header_list(items)) for name, items in lists if items]


def referenced_groups(compiled_policy: dict) -> frozenset[str]:
    """Every group id a condition in the compiled policy names (see policy.py's format)."""
    found = set()

    def walk(node):
        if not isinstance(node, list) or len(node) < 2:
            return
        operator, operand = node[0], node[1]
        if operator == "groups":
            found.update(operand)
        elif operator in ("any", "all"):
            for child in operand:
                walk(child)
        elif operator == "not":
            walk(operand)

    for route in compiled_policy.get("routes", []):
        walk(route.get("allow"))
        walk(route.get("deny"))
    return frozenset(found)
