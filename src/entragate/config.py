"""Gateway configuration, read from Worker variables (wrangler.toml [vars], secrets, --var).

Every value is checked once at start-up; a bad value is a ConfigError naming the variable,
and the Worker then refuses every request (fail closed) instead of guessing.
"""

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .assertion import AssertionKeyError, parse_signing_key
from .authority import LOOPBACK_HOSTS, canonical_authority, document_url
from .client_auth import Certificate, CredentialError, parse_certificate
from .pages import DEFAULT_BRAND_NAME, EMAIL_PATTERN, HTTPS_PATTERN, LOGO_PATTERN, MAX_LOGO_CHARS, Branding
from .sessions import SessionKey, SessionKeyError, parse_session_keys
from .upstream import DEFAULT_PREFIX, normalised_name

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_ALGORITHMS = ("RS256",)
# Entra signs access tokens with RS256 only; the other RSASSA-PKCS1-v1_5 hashes are the
# only alternatives WebCrypto and the host verifier both implement identically.
SUPPORTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
DEFAULT_TOKEN_VERSIONS = ("1.0", "2.0")
DEFAULT_CLOCK_SKEW_SECONDS = 60
# Microsoft: refresh signing keys about every hour; keys stay valid for at least 24 h.
DEFAULT_JWKS_MAX_AGE_SECONDS = 3600
# At most one key-endpoint fetch per issuer per minute, whatever the traffic: an unknown
# `kid` is attacker-controlled, so it must not buy more fetches than this.
DEFAULT_JWKS_COOLDOWN_SECONDS = 60
DEFAULT_FETCH_TIMEOUT_SECONDS = 5.0
DEFAULT_ORIGIN_TIMEOUT_SECONDS = 30.0
DEFAULT_ASSERTION_ISSUER = "entragate"
# A verified token is trusted from memory for at most this long (and never past its exp).
DEFAULT_TOKEN_CACHE_SECONDS = 300
HEADER_PREFIX = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*-$")
# A header name as RFC 9110 allows it (a token), before normalisation.
HEADER_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
MULTI_TENANT_AUTHORITIES = frozenset({"organizations", "common"})
ANY_TENANT = "*"

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# A browser session lasts this long from sign-in (then the user signs in again), 8 h by default,
# at most a week: Entra's own sign-in sessions are re-evaluated at least that often.
DEFAULT_SESSION_LIFETIME_SECONDS = 8 * 3600
MAX_SESSION_LIFETIME_SECONDS = 7 * 24 * 3600
# Groups overage resolved through Microsoft Graph (graph.py): each user's answer is reused this
# long (Entra's own group claims are as old as the token, up to 60-90 minutes).
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_GRAPH_CACHE_SECONDS = 300
DEFAULT_GRAPH_TIMEOUT_SECONDS = 3.0


class ConfigError(ValueError):
    """One or more problems (`problems`), each naming its variable, never its value."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """The gateway's own app registration, for everything it asks Entra as itself: browser
    sign-in, Microsoft Graph, Google workload identity federation."""

    client_id: str
    certificate: Certificate | None
    secret: str | None


# Google-authenticated origins (google.py): Google's endpoints, overridable for tests and
# sovereign clouds, and how the gateway proves who it is there.
DEFAULT_GOOGLE_STS_URL = "https://sts.googleapis.com/v1/token"
DEFAULT_GOOGLE_IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com/v1"
ORIGIN_AUTH_KINDS = ("none", "google")
# //iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>:
# pool and provider ids are 4-32 lower-case letters, digits and dashes (Google's rules).
WORKLOAD_PROVIDER = re.compile(
    r"^//[a-z0-9.-]+/projects/[0-9]{1,20}/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}"
    r"/providers/[a-z0-9-]{4,32}$")
# A service account's e-mail (name@project.iam.gserviceaccount.com, or another domain in a
# sovereign cloud): it goes into the IAM Credentials URL, so nothing but these characters.
SERVICE_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}@[a-z0-9][a-z0-9.-]{0,200}[a-z0-9]$")
# An audience is compared byte for byte by Google's front end: printable ASCII, no spaces.
AUDIENCE = re.compile(r"^[\x21-\x7e]{1,512}$")
DOT_DEFAULT = "/.default"


@dataclass(frozen=True, slots=True)
class GoogleSettings:
    """Workload identity federation from the gateway's Entra app to a Google service account
    (google.py): which Entra token, which pool provider, which service account, where."""

    workload_provider: str  # the STS audience: //iam.googleapis.com/projects/.../providers/...
    service_account: str
    entra_scope: str  # <Application ID URI>/.default: the token the provider trusts
    entra_tenant: str  # the tenant whose token endpoint issues it (a GUID)
    sts_url: str
    iam_credentials_url: str


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Browser sessions (signin.py)."""

    keys: tuple[SessionKey, ...]
    lifetime: int


