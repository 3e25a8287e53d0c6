"""What a request is for: the host and path that policy decides on, read from the request URL.

One function, used by the gateway and by the CLI's `explain` / `test`, so both decide on
exactly the same host and path (or refuse the same URLs).

- The URL is the one the runtime parsed (`request.url`): scheme://host[:port]/path?query.
- The host keeps an IPv6 literal's brackets (`[::1]`), so a policy that names `[::1]` matches
  it; it is lower-cased, loses its port and one trailing dot (`paths.canonical_host`).
- A host with an empty label (`a.example.com..`, `.a.example.com`) names no host a route can,
  so it would fall through to any-host routes past a host-specific deny: refused.
- Paths under GATEWAY_PATHS are the gateway's own endpoints, answered before any policy.
- Otherwise the raw path (percent-encoded, as forwarded) must pass `paths.canonical_path`.
"""

from dataclasses import dataclass

from .assertion import JWKS_PATH
from .errors import AmbiguousPath
from .paths import canonical_host, canonical_path, host_without_port

HEALTH_PATH = "/.well-known/entragate/health"
GATEWAY_PATHS = {
    HEALTH_PATH: "health", JWKS_PATH: "jwks",
    # Browser sign-in (signin.py): answered by the gateway whether or not sign-in is configured.
    "/.well-known/entragate/signin": "signin",
    "/.well-known/entragate/callback": "callback",
    "/.well-known/entragate/logout": "logout",
    "/.well-known/entragate/frontchannel-logout": "frontchannel_logout",
    "/.well-known/entragate/signed-out": "signed_out",
}


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # canonical: what routes are matched against
    path_and_query: str  # raw, byte for byte: what the origin receives after its base URL
    path: str | None  # canonical path; None for the gateway's own endpoints
    endpoint: str | None = None  # GATEWAY_PATHS' name for the gateway's own endpoints


def split_url(url: str) -> tuple[str, str]:
    """(host as sent, lower-cased and without port; raw path and query) of an absolute URL.
    Never raises: "" for a part that is absent. The audit line records these."""
    rest = url.partition("://")[2]
    slash = rest.find("/")
    authority, path_and_query = (rest[:slash], rest[slash:]) if slash >= 0 else (rest, "")
    return host_without_port(authority.rpartition("@")[2]), path_and_query


def request_target(url: str) -> Target:
    """Raises AmbiguousPath (400) for a URL with no usable host or an ambiguous path."""
    host_as_sent, path_and_query = split_url(url)
    host = canonical_host(host_as_sent)
    if not host or not path_and_query:
        raise AmbiguousPath("request URL has no host or path")
    if host.startswith(".") or ".." in host:
        raise AmbiguousPath("host has an empty label")
    raw_path = path_and_query.partition("?")[0]
    endpoint = GATEWAY_PATHS.get(raw_path)
    if endpoint is not None:
        return Target(host, path_and_query, None, endpoint)
    return Target(host, path_and_query, canonical_path(raw_path))
