"""One request, one direction: path → route → credential → identity → decision → forward or deny.

Pure: no platform imports. The shell hands in the request's method, URL and headers, and
carries out the returned Forward or Deny.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Config
from .credential import extract_bearer
from .denials import Deny, deny, from_error
from .errors import AmbiguousPath, GatewayError
from .identity import Identity
from .keys import IssuerKeys
from .paths import canonical_path
from .policy import Policy
from .tokens import TokenValidator


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    method: str
    url: str  # as the runtime parsed it: scheme://host[:port]/path?query
    authorization: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class Forward:
    url: str  # origin URL with the request's raw path and query, byte for byte
    identity: Identity | None  # None on public routes
    rule: str
    reason: str


class Gateway:
    def __init__(self, config: Config, validator: TokenValidator, policy: Policy):
        self.config = config
        self.validator = validator
        self.policy = policy

    async def handle(self, request: IncomingRequest, defer) -> Forward | Deny:
        try:
            return await self._decide(request, defer)
        except GatewayError as error:
            return from_error(error, request.request_id)

    async def _decide(self, request: IncomingRequest, defer) -> Forward | Deny:
        host = urlsplit(request.url).hostname
        # The origin gets the path and query exactly as received, so take them from the URL
        # string itself rather than from a parse-and-rebuild that could drop or re-encode.
        after_scheme = request.url.partition("://")[2]
        slash = after_scheme.find("/")
        if not host or slash < 0:
            raise AmbiguousPath("request URL has no host or path")
        path_and_query = after_scheme[slash:]
        path = canonical_path(path_and_query.partition("?")[0])
        method = request.method.upper()
        route = self.policy.match(method, host, path)
        if route is None:
            return deny(403, "no_route", "no route allows this request", request.request_id)

        origin = (route.origin or self.config.origin_url).rstrip("/")
        target = origin + path_and_query
        if route.public:
            return Forward(target, None, route.name, "public")

        token = extract_bearer(request.authorization)
        identity = await self.validator.validate(token, defer)
        decision = route.evaluate(identity)
        if not decision.allowed:
            return deny(403, decision.reason, "not allowed by policy", request.request_id)
        return Forward(target, identity, route.name, decision.reason)


def discovery_url(config: Config, version: str) -> str:
    suffix = "/v2.0" if version == "2.0" else ""
    return f"{config.authority}/{config.tenant}{suffix}/.well-known/openid-configuration"


def assemble(config: Config, policy: Policy, *, http, store, verifier, clock, log) -> Gateway:
    """Wire a gateway from its parts; the Worker passes platform adapters, tests host ones."""
    keys = {
        version: IssuerKeys(
            discovery_url(config, version),
            config.authority,
            http=http,
            store=store,
            clock=clock,
            log=log,
            max_age=config.jwks_max_age,
            cooldown=config.jwks_cooldown,
            timeout=config.fetch_timeout,
        )
        for version in config.token_versions
    }
    return Gateway(config, TokenValidator(config, keys, verifier), policy)