@dataclass(frozen=True, slots=True)
class GraphSettings:
    """Groups overage resolved through Microsoft Graph (graph.py), as the gateway's own app."""

    url: str  # scheme://host[:port] of Microsoft Graph (national clouds have their own)
    cache_seconds: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Config:
    origin_url: str
    tenant: str
    authority: str
    audiences: frozenset[str]
    allowed_tenants: frozenset[str]
    token_versions: tuple[str, ...]
    algorithms: frozenset[str]
    clock_skew: int
    jwks_max_age: int
    jwks_cooldown: int
    fetch_timeout: float
    origin_timeout: float
    header_prefix: str
    forward_authorization: bool
    assertion_private_jwk: dict | None
    assertion_public_jwk: dict | None
    assertion_published_jwks: tuple[dict, ...]
    assertion_issuer: str
    audit_allow_sample_rate: float
    token_cache_seconds: int
    # STRIP_HEADERS: client headers the operator also wants removed, beside the built-in list.
    strip_header_names: frozenset[str] = frozenset()
    strip_header_families: tuple[str, ...] = ()
    client: ClientSettings | None = None
    sessions: SessionSettings | None = None
    branding: Branding = Branding()
    graph: GraphSettings | None = None
    google: GoogleSettings | None = None
    # ORIGIN_AUTH = "google": the default origin (ORIGIN_URL) needs a Google ID token for
    # ORIGIN_AUDIENCE (its scheme://host unless set). Routes with their own origin say so in
    # the policy (`origin_auth`).
    origin_auth: str | None = None
    origin_audience: str | None = None

    @property
    def multi_tenant(self) -> bool:
        return self.tenant in MULTI_TENANT_AUTHORITIES

    def tenant_allowed(self, tid: str) -> bool:
        if self.multi_tenant:
            return ANY_TENANT in self.allowed_tenants or tid in self.allowed_tenants
        return tid == self.tenant

    @classmethod
    def from_env(cls, get) -> "Config":
        """`get(name)` returns the variable's value or None. Every variable is checked, and
        every problem reported at once (ConfigError.problems), not only the first."""
        reader = _Reader(get)
        field = reader.field
        tenant = field(lambda: _tenant(reader), "")
        allowed_tenants = field(lambda: _allowed_tenants(reader, tenant), frozenset())
        algorithms = field(lambda: _algorithms(reader), frozenset(DEFAULT_ALGORITHMS))
        versions = field(lambda: _versions(reader), DEFAULT_TOKEN_VERSIONS)
        audiences = field(lambda: _audiences(reader, versions), frozenset())
        signing = field(lambda: _signing_key(reader), (None, None))
        client = field(lambda: _client_settings(reader))
        origin_url = field(lambda: reader.url("ORIGIN_URL"), "")
        origin_auth, origin_audience = field(lambda: _origin_auth(reader, origin_url), (None, None))
        config = cls(
            origin_url=origin_url,
            tenant=tenant,
            # Signing keys come from here (authority.py): https, in the one spelling the runtime's
            # URL parser also gives it, so documents' URLs can be compared with it as strings.
            authority=field(lambda: reader.authority("ENTRA_AUTHORITY", DEFAULT_AUTHORITY), DEFAULT_AUTHORITY),
            audiences=audiences,
            allowed_tenants=allowed_tenants,
            token_versions=versions,
            algorithms=algorithms,
            clock_skew=field(lambda: reader.integer("CLOCK_SKEW_SECONDS", DEFAULT_CLOCK_SKEW_SECONDS, 0, 600), 0),
            jwks_max_age=field(lambda: reader.integer("JWKS_MAX_AGE_SECONDS", DEFAULT_JWKS_MAX_AGE_SECONDS, 60, 86400), 0),
            jwks_cooldown=field(lambda: reader.integer("JWKS_COOLDOWN_SECONDS", DEFAULT_JWKS_COOLDOWN_SECONDS, 0, 3600), 0),
            fetch_timeout=field(lambda: reader.integer(
                "FETCH_TIMEOUT_MS", int(DEFAULT_FETCH_TIMEOUT_SECONDS * 1000), 100, 30000) / 1000, 0),
            origin_timeout=field(lambda: reader.integer(
                "ORIGIN_TIMEOUT_MS", int(DEFAULT_ORIGIN_TIMEOUT_SECONDS * 1000), 100, 300000) / 1000, 0),
            header_prefix=field(lambda: _header_prefix(reader), DEFAULT_PREFIX),
            forward_authorization=field(lambda: reader.boolean("FORWARD_AUTHORIZATION", False), False),
            assertion_private_jwk=signing[0],
            assertion_public_jwk=signing[1],
            # Extra public keys served beside the current one: the next key before a rotation, the
            # previous one after it, so origins never meet a kid they cannot fetch.
            assertion_published_jwks=field(lambda: reader.public_jwks("ASSERTION_PUBLISHED_KEYS"), ()),
            assertion_issuer=field(lambda: reader.text("ASSERTION_ISSUER", DEFAULT_ASSERTION_ISSUER), ""),
            audit_allow_sample_rate=field(lambda: reader.fraction("AUDIT_ALLOW_SAMPLE_RATE", 1.0), 1.0),
            token_cache_seconds=field(lambda: reader.integer("TOKEN_CACHE_SECONDS", DEFAULT_TOKEN_CACHE_SECONDS, 0, 3600), 0),
            **field(lambda: reader.header_names("STRIP_HEADERS"), {}),
            client=client,
            sessions=field(lambda: _session_settings(reader)),
            branding=field(lambda: _branding(reader), Branding()),
            graph=field(lambda: _graph_settings(reader, client)),
            google=field(lambda: _google_settings(reader, tenant, client, origin_auth)),
            origin_auth=origin_auth,
            origin_audience=origin_audience,
        )
        if reader.problems:
            raise ConfigError(reader.problems)
        return config


