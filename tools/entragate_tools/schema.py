"""The policy file format, as a pydantic v2 schema (build time only; the edge never imports it).

Why TOML: it is parsed by the standard library (`tomllib`), it is the format wrangler.toml
already uses, and it has no implicit typing: in YAML `no`, `on`, `1e3`, `012` and unquoted
GUID-like or time-like strings silently become booleans, numbers or dates, and a policy
language cannot afford a value that means something other than what it looks like. In TOML
a string is always quoted, so `"no"` stays a string and `yes` is a syntax error.

Validation is strict: no type coercion (`public = "true"` is an error, not True) and unknown
keys are errors, so a misspelt `method = [...]` cannot silently mean "all methods".
"""

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from entragate.cors import parse_origin
from entragate.config import AUDIENCE, is_secure_origin
from entragate.errors import AmbiguousPath
from entragate.paths import canonical_path, fold_segment
from entragate.policy import SPELLINGS

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
_NAME_RE = re.compile(NAME_PATTERN)
_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_IPV6_RE = re.compile(r"^\[[0-9a-f:.]+\]$")
_METHOD_RE = re.compile(r"^[A-Z][A-Z0-9_-]*$")
REASONS = (
    "allowed", "public", "no_route", "method_not_allowed", "token_required",
    "denied_by_rule", "condition_not_met", "insufficient_scope", "groups_overage",
    "ambiguous_path",
)
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Browsers cap the preflight cache anyway (Chromium at 7200 s, Firefox at 86400 s).
MAX_CORS_MAX_AGE = 86400


def is_guid(value: str) -> bool:
    return bool(GUID_RE.match(value))


def _check_alias_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"alias name {value!r} must match {NAME_PATTERN}")
    if is_guid(value):
        raise ValueError(f"alias name {value!r} looks like a GUID; names and GUIDs must not mix")
    return value


def _check_guid(value: str) -> str:
    if not is_guid(value):
        raise ValueError(f"{value!r} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
    return value.lower()


def _check_host(value: str) -> str:
    if value == "*":
        return value
    if "://" in value or "/" in value:
        bare = value.partition("://")[2].partition("/")[0] if "://" in value else value.partition("/")[0]
        raise ValueError(f"host {value!r} is a URL: write the host alone ({bare.lower()!r}); paths go in `paths`")
    host = value.lower()
    if host != value:
        raise ValueError(f"host {value!r} must be lower-case (hosts are compared lower-cased)")
    if host.endswith("."):
        raise ValueError(f"host {value!r}: write it without the trailing dot (requests have it stripped)")
    if not host.isascii():
        raise ValueError(f"host {value!r}: write internationalised names in punycode (xn--...)")
    if _IPV6_RE.match(host):
        return host
    if ":" in host:
        raise ValueError(f"host {value!r}: hosts are matched without a port")
    bare = host[2:] if host.startswith("*.") else host
    if "*" in bare:
        raise ValueError(f"host {value!r}: '*' is allowed only as the whole first label ('*.example.com')")
    if not _HOST_RE.match(bare):
        raise ValueError(f"host {value!r} is not a valid host name")
    if host.startswith("*.") and "." not in bare:
        raise ValueError(f"host {value!r}: a wildcard needs at least two labels after '*.'")
    return host


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"path {value!r} must start with '/'")
    segments = value[1:].split("/")
    for i, seg in enumerate(segments):
        if seg == "**":
            if i != len(segments) - 1:
                raise ValueError(f"path {value!r}: '**' is allowed only as the last segment")
        elif "*" in seg and seg != "*":
            raise ValueError(
                f"path {value!r}: '*' must be a whole segment ('/a/*/b'), not part of one"
            )
        elif seg != "*" and "*" in fold_segment(seg):  # the folded index would read it as a wildcard
            raise ValueError(f"path {value!r}: segment {seg!r} folds to a '*' (NFKC); write it another way")
    probe = "/" + "/".join("x" if s in ("*", "**") else s for s in segments)
    try:
        canonical = canonical_path(probe)
    except AmbiguousPath as exc:
        raise ValueError(f"path {value!r} can never match a request: {exc.detail}") from None
    if canonical != probe:
        raise ValueError(
            f"path {value!r}: write paths decoded, as they are matched "
            f"(this one decodes to {canonical!r})"
        )
    return value


