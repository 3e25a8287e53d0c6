"""CORS at the edge, for routes whose policy declares it (`cors = {…}` in policies/*.toml).

Standard library only (runs in Pyodide). The compiler checks the settings (schema.py); this
module reads their compiled form and answers:

- a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) for a route with a
  CORS policy, without a token and without calling the origin: 204 with the route's CORS
  headers when the origin, the method and every requested header are allowed, else a 403
  `cors_preflight_refused` without CORS headers (the browser then stops the request). A
  preflight for a route without a CORS policy is not answered here: it is decided like any
  OPTIONS request, as before;
- every other response of such a route (the origin's, and the gateway's own refusals, so a
  script can read a 401 or 403 rather than a network error) gets `Access-Control-Allow-Origin`
  (the request's `Origin` when it is allowed; `*` for `origins = ["*"]` without credentials),
  `Access-Control-Allow-Credentials`, `Access-Control-Expose-Headers`, and `Vary: Origin`.
  The gateway owns CORS on these routes: the origin's own `Access-Control-*` response headers
  are replaced.

Compiled form (in a route of the compiled policy)::

    {"origins": [ORIGIN, ...], "methods": [METHOD, ...] | null, "headers": [name, ...],
     "expose": [name, ...], "credentials": bool, "max_age": int | null}

    ORIGIN  "*" (any origin; alone, never with credentials) | "https://app.example.com[:port]"
            | "https://*.example.com[:port]" (that scheme and port, any host below example.com)

Header names are lower-case; "*" in `headers` or `expose` is the Fetch wildcard (never with
credentials; it never covers `authorization`, which a route must name).
"""

import re

# A host name as browsers serialise it in Origin: lower-case labels (punycode for IDNs).
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_ORIGIN_RE = re.compile(rf"^(https?)://((?:{_LABEL}\.)*{_LABEL}|\[[0-9a-f:.]+\])(?::([0-9]{{1,5}}))?$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")
# Response headers every script may read anyway (Fetch's CORS-safelisted response headers).
_SAFELISTED_RESPONSE = frozenset({"cache-control", "content-language", "content-length", "content-type", "expires",
                                  "last-modified", "pragma"})
PREFLIGHT_REFUSED = "cors_preflight_refused"


def parse_origin(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of a serialised origin; None for anything else (`null`, a path…)."""
    found = _ORIGIN_RE.match(origin)
    if found is None:
        return None
    return found.group(1), found.group(2), found.group(3) or ""


def is_method(value: str) -> bool:
    """An HTTP method (a token), as `Access-Control-Request-Method` must hold."""
    return bool(value) and _TOKEN_RE.match(value.lower()) is not None


def header_list(value: str | None) -> list[str] | None:
    """`Access-Control-Request-Headers` as lower-case names; None if it is not a list of tokens."""
    if not value or not value.strip():
        return []
    names = [name.strip().lower() for name in value.split(",")]
    if not all(_TOKEN_RE.match(name) for name in names):
        return None
    return names


class CorsPolicy:
    """One route's CORS settings, from the compiled policy."""

    __slots__ = ("any_origin", "exact", "wildcards", "methods", "headers", "any_header", "allow_headers",
                 "expose", "credentials", "max_age")

    def __init__(self, data: dict):
        origins = data["origins"]
        self.any_origin = "*" in origins
        self.exact = frozenset(origin for origin in origins if "*" not in origin)
        # ("https", ".example.com", "8443")
        self.wildcards = tuple(
            (scheme, "." + rest.partition(":")[0], rest.partition(":")[2])
            for scheme, _, rest in (origin.partition("://*.") for origin in origins if "://*." in origin)
        )
        self.methods = tuple(data["methods"]) if data.get("methods") else None
        self.headers = frozenset(data.get("headers") or ())
        self.any_header = "*" in self.headers
        self.allow_headers = ", ".join(data.get("headers") or ())
        self.expose = tuple(data.get("expose") or ())
        self.credentials = bool(data.get("credentials"))
        self.max_age = data.get("max_age")

    def allows_origin(self, origin: str | None) -> bool:
        if not origin:
            return False
        if self.any_origin:
            return True
        if origin in self.exact:
            return True
        parsed = parse_origin(origin) if self.wildcards else None
        if parsed is None:
            return False
        scheme, host, port = parsed
        return any(scheme == w_scheme and port == w_port and host.endswith(suffix) and len(host) > len(suffix)
                   for w_scheme, suffix, w_port in self.wildcards)

    def _allow_origin(self, origin: str) -> tuple[tuple[str, str], ...]:
        if self.any_origin and not self.credentials:
            return (("access-control-allow-origin", "*"),)
        headers = (("access-control-allow-origin", origin),)
        if self.credentials:
            headers += (("access-control-allow-credentials", "true"),)
        return headers

    @property
    def varies(self) -> bool:
        """Whether the answer depends on the request's Origin (it does unless it is always `*`)."""
        return not (self.any_origin and not self.credentials)

    def preflight(self, origin: str | None, method: str, request_headers: str | None,
                  route_methods: tuple[str, ...]) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """(None, headers of the 204) when allowed, else (what was refused, ()). `method` is the
        one the route was matched with, so the route takes it; `methods` may narrow it."""
        if not self.allows_origin(origin):
            return "the origin is not allowed", ()
        if self.methods is not None and method not in self.methods:
            return "the method is not allowed", ()
        names = header_list(request_headers)
        if names is None:
            return "the requested headers are malformed", ()
        if not self.any_header and any(name not in self.headers for name in names):
            return "a requested header is not allowed", ()
        if self.any_header and self.credentials:  # the schema refuses this; never widen it here
            return "a requested header is not allowed", ()
        if self.methods is not None:
            allowed_methods = ", ".join(self.methods)
        elif route_methods and "*" not in route_methods:
            allowed_methods = ", ".join(route_methods)
        else:
            allowed_methods = method
        headers = self._allow_origin(origin) + (("access-control-allow-methods", allowed_methods),)
        if self.allow_headers:
            headers += (("access-control-allow-headers", self.allow_headers),)
        if self.max_age is not None:
            headers += (("access-control-max-age", str(self.max_age)),)
        vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        return None, headers + (("vary", vary),)

    def response_headers(self, origin: str | None, answer_headers=()) -> tuple[tuple[str, str], ...]:
        """Headers for an actual response. `answer_headers`: the gateway's own answer's headers,
        which are exposed too (its `grpc-status`, `www-authenticate`, `x-request-id`…)."""
        vary = (("vary", "Origin"),) if self.varies else ()
        if not self.allows_origin(origin):
            return vary
        expose = list(self.expose)
        if "*" not in expose:
            for name, _ in answer_headers:
                if name not in _SAFELISTED_RESPONSE and name != "set-cookie" and name not in expose:
                    expose.append(name)
        headers = self._allow_origin(origin)
        if expose:
            headers += (("access-control-expose-headers", ", ".join(expose)),)
        return headers + vary