def _tenant(reader: "_Reader") -> str:
    tenant = reader.text("ENTRA_TENANT_ID").lower()
    if tenant not in MULTI_TENANT_AUTHORITIES and not GUID.match(tenant):
        hint = ""
        if "." in tenant:
            hint = " (a domain name like contoso.onmicrosoft.com: use the tenant id GUID it stands for)"
        raise ConfigError(f"ENTRA_TENANT_ID must be a tenant GUID, 'organizations' or 'common'{hint}")
    return tenant


def _allowed_tenants(reader: "_Reader", tenant: str) -> frozenset[str]:
    allowed = frozenset(t.lower() for t in reader.items("ENTRA_ALLOWED_TENANTS", ()))
    if tenant in MULTI_TENANT_AUTHORITIES:
        if not allowed:
            raise ConfigError(
                "ENTRA_ALLOWED_TENANTS is required for a multi-tenant ENTRA_TENANT_ID: list the "
                "tenant GUIDs to accept, or '*' to accept any Entra tenant (rarely what you want)"
            )
        bad = [t for t in allowed if t != ANY_TENANT and not GUID.match(t)]
        if bad:
            raise ConfigError(f"ENTRA_ALLOWED_TENANTS: not a tenant GUID: {bad[0]!r}{_list_hint(bad[0])}")
    elif allowed:
        raise ConfigError("ENTRA_ALLOWED_TENANTS applies only when ENTRA_TENANT_ID is organizations/common")
    return allowed


