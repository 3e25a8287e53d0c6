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
Removed in the same way are well-known identity headers of other proxies
that an origin might trust by mistake, and headers with which some origin frameworks
replace the request's path, host or method (ROUTING_OVERRIDE_HEADERS): the gateway decided
on the request line and Host, so the origin must not act on anything else.
"""

import re
from urllib.parse import quote

from .identity import Identity

DEFAULT_PREFIX = "x-entragate-"
MAX_FORWARDED_GROUPS = 64
# Identity headers set by other proxies and platforms (oauth2-proxy, Azure App Service
# Easy Auth, generic SSO setups): never let a client supply them.
LOOKALIKE_IDENTITY_HEADERS = frozenset({
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
    "x-forwarded-access-token", "x-auth-request-user", "x-auth-request-email", "x-auth-request-groups",
    "x-auth-request-preferred-username", "x-auth-request-access-token", "x-ms-client-principal",
    "x-ms-client-principal-id", "x-ms-client-principal-name", "x-ms-client-principal-idp",
    "x-ms-token-aad-access-token", "x-ms-token-aad-id-token", "remote-user", "x-remote-user",
    "x-user", "x-email",
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


def _normalised(name: str) -> str:
    return _SEPARATORS.sub("-", name.lower())


# Clients send the same few dozen header names over and over: remember each name's verdict.
# Bounded, since names are attacker-chosen; a full memo is simply started again.
MAX_REMEMBERED_NAMES = 1024
_verdicts: dict[tuple[str, str, bool], bool] = {}


def _must_strip(name: str, prefix: str, forward_authorization: bool) -> bool:
    normal = _normalised(name)
    if (normal + "-").startswith(_normalised(prefix)):
        return True
    if normal in LOOKALIKE_IDENTITY_HEADERS or normal in ROUTING_OVERRIDE_HEADERS:
        return True
    return normal == "authorization" and not forward_authorization


def headers_to_strip(names, prefix: str, forward_authorization: bool) -> list[str]:
    """Names (as sent) of client headers that must not reach the origin."""
    strip = []
    for name in names:
        key = (name, prefix, forward_authorization)
        verdict = _verdicts.get(key)
        if verdict is None:
            if len(_verdicts) >= MAX_REMEMBERED_NAMES:
                _verdicts.clear()
            verdict = _verdicts[key] = _must_strip(name, prefix, forward_authorization)
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
        ("groups-overage", "true" if identity.groups_overage else None),
        ("scopes", " ".join(identity.scopes)),
    ]
    headers = [(prefix + name, header_value(value)) for name, value in fields if value]
    lists = [("groups", groups), ("roles", identity.roles)]
    return headers + [(prefix + name, header_list(items)) for name, items in lists if items]


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
