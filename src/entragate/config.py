"""Gateway configuration, read from Worker variables (wrangler.toml [vars], secrets, --var).

Every value is checked once at start-up; a bad value is a ConfigError naming the variable,
and the Worker then refuses every request (fail closed) instead of guessing.
"""

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .assertion import AssertionKeyError, parse_signing_key
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
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

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
    pass


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """The gateway's own app registration, for everything it asks Entra as itself: browser
    sign-in, Microsoft Graph, Google workload identity federation."""

    client_id: str
    certificate: Certificate | None
    secret: str | None


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

    @property
    def multi_tenant(self) -> bool:
        return self.tenant in MULTI_TENANT_AUTHORITIES

    def tenant_allowed(self, tid: str) -> bool:
        if self.multi_tenant:
            return ANY_TENANT in self.allowed_tenants or tid in self.allowed_tenants
        return tid == self.tenant

    @classmethod
    def from_env(cls, get) -> "Config":
        """`get(name)` returns the variable's string value or None."""
        reader = _Reader(get)
        tenant = reader.text("ENTRA_TENANT_ID").lower()
        if tenant not in MULTI_TENANT_AUTHORITIES and not GUID.match(tenant):
            raise ConfigError("ENTRA_TENANT_ID must be a tenant GUID, 'organizations' or 'common'")
        allowed_tenants = frozenset(t.lower() for t in reader.items("ENTRA_ALLOWED_TENANTS", ()))
        if tenant in MULTI_TENANT_AUTHORITIES:
            if not allowed_tenants:
                raise ConfigError(
                    "ENTRA_ALLOWED_TENANTS is required for a multi-tenant ENTRA_TENANT_ID: list the "
                    "tenant GUIDs to accept, or '*' to accept any Entra tenant (rarely what you want)"
                )
            bad = [t for t in allowed_tenants if t != ANY_TENANT and not GUID.match(t)]
            if bad:
                raise ConfigError(f"ENTRA_ALLOWED_TENANTS: not a tenant GUID: {bad[0]!r}")
        elif allowed_tenants:
            raise ConfigError("ENTRA_ALLOWED_TENANTS applies only when ENTRA_TENANT_ID is organizations/common")

        algorithms = frozenset(reader.items("JWT_ALGORITHMS", DEFAULT_ALGORITHMS))
        unsupported = algorithms - SUPPORTED_ALGORITHMS
        if unsupported:
            raise ConfigError(f"JWT_ALGORITHMS: unsupported {sorted(unsupported)}; choose from {sorted(SUPPORTED_ALGORITHMS)}")
        versions = reader.items("ENTRA_TOKEN_VERSIONS", DEFAULT_TOKEN_VERSIONS)
        if not set(versions) <= set(DEFAULT_TOKEN_VERSIONS):
            raise ConfigError("ENTRA_TOKEN_VERSIONS: only 1.0 and 2.0 exist")

        prefix = reader.text("IDENTITY_HEADER_PREFIX", DEFAULT_PREFIX).lower()
        if not HEADER_PREFIX.match(prefix):
            raise ConfigError("IDENTITY_HEADER_PREFIX must be lower-case letters, digits and dashes, ending with '-'")
        signing_key = reader.text("ASSERTION_SIGNING_KEY", "") or None
        try:
            private_jwk, public_jwk = parse_signing_key(signing_key) if signing_key else (None, None)
        except AssertionKeyError as error:
            raise ConfigError(str(error)) from None

        client = _client_settings(reader)
        return cls(
            origin_url=reader.url("ORIGIN_URL"),
            tenant=tenant,
            # Signing keys come from here: over plain http anyone on the path could supply their own.
            authority=reader.url("ENTRA_AUTHORITY", DEFAULT_AUTHORITY, https=True).rstrip("/"),
            audiences=_audience_forms(reader.items("ENTRA_AUDIENCES")),
            allowed_tenants=allowed_tenants,
            token_versions=versions,
            algorithms=algorithms,
            clock_skew=reader.integer("CLOCK_SKEW_SECONDS", DEFAULT_CLOCK_SKEW_SECONDS, 0, 600),
            jwks_max_age=reader.integer("JWKS_MAX_AGE_SECONDS", DEFAULT_JWKS_MAX_AGE_SECONDS, 60, 86400),
            jwks_cooldown=reader.integer("JWKS_COOLDOWN_SECONDS", DEFAULT_JWKS_COOLDOWN_SECONDS, 0, 3600),
            fetch_timeout=reader.integer("FETCH_TIMEOUT_MS", int(DEFAULT_FETCH_TIMEOUT_SECONDS * 1000), 100, 30000) / 1000,
            origin_timeout=reader.integer("ORIGIN_TIMEOUT_MS", int(DEFAULT_ORIGIN_TIMEOUT_SECONDS * 1000), 100, 300000) / 1000,
            header_prefix=prefix,
            forward_authorization=reader.boolean("FORWARD_AUTHORIZATION", False),
            assertion_private_jwk=private_jwk,
            assertion_public_jwk=public_jwk,
            # Extra public keys served beside the current one: the next key before a rotation, the
            # previous one after it, so origins never meet a kid they cannot fetch.
            assertion_published_jwks=reader.public_jwks("ASSERTION_PUBLISHED_KEYS"),
            assertion_issuer=reader.text("ASSERTION_ISSUER", DEFAULT_ASSERTION_ISSUER),
            audit_allow_sample_rate=reader.fraction("AUDIT_ALLOW_SAMPLE_RATE", 1.0),
            token_cache_seconds=reader.integer("TOKEN_CACHE_SECONDS", DEFAULT_TOKEN_CACHE_SECONDS, 0, 3600),
            **reader.header_names("STRIP_HEADERS"),
            client=client,
            sessions=_session_settings(reader),
            branding=_branding(reader),
            graph=_graph_settings(reader, client),
        )


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
    url = reader.url("GRAPH_URL", DEFAULT_GRAPH_URL, https=True).rstrip("/")
    if urlsplit(url).path:
        raise ConfigError("GRAPH_URL must be Microsoft Graph's origin only (e.g. https://graph.microsoft.us), no path")
    return GraphSettings(
        url=url,
        cache_seconds=reader.integer("GRAPH_CACHE_SECONDS", DEFAULT_GRAPH_CACHE_SECONDS, 60, 86400),
        timeout=reader.integer("GRAPH_TIMEOUT_MS", int(DEFAULT_GRAPH_TIMEOUT_SECONDS * 1000), 100, 30000) / 1000,
    )


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

    def url(self, name: str, default: str | None = None, *, https: bool = False) -> str:
        """`https`: plain http only for a loopback host (a local mock), never across a network."""
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"{name} must be an absolute http(s) URL without query or fragment")
        if https and parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
            raise ConfigError(f"{name} must be an https URL (plain http is accepted only for a loopback host)")
        return value

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