def _algorithms(reader: "_Reader") -> frozenset[str]:
    algorithms = frozenset(reader.items("JWT_ALGORITHMS", DEFAULT_ALGORITHMS))
    unsupported = algorithms - SUPPORTED_ALGORITHMS
    if unsupported:
        raise ConfigError(f"JWT_ALGORITHMS: unsupported {sorted(unsupported)}; choose from {sorted(SUPPORTED_ALGORITHMS)}")
    return algorithms


def _versions(reader: "_Reader") -> tuple[str, ...]:
    versions = reader.items("ENTRA_TOKEN_VERSIONS", DEFAULT_TOKEN_VERSIONS)
    if not set(versions) <= set(DEFAULT_TOKEN_VERSIONS):
        raise ConfigError(f"ENTRA_TOKEN_VERSIONS: only 1.0 and 2.0 exist{_list_hint(next(iter(versions)))}")
    return versions


def _audiences(reader: "_Reader", versions: tuple[str, ...]) -> frozenset[str]:
    audiences = reader.items("ENTRA_AUDIENCES")
    for audience in audiences:
        if " " in audience:
            raise ConfigError(f"ENTRA_AUDIENCES: {audience!r} holds a space{_list_hint(audience)}")
        if not GUID.match(audience.lower()) and "://" not in audience:
            raise ConfigError(f"ENTRA_AUDIENCES: {audience!r} is neither a client id (GUID) nor an Application ID URI "
                              "(api://…): no Entra token can carry it as its aud")
    # v2.0 access tokens always carry the API's client id as `aud`, never its Application ID URI.
    if versions == ("2.0",) and not any(GUID.match(a.lower()) for a in audiences):
        raise ConfigError("ENTRA_AUDIENCES names no client id (GUID), but only v2.0 tokens are accepted "
                          "(ENTRA_TOKEN_VERSIONS) and their aud is always the client id: no token could match")
    return _audience_forms(audiences)


def _header_prefix(reader: "_Reader") -> str:
    prefix = reader.text("IDENTITY_HEADER_PREFIX", DEFAULT_PREFIX).lower()
    if not HEADER_PREFIX.match(prefix):
        raise ConfigError("IDENTITY_HEADER_PREFIX must be lower-case letters, digits and dashes, ending with '-'")
    return prefix


def _signing_key(reader: "_Reader") -> tuple:
    signing_key = reader.text("ASSERTION_SIGNING_KEY", "") or None
    try:
        return parse_signing_key(signing_key) if signing_key else (None, None)
    except AssertionKeyError as error:
        raise ConfigError(str(error)) from None


def _list_hint(item: str) -> str:
    return " (lists are comma-separated, not space-separated)" if " " in item.strip() else ""


CLIENT_VARIABLES = ("ENTRA_CLIENT_ID", "ENTRA_CLIENT_CERTIFICATE", "ENTRA_CLIENT_SECRET")


def _client_settings(reader: "_Reader") -> ClientSettings | None:
    """None when none of its variables is set (bearer-only deployments need none)."""
    if not any(reader.present(name) for name in CLIENT_VARIABLES):
        return None
    client_id = reader.text("ENTRA_CLIENT_ID").lower()
    if not GUID.match(client_id):
        raise ConfigError("ENTRA_CLIENT_ID must be the gateway app registration's client id (a GUID)")
    certificate_text = reader.text("ENTRA_CLIENT_CERTIFICATE", "") or None
    secret = reader.text("ENTRA_CLIENT_SECRET", "") or None
    if (certificate_text is None) == (secret is None):
        raise ConfigError("set one of ENTRA_CLIENT_CERTIFICATE (recommended) or ENTRA_CLIENT_SECRET, as a secret")
    try:
        certificate = parse_certificate(certificate_text) if certificate_text else None
    except CredentialError as error:
        raise ConfigError(str(error)) from None
    return ClientSettings(client_id, certificate, secret)


GRAPH_VARIABLES = ("GRAPH_URL", "GRAPH_CACHE_SECONDS", "GRAPH_TIMEOUT_MS")