def _check_method(value: str) -> str:
    if value == "*":
        return value
    if not _METHOD_RE.match(value):
        raise ValueError(f"method {value!r} must be an upper-case HTTP method such as GET, or '*'")
    return value


def _check_cors_origin(value: str) -> str:
    if value == "*":
        return value
    if value != value.lower():
        raise ValueError(f"origin {value!r} must be lower-case (browsers send origins lower-cased)")
    if value == "null":
        raise ValueError("origin 'null' (sandboxed frames, file: pages, redirects) cannot be told apart; never allow it")
    bare = value.replace("://*.", "://", 1)
    parsed = parse_origin(bare)
    if parsed is None:
        raise ValueError(
            f"origin {value!r} must be scheme://host[:port] (http or https, no path or trailing '/'), "
            "'scheme://*.domain[:port]', or '*'"
        )
    scheme, host, port = parsed
    if (scheme, port) in (("https", "443"), ("http", "80")):
        raise ValueError(f"origin {value!r}: leave out the default port (browsers do)")
    if port and not 0 < int(port) < 65536:
        raise ValueError(f"origin {value!r}: port out of range")
    if bare != value and (host.startswith("[") or "." not in host):
        raise ValueError(f"origin {value!r}: a wildcard needs a domain of at least two labels after '*.'")
    return value


def _check_header_name(value: str) -> str:
    if value != "*" and not _HEADER_NAME_RE.match(value):
        raise ValueError(f"header name {value!r} is not an HTTP header name")
    return value.lower()


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


NonEmptyStr = Annotated[str, Field(min_length=1)]
AliasName = Annotated[str, AfterValidator(_check_alias_name)]
Guid = Annotated[str, AfterValidator(_check_guid)]
GuidList = Annotated[
    list[Guid],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": GUID_RE.pattern},
                {"type": "array", "items": {"type": "string", "pattern": GUID_RE.pattern}, "minItems": 1},
            ]
        }
    ),
]
Host = Annotated[str, AfterValidator(_check_host)]
PathPattern = Annotated[str, AfterValidator(_check_path)]
Method = Annotated[str, AfterValidator(_check_method)]
Values = Annotated[list[NonEmptyStr], Field(min_length=1)]

_STRICT = ConfigDict(extra="forbid", strict=True)

CorsOrigin = Annotated[str, AfterValidator(_check_cors_origin)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]


