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


# Clients send the same few dozen header names over and over: remember each name's verdict.
# Bounded, since names are attacker-chosen: at most MAX_REMEMBERED_NAMES names of at most
# MAX_REMEMBERED_NAME_LENGTH characters (~1024 x (128 + ~120 bytes of str and dict slot)
# = 0.25 MB at worst); a longer name is judged afresh each time, and the oldest goes first.
MAX_REMEMBERED_NAMES = 1024
MAX_REMEMBERED_NAME_LENGTH = 128


class HeaderStripper:
    """Which client headers must not reach the origin: every spelling of the identity prefix,
    the lookalike families and names above, routing overrides, the operator's additions
    (STRIP_HEADERS), and Authorization unless it is to be forwarded."""

    def __init__(self, prefix: str, forward_authorization: bool, names=frozenset(), families=()):
        names = LOOKALIKE_IDENTITY_HEADERS | ROUTING_OVERRIDE_HEADERS | frozenset(names)
        self._names = names if forward_authorization else names | {"authorization"}
        # A family matches its name without the last "-" too: (name + "-").startswith(family).
        self._families = (normalised_name(prefix), *LOOKALIKE_IDENTITY_FAMILIES, *families)
        self._verdicts: dict[str, bool] = {}

    def must_strip(self, name: str) -> bool:
        normal = normalised_name(name)
        return normal in self._names or (normal + "-").startswith(self._families)

    def __call__(self, names) -> list[str]:
        """Names (as sent) of client headers that must not reach the origin."""
        verdicts = self._verdicts
        strip = []
        for name in names:
            verdict = verdicts.get(name)
            if verdict is None:
                verdict = self.must_strip(name)
                if len(name) <= MAX_REMEMBERED_NAME_LENGTH:
                    if len(verdicts) >= MAX_REMEMBERED_NAMES:
                        del verdicts[next(iter(verdicts))]
                    verdicts[name] = verdict
            if verdict:
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