def _graph_settings(reader: "_Reader", client: ClientSettings | None) -> GraphSettings | None:
    """None unless GRAPH_GROUPS = true; its other variables alone are refused, since whoever
    set them expects a lookup that would not happen."""
    if not reader.boolean("GRAPH_GROUPS", False):
        stray = [name for name in GRAPH_VARIABLES if reader.present(name)]
        if stray:
            raise ConfigError(f"{stray[0]} is set but GRAPH_GROUPS is not true")
        return None
    if client is None:
        raise ConfigError("GRAPH_GROUPS = true needs the gateway's own app registration: set ENTRA_CLIENT_ID and "
                          "ENTRA_CLIENT_CERTIFICATE (or ENTRA_CLIENT_SECRET)")
    # The app token goes here: over plain http anyone on the path could take it.
    # Graph's origin alone (e.g. https://graph.microsoft.us), in the spelling the runtime prints.
    url = reader.authority("GRAPH_URL", DEFAULT_GRAPH_URL)
    return GraphSettings(
        url=url,
        cache_seconds=reader.integer("GRAPH_CACHE_SECONDS", DEFAULT_GRAPH_CACHE_SECONDS, 60, 86400),
        timeout=reader.integer("GRAPH_TIMEOUT_MS", int(DEFAULT_GRAPH_TIMEOUT_SECONDS * 1000), 100, 30000) / 1000,
    )


GOOGLE_VARIABLES = ("GOOGLE_WORKLOAD_PROVIDER", "GOOGLE_SERVICE_ACCOUNT", "GOOGLE_STS_URL",
                    "GOOGLE_IAM_CREDENTIALS_URL", "ENTRA_WIF_SCOPE", "ENTRA_WIF_TENANT_ID")


def origin_audience_of(url: str) -> str:
    """The audience Cloud Run expects by default: the service URL, scheme://host[:port]."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def is_secure_origin(url: str) -> bool:
    """https, or plain http to a loopback host (a local mock): a bearer ID token for Google's
    front end never crosses a network in the clear."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme == "https" or (parts.scheme == "http" and (host in LOOPBACK_HOSTS or f"[{host}]" in LOOPBACK_HOSTS))


def _origin_auth(reader: "_Reader", origin_url: str) -> tuple[str | None, str | None]:
    kind = reader.text("ORIGIN_AUTH", "none").lower()
    if kind not in ORIGIN_AUTH_KINDS:
        raise ConfigError(f"ORIGIN_AUTH must be one of {', '.join(ORIGIN_AUTH_KINDS)}")
    audience = reader.text("ORIGIN_AUDIENCE", "") or None
    if kind == "none":
        if audience is not None:
            raise ConfigError("ORIGIN_AUDIENCE applies only with ORIGIN_AUTH = google")
        return None, None
    if not origin_url:
        return kind, None  # ORIGIN_URL's own problem is reported already
    if not is_secure_origin(origin_url):
        raise ConfigError("ORIGIN_URL must be https with ORIGIN_AUTH = google (the Google ID token is a bearer "
                          "credential; plain http only for a loopback host)")
    if audience is not None and not AUDIENCE.match(audience):
        raise ConfigError("ORIGIN_AUDIENCE must be printable ASCII without spaces, at most 512 characters")
    return kind, audience or origin_audience_of(origin_url)


def _google_url(reader: "_Reader", name: str, default: str) -> str:
    """A Google endpoint, checked as Entra URLs are (authority.py): the host in the one spelling
    the runtime's URL parser gives it (https; plain http only for a loopback host), then a plain
    path, so the string checked is the string fetched."""
    value = reader.text(name, default).rstrip("/")
    scheme, separator, rest = value.partition("://")
    host, slash, path = rest.partition("/")
    try:
        authority = canonical_authority(f"{scheme}{separator}{host}")
        return document_url(f"{authority}{slash}{path}", authority)
    except ValueError as error:
        raise ConfigError(f"{name} {error} (expected https://host/path)") from None