class Cors(BaseModel):
    """CORS answered at the edge for a route (entragate/cors.py)."""

    model_config = _STRICT

    origins: Annotated[list[CorsOrigin], Field(min_length=1)] = Field(
        description="Origins whose scripts may call the route: 'https://app.example.com' (exact, with a port "
        "if not the default), 'https://*.example.com' (that scheme, any host below example.com), or '*' "
        "(any origin; alone, and never with credentials)."
    )
    methods: Annotated[list[Method], Field(min_length=1)] | None = Field(
        None, description="Methods scripts may use; a subset of the route's. Omitted: the route's methods."
    )
    headers: list[HeaderName] = Field(
        default_factory=list,
        description="Request headers scripts may send beside the CORS-safelisted ones, e.g. 'authorization', "
        "'content-type', 'connect-protocol-version', 'x-grpc-web'. '*': any (never with credentials; it does not "
        "cover 'authorization').",
    )
    expose: list[HeaderName] = Field(
        default_factory=list,
        description="Response headers scripts may read beside the safelisted ones, e.g. 'grpc-status', "
        "'grpc-message'. The gateway's own refusals expose their headers anyway. '*': any (never with credentials).",
    )
    credentials: bool = Field(
        False, description="Allow credentialed requests (cookies, e.g. a sign-in session): "
        "Access-Control-Allow-Credentials: true. Needs exact or pattern origins, not '*'.",
    )
    max_age: Annotated[int, Field(ge=0, le=MAX_CORS_MAX_AGE)] | None = Field(
        None, description="How long (seconds) browsers may cache a preflight answer (Access-Control-Max-Age)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Cors":
        if "*" in self.origins and len(self.origins) > 1:
            raise ValueError("origins: '*' allows every origin; list it alone")
        if self.credentials:
            for key in ("origins", "headers", "expose"):
                if "*" in getattr(self, key):
                    raise ValueError(
                        f"{key}: '*' cannot be used with credentials = true (browsers read it literally, or refuse "
                        "the response); list the values"
                    )
        if self.methods is not None and "*" in self.methods:
            raise ValueError("methods: list the methods (or leave `methods` out for the route's own)")
        for key in ("origins", "methods", "headers", "expose"):
            values = getattr(self, key) or []
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: a value is listed twice")
        return self


class Condition(BaseModel):
    """All keys present in one table must hold (all-of). Lists inside a key are any-of."""

    model_config = _STRICT

    authenticated: Literal[True] | None = Field(
        None, description="Any validated token (use in `deny` for a deny-all route)."
    )
    groups: Values | None = Field(
        None,
        description="Member of any of these groups: aliases from [groups] or object GUIDs. "
        "Fails closed (groups_overage) when the token has too many groups to list them.",
    )
    roles: Values | None = Field(None, description="Has any of these app roles (`roles` claim).")
    scopes: Values | None = Field(None, description="Has any of these delegated scopes (`scp` claim).")
    clients: Values | None = Field(
        None, description="Token requested by any of these client apps (azp / appid): aliases or GUIDs."
    )
    tenants: Values | None = Field(None, description="Token from any of these tenants (tid): aliases or GUIDs.")
    users: Values | None = Field(None, description="Any of these users (oid): aliases or GUIDs.")
    kind: Literal["user", "app"] | None = Field(
        None, description="user: delegated (a person signed in); app: app-only (client credentials)."
    )
    any: Annotated[list["Condition"], Field(min_length=1)] | None = Field(
        None, description="At least one of these conditions holds."
    )
    all: Annotated[list["Condition"], Field(min_length=1)] | None = Field(
        None, description="Every one of these conditions holds."
    )
    not_: "Condition | None" = Field(None, alias="not", description="This condition does not hold.")

    @model_validator(mode="after")
    def _not_empty(self) -> "Condition":
        if not self.model_fields_set:
            raise ValueError(
                "empty condition; name what must hold (use `authenticated = true` for any valid token)"
            )
        return self


class Route(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="Stable rule id shown in decisions and audit logs (default FILE:routes[i])."
    )
    description: str | None = None
    hosts: Annotated[list[Host], Field(min_length=1)] | None = Field(
        None,
        description="Exact hosts, '*.example.com' (any host below example.com), or '*'. "
        "Omitted: any host.",
    )
    paths: Annotated[list[PathPattern], Field(min_length=1)] = Field(
        description="'/exact', '/a/*/b' (* = one segment), '/a/**' (/a and everything below)."
    )
    methods: Annotated[list[Method], Field(min_length=1)] | None = Field(
        None, description="Upper-case methods, or ['*']. Omitted: every method. HEAD is not implied by GET."
    )
    public: bool = Field(False, description="No token needed. Takes no allow/deny.")
    allow: Condition | None = Field(None, description="Allowed when this holds (and deny does not).")
    deny: Condition | None = Field(None, description="Refused when this holds; checked before allow.")
    origin: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None = Field(
        None, description="Forward matching requests to this origin instead of the default one."
    )
    origin_auth: Literal["google"] | None = Field(
        None, description="The route's origin is a Google-authenticated service (a private Cloud Run service): the "
        "gateway sends it a Google-signed ID token (workload identity federation from its own Entra app; "
        "GOOGLE_* variables). Needs `origin`, https.",
    )
    origin_audience: Annotated[str, Field(pattern=AUDIENCE.pattern)] | None = Field(
        None, description="The ID token's audience, when not the origin's scheme://host (a Cloud Run custom "
        "audience). Only with origin_auth.",
    )
    login: bool = Field(
        False, description="Browsers may sign in here (a session cookie): an anonymous navigation is sent to "
        "Entra's sign-in; other clients still need a bearer token. Needs ENTRA_CLIENT_ID, a client credential "
        "and SESSION_KEYS.",
    )
    cors: Cors | None = Field(
        None, description="Scripts on other origins may call this route: preflights are answered at the edge "
        "(no token, no origin call) and responses carry CORS headers. Omitted: preflights are decided like any "
        "OPTIONS request, and the gateway adds no CORS headers.",
    )

    @model_validator(mode="after")
    def _access(self) -> "Route":
        if self.public and (self.allow is not None or self.deny is not None):
            raise ValueError("a public route takes no allow/deny (no token is checked)")
        if self.public and self.login:
            raise ValueError("a public route needs no sign-in: `login` and `public` exclude each other")
        if not self.public and self.allow is None and self.deny is None:
            raise ValueError("route needs `allow`, `deny`, or `public = true` (nothing is allowed by default)")
        if self.cors is not None and self.cors.methods is not None and self.methods is not None and "*" not in self.methods:
            other = [m for m in self.cors.methods if m not in self.methods]
            if other:
                raise ValueError(f"cors.methods: {', '.join(other)} not among the route's methods: a preflight for it "
                                 "is decided by the route that takes that method")
        if self.origin_audience is not None and self.origin_auth is None:
            raise ValueError("origin_audience applies only with origin_auth")
        if self.origin_auth is not None:
            # The default origin's authentication is the deployment's (ORIGIN_AUTH): a route
            # declares it only for an origin it names itself.
            if self.origin is None:
                raise ValueError('origin_auth needs the route\'s own `origin` (for the default origin set ORIGIN_AUTH)')
            if not is_secure_origin(self.origin):
                raise ValueError("origin_auth needs an https origin: the Google ID token is a bearer credential "
                                 "(plain http only for a loopback host)")
        return self


AliasTable = dict[AliasName, GuidList]


class Settings(BaseModel):
    """Policy-wide settings; each may be set in one file only."""

    model_config = _STRICT

    spellings: Literal[SPELLINGS] | None = Field(  # type: ignore[valid-type]
        None,
        description="Other spellings of a path (letter case, one trailing slash, a format suffix "
        "such as .json, NFKC forms), which many origins serve as the same path. 'refuse' "
        "(default): match paths as written, and refuse with 400 ambiguous_path a request whose "
        "spelling reaches another route than its folded form would. 'fold': match every path on "
        "its folded form; only when every origin treats these spellings as one path.",
    )


class PolicyFile(BaseModel):
    """One file in policies/. Alias tables are shared by all files; routes are merged."""

    model_config = ConfigDict(extra="forbid", strict=True, title="entragate policy file")

    groups: AliasTable = Field(default_factory=dict, description="Group alias = object GUID(s).")
    users: AliasTable = Field(default_factory=dict, description="User alias = object id(s) (oid).")
    clients: AliasTable = Field(default_factory=dict, description="Client app alias = application id(s).")
    tenants: AliasTable = Field(default_factory=dict, description="Tenant alias = tenant id(s).")
    settings: Settings = Field(default_factory=Settings, description="Policy-wide settings.")
    routes: list[Route] = Field(default_factory=list)


class TestCase(BaseModel):
    model_config = _STRICT

    name: NonEmptyStr
    method: Method
    url: Annotated[str, Field(pattern=r"^https?://")]
    identity: str | None = Field(None, description="Name of an entry in [identities]; omitted: no token.")
    claims: dict[str, Any] | None = Field(None, description="Token claims inline (instead of identity).")
    expect: Literal["allow", "deny", "gateway"] = Field(
        description="allow or deny (a request refused before matching, e.g. an ambiguous path or "
        "host, is deny with reason ambiguous_path); gateway: one of the gateway's own endpoints "
        "(health, jwks), answered before any policy."
    )
    reason: Literal[REASONS] | None = None  # type: ignore[valid-type]
    rule: str | None = None
    graph_groups: list[NonEmptyStr] | None = Field(
        None, description="For an identity with groups overage: what Microsoft Graph answers (GRAPH_GROUPS = true), "
        "the groups (aliases or ids) the user is a member of; [] for none.")

    @model_validator(mode="after")
    def _one_identity(self) -> "TestCase":
        if self.identity is not None and self.claims is not None:
            raise ValueError("give `identity` or `claims`, not both")
        if self.expect == "gateway" and (self.reason is not None or self.rule is not None):
            raise ValueError('expect = "gateway" takes no reason or rule: no policy decides it')
        return self


class TestFile(BaseModel):
    """A file in policies/tests/: named token claims and request cases."""

    model_config = ConfigDict(extra="forbid", strict=True, title="entragate policy tests")

    identities: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cases: Annotated[list[TestCase], Field(min_length=1)]


def policy_json_schema() -> dict:
    return PolicyFile.model_json_schema()


def tests_json_schema() -> dict:
    return TestFile.model_json_schema()
