"""Exception hierarchy. Every refusal the gateway makes is one of these, with a stable code."""


# The stable `cause` codes of refused credentials (audit lines): which check refused.
CAUSES = frozenset({
    "no_credential", "scheme", "empty", "too_long", "not_compact_jws",  # the Authorization header
    "malformed", "algorithm", "header_parameter", "token_type", "kid", "missing_claim", "claim_type",
    "expired", "not_yet_valid", "version", "tenant_id", "tenant_not_allowed", "audience", "not_access_token",
    "issuer", "unknown_key", "key_issuer", "signature", "no_grant", "nonce",
})


class GatewayError(Exception):
    """Base class. `code` is stable and safe to show to clients and log."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str = "", cause: str | None = None):
        super().__init__(detail or self.code)
        self.detail = detail or self.code
        # Which check refused, as a stable code for the audit line (docs/DENIALS.md): never
        # anything from the token itself.
        self.cause = cause


class CredentialError(GatewayError):
    """No usable credential: 401."""

    status = 401
    code = "invalid_request"


class MissingCredential(CredentialError):
    code = "missing_token"


class MalformedCredential(CredentialError):
    code = "malformed_credential"


class InvalidToken(GatewayError):
    """A token was presented and is not acceptable: 401 with error="invalid_token"."""

    status = 401
    code = "invalid_token"


class KeysUnavailable(GatewayError):
    """No signing keys can be obtained for the issuer: 503, never allow."""

    status = 503
    code = "keys_unavailable"


class AmbiguousPath(GatewayError):
    """The request path could be read two ways; refuse rather than guess."""

    status = 400
    code = "ambiguous_path"


class AmbiguousSpelling(AmbiguousPath):
    """Another spelling of the path (letter case, trailing slash, format suffix) would be
    decided by another route: refused rather than guess which one the origin serves. The
    client is told only that; the route names are for `explain` and tests."""

    def __init__(self, path: str, folded: str, route: str, folded_route: str | None):
        super().__init__("another spelling of this path (letter case, trailing slash or format suffix) is routed differently")
        self.path = path
        self.folded = folded
        self.route = route
        self.folded_route = folded_route