def _google_settings(reader: "_Reader", tenant: str, client: ClientSettings | None,
                     origin_auth: str | None) -> GoogleSettings | None:
    """None when no Google variable is set and the default origin does not need Google (a
    policy route that does is refused when the gateway is assembled)."""
    if origin_auth != "google" and not any(reader.present(name) for name in GOOGLE_VARIABLES):
        return None
    problems = []

    def check(compute, fallback=None):
        try:
            return compute()
        except ConfigError as error:
            problems.extend(error.problems)
            return fallback

    def provider() -> str:
        value = reader.text("GOOGLE_WORKLOAD_PROVIDER")
        if value.startswith("projects/"):  # the form `gcloud ... describe --format='value(name)'` prints
            value = "//iam.googleapis.com/" + value
        if not WORKLOAD_PROVIDER.match(value):
            raise ConfigError("GOOGLE_WORKLOAD_PROVIDER must be the provider's resource name: //iam.googleapis.com/"
                              "projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>")
        return value

    def service_account() -> str:
        value = reader.text("GOOGLE_SERVICE_ACCOUNT").lower()
        if not SERVICE_ACCOUNT.match(value):
            raise ConfigError("GOOGLE_SERVICE_ACCOUNT must be the service account's e-mail "
                              "(name@project.iam.gserviceaccount.com)")
        return value

    def scope() -> str | None:
        if client is None and not reader.present("ENTRA_WIF_SCOPE"):
            return None
        value = reader.text("ENTRA_WIF_SCOPE", f"api://{client.client_id if client else ''}{DOT_DEFAULT}")
        if not value.endswith(DOT_DEFAULT) or len(value) == len(DOT_DEFAULT) or " " in value:
            raise ConfigError("ENTRA_WIF_SCOPE must be one <Application ID URI>/.default (client credentials)")
        return value

    def wif_tenant() -> str:
        value = reader.text("ENTRA_WIF_TENANT_ID", "" if tenant in MULTI_TENANT_AUTHORITIES or not tenant else tenant)
        if not GUID.match(value.lower()):
            raise ConfigError("ENTRA_WIF_TENANT_ID must be the tenant GUID whose tokens the workload identity provider "
                              "trusts (required when ENTRA_TENANT_ID is organizations/common)")
        return value.lower()

    settings = dict(
        workload_provider=check(provider), service_account=check(service_account), entra_scope=check(scope),
        entra_tenant=check(wif_tenant) if tenant or reader.present("ENTRA_WIF_TENANT_ID") else None,
        sts_url=check(lambda: _google_url(reader, "GOOGLE_STS_URL", DEFAULT_GOOGLE_STS_URL)),
        iam_credentials_url=check(lambda: _google_url(reader, "GOOGLE_IAM_CREDENTIALS_URL",
                                                      DEFAULT_GOOGLE_IAM_CREDENTIALS_URL)),
    )
    if client is None and not any(reader.present(name) for name in CLIENT_VARIABLES):
        problems.append("Google-authenticated origins need the gateway's own Entra app: set ENTRA_CLIENT_ID and "
                        "ENTRA_CLIENT_CERTIFICATE (or ENTRA_CLIENT_SECRET)")
    if problems:
        raise ConfigError(problems)
    if client is None:
        return None  # the client variables' own problems are reported already
    return GoogleSettings(**settings)


def _session_settings(reader: "_Reader") -> SessionSettings | None:
    if not reader.present("SESSION_KEYS"):
        return None
    try:
        keys = parse_session_keys(reader.text("SESSION_KEYS"))
    except SessionKeyError as error:
        raise ConfigError(str(error)) from None
    lifetime = reader.integer("SESSION_LIFETIME_SECONDS", DEFAULT_SESSION_LIFETIME_SECONDS, 300,
                              MAX_SESSION_LIFETIME_SECONDS)
    return SessionSettings(keys, lifetime)


def _branding(reader: "_Reader") -> Branding:
    logo = reader.text("BRAND_LOGO", "") or None
    if logo is not None and (len(logo) > MAX_LOGO_CHARS or not LOGO_PATTERN.fullmatch(logo)):
        raise ConfigError("BRAND_LOGO must be a data:image/(png|jpeg|gif|webp|svg+xml);base64,… URI of at most 64 KB "
                          "(pages carry no external assets)")
    support = reader.text("SUPPORT_CONTACT", "") or None
    if support is not None and not (EMAIL_PATTERN.fullmatch(support) or HTTPS_PATTERN.fullmatch(support)):
        raise ConfigError("SUPPORT_CONTACT must be an e-mail address or an https:// URL")
    return Branding(reader.text("BRAND_NAME", DEFAULT_BRAND_NAME), logo, support,
                    reader.boolean("PAGES_SHOW_RULE", False))


def _audience_forms(audiences: tuple[str, ...]) -> frozenset[str]:
    # An App ID URI may arrive with or without a trailing slash (v1 tokens carry either);
    # a client-id GUID is compared as is.
    forms = set()
    for audience in audiences:
        forms.add(audience)
        if "://" in audience:
            forms.add(audience.rstrip("/"))
            forms.add(audience.rstrip("/") + "/")
    return frozenset(forms)


class _Reader:
    def __init__(self, get):
        self._get = get
        self.problems: list[str] = []

    def field(self, compute, fallback=None):
        """compute(), or `fallback` with the problem recorded: every variable gets checked."""
        try:
            return compute()
        except ConfigError as error:
            self.problems.extend(problem for problem in error.problems if problem not in self.problems)
            return fallback

    def _raw(self, name: str) -> str | None:
        value = self._get(name)
        if value is None:
            return None
        # wrangler.toml [vars] may hold TOML numbers and booleans; they reach the Worker as
        # such, and are read as the string a user would have written.
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, number or boolean")
        return value.strip() or None

    def present(self, name: str) -> bool:
        return self._raw(name) is not None

    def text(self, name: str, default: str | None = None) -> str:
        value = self._raw(name) or default
        if value is None:
            raise ConfigError(f"{name} is required")
        return value

    def items(self, name: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise ConfigError(f"{name} is required (comma-separated)")
            return tuple(default)
        values = tuple(item.strip() for item in raw.split(",") if item.strip())
        if not values:
            raise ConfigError(f"{name} must list at least one value")
        return values

    def url(self, name: str, default: str | None = None) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"{name} must be an absolute http(s) URL without query or fragment")
        return value

    def authority(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            return canonical_authority(value)
        except ValueError as error:
            path = value.partition("://")[2].partition("/")[2].strip("/")
            hint = ""
            if name == "ENTRA_AUTHORITY" and path and (GUID.match(path.split("/")[0].lower()) or path.split("/")[0] in MULTI_TENANT_AUTHORITIES
                         or "." in path.split("/")[0]):
                hint = (f" (it looks like an MSAL authority with the tenant in its path: set {name} to the host"
                        " alone, e.g. https://login.microsoftonline.com, and the tenant in ENTRA_TENANT_ID)")
            raise ConfigError(f"{name} {error}{hint}") from None

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() not in ("true", "false"):
            raise ConfigError(f"{name} must be true or false")
        return raw.lower() == "true"

    def fraction(self, name: str, default: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number from 0 to 1") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be a number from 0 to 1")
        return value

    def public_jwks(self, name: str) -> tuple[dict, ...]:
        raw = self._raw(name)
        if raw is None:
            return ()
        try:
            keys = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a JSON array of public JWKs") from None
        if not isinstance(keys, list) or not all(isinstance(k, dict) and "d" not in k and "kid" in k for k in keys):
            raise ConfigError(f"{name} must be a JSON array of public JWKs, each with a kid and no private part")
        return tuple(keys)

    def header_names(self, name: str) -> dict:
        """`x-corp-user, x-sso-*`: exact names, and families (a separator and `*` at the end:
        the name before them, and every name starting with it and a separator), compared as
        upstream.py compares names."""
        names, families = set(), []
        for item in self.items(name, ()):
            family = len(item) > 2 and item[-1] == "*" and not item[-2].isalnum()
            stem = item[:-2] if family else item
            if not HEADER_TOKEN.match(stem) or not stem[0].isalnum() or not stem[-1].isalnum() or "*" in stem:
                raise ConfigError(f"{name}: {item!r} is neither a header name nor a prefix ending in '-*' (e.g. 'x-sso-*')")
            normal = normalised_name(stem)
            if family:
                families.append(normal + "-")
            else:
                names.add(normal)
        return {"strip_header_names": frozenset(names), "strip_header_families": tuple(families)}

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}")
        return value
