"""One request, one direction: path → route → credential → identity → decision → forward or deny.

Pure: no platform imports. The shell hands in what it read from the request, carries out the
returned Forward or Answer, and writes the audit line this module builds.

The gateway owns the paths under GATEWAY_PATHS (health, assertion keys, sign-in); they are
answered before any policy, so a policy cannot expose or hide them.

Credentials: a bearer token on any route; on routes with `login = true` and no Authorization
header, a browser session (signin.py), and an anonymous navigation there is sent to sign in.
"""

import json
import random
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

from .assertion import assertion_claims, sign_assertion
from .audit import audit_line
from .bounded import BoundedMap, strings_bytes
from .client_auth import ClientCredential
from .config import Config, ConfigError
from .cors import PREFLIGHT_REFUSED, CorsPolicy, is_method
from .credential import extract_bearer
from .denials import HTML, Answer, client_kind, deny, from_error, insufficient_scope_challenge, is_native_grpc
from .entra import EntraUnavailable, TokenEndpoint
from .errors import GatewayError, KeysUnavailable, MissingCredential
from .flights import share_locally
from .graph import FROM_GRAPH, FROM_TOKEN, GraphGroups, GraphNotConsented, GroupsUnavailable, graph_groups
from .google import GoogleOrigins, google_origins
from .identity import Identity, estimated_bytes
from .id_tokens import IdTokenValidator
from .keys import IssuerKeys
from . import pages
from .policy import Policy
from .sessions import Sealer, clear_cookie, without_cookies
from .signin import (
    FLOW_COOKIE_PREFIX, LOGOUT_PATH, MAX_FORM_BYTES, SESSION_COOKIE, Endpoints, SignIn, SignInFailed, is_navigation,
    read_form,
)
from .target import Target, request_target, split_url
from .token_cache import DEFAULT_MAX_ENTRIES, CachingValidator
from .tokens import TokenValidator
from .upstream import HeaderStripper, forwarded_groups, identity_headers, is_websocket_handshake


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    method: str
    url: str  # as the runtime parsed it: scheme://host[:port]/path?query
    request_id: str
    header_names: tuple[str, ...]
    authorization: str | None = None
    accept: str | None = None
    content_type: str | None = None
    cookie: str | None = None
    sec_fetch_mode: str | None = None  # navigate | cors | no-cors | same-origin | websocket
    sec_fetch_site: str | None = None  # same-origin | same-site | cross-site | none
    origin: str | None = None  # the Origin header
    # `await read_body(limit)`: the request body, or None if it holds more than `limit` bytes.
    read_body: object = None
    connection: str | None = None  # hop-by-hop options (upstream.HeaderStripper)
    upgrade: str | None = None
    # The body streams without a declared length (Transfer-Encoding: chunked, or a stream).
    body_without_length: bool = False
    connect_version: str | None = None  # connect-protocol-version (a Connect unary call)
    cors_method: str | None = None  # access-control-request-method (a CORS preflight)
    cors_headers: str | None = None  # access-control-request-headers


@dataclass(frozen=True, slots=True)
class Forward:
    url: str  # origin URL + the request's raw path and query, byte for byte
    strip: tuple[str, ...]  # client header names to delete
    add: tuple[tuple[str, str], ...]  # headers to set
    identity: Identity | None  # None on public routes
    rule: str
    reason: str
    groups_source: str | None = None  # token | graph | cache, when the route's rule tests groups
    cors: CorsPolicy | None = None  # the route's CORS policy: headers for the response (cors.py)


# Answers about the gateway itself, not decisions about a request: not audited. An answered CORS
# preflight grants nothing (no credential is read, the origin is not called); the request that
# follows it is decided and audited. A refused preflight is audited (cors_preflight_refused).
UNAUDITED = frozenset({"health", "jwks", "signed_out", "logout_confirm", "cors_preflight"})
SIGNIN_ENDPOINTS = frozenset({"callback", "logout", "frontchannel_logout", "signed_out", "signin"})
# Sign-in events: neither a request forwarded nor one refused (audit decision "signin"). A
# navigation sent to sign in is one: the person may well be allowed once signed in.
SIGNIN_EVENTS = frozenset({"signin_redirect", "signin_complete", "logout", "frontchannel_logout"})


def _is_gateway_cookie(name: str) -> bool:
    return name == SESSION_COOKIE or name.startswith(FLOW_COOKIE_PREFIX)


def request_origin(url: str) -> str:
    """scheme://host[:port] of the request URL, as the client used it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.partition('/')[0].partition('?')[0]}"


# What a client is told when the origin's credential could not be had (google.py logs why).
ORIGIN_CREDENTIAL_DETAIL = "the gateway could not obtain its credential for the service behind it"


# Methods whose body the Workers fetch API forwards only when its length is declared: a GET or
# HEAD body of unknown length (chunked) would reach the origin empty, so it is refused (411)
# rather than silently dropped. Other methods stream any body (platform_io.forward).
METHODS_NEEDING_BODY_LENGTH = frozenset({"GET", "HEAD"})


# The identity-header memo's budget (bounded.py): its entries hold the Identity too (as the
# key), so a user in 200 groups with 80 roles costs ~34 KB here (~245 such users fit) and an
# ordinary one ~2.8 KB (~3000). Headers of an identity left out are rebuilt (tens of µs).
# With the token cache's 16 MiB: 24 MiB of the isolate's 128 MB at most.
IDENTITY_PARTS_MAX_BYTES = 8 * 1024 * 1024
# The part object, its header tuple and one (name, value) tuple per header (the names are
# shared by every part: upstream.identity_headers interns them).
IDENTITY_PART_OVERHEAD_BYTES = 200
HEADER_OVERHEAD_BYTES = 80


class IdentityPart:
    """(forwarded groups, identity headers): fixed for an identity, so a token seen again
    (an identical Identity from the token cache) does not rebuild them."""

    __slots__ = ("groups", "headers", "size")

    def __init__(self, identity: Identity, prefix: str, policy_groups: frozenset[str]):
        self.groups = forwarded_groups(identity, policy_groups)
        self.headers = tuple(identity_headers(identity, self.groups, prefix))
        # The identity (held as the memo's key: the token cache may since have let it go) and
        # the header values that are new strings (most are the identity's own, passed as is).
        own = {id(value) for value in (identity.oid, identity.tid, identity.sub, identity.name, identity.username,
                                       identity.client_id, identity.kind)}
        values = tuple(value for _, value in self.headers if id(value) not in own)
        self.size = (IDENTITY_PART_OVERHEAD_BYTES + estimated_bytes(identity) + 8 * len(self.groups)
                     + len(self.headers) * HEADER_OVERHEAD_BYTES + strings_bytes(values))


class Gateway:
    def __init__(self, config: Config, validator: TokenValidator, policy: Policy, *, keys: dict,
                 policy_groups: frozenset[str], signer=None, clock, log=print, sample=random.random,
                 signin: SignIn | None = None, graph: GraphGroups | None = None,
                 google: GoogleOrigins | None = None):
        self.config = config
        self.signin = signin
        # Groups overage resolved through Microsoft Graph (graph.py); None: refused as overage.
        self.graph = graph
        self.google = google  # origins that need a Google ID token (google.py)
        self.validator = validator
        self.policy = policy
        self.keys = keys
        self.policy_groups = policy_groups
        self.signer = signer
        self.clock = clock
        self.log = log
        self.sample = sample
        self._request_id_header = config.header_prefix + "request-id"
        self._rule_header = config.header_prefix + "rule"
        self._identity_parts = BoundedMap(DEFAULT_MAX_ENTRIES, IDENTITY_PARTS_MAX_BYTES)
        self._headers_to_strip = HeaderStripper(config.header_prefix, config.forward_authorization,
                                                config.strip_header_names, config.strip_header_families)

    async def handle(self, request: IncomingRequest, defer) -> Forward | Answer:
        try:
            return await self._decide(request, defer)
        except GatewayError as error:
            return _refusal(request, error)
        except Exception as error:  # a bug: fail closed, with a request id and an audit line
            self.log(f"internal error (request {request.request_id}): {type(error).__name__}: {error}")
            return internal_error(request)

    async def _decide(self, request: IncomingRequest, defer) -> Forward | Answer:
        target = request_target(request.url)
        if target.endpoint == "health":
            return await self.health(request.request_id, defer)
        if target.endpoint == "jwks":
            return self.assertion_jwks()
        if target.endpoint in SIGNIN_ENDPOINTS:
            return await self._signin_endpoint(request, target, defer)
        method = request.method.upper()
        if method == "OPTIONS" and request.cors_method is not None and request.origin is not None:
            preflight = self._preflight(request, target)
            if preflight is not None:
                return preflight
        route = self.policy.match(method, target.host, target.path)
        if route is None:
            return _refuse(request, 403, "no_route", "no route allows this request")
        if route.fixed_decision is not None:  # e.g. method_not_allowed: no token can change it
            result = _refuse(request, 403, route.fixed_decision.reason, "not allowed by policy", rule=route.name)
        else:
            try:
                result = await self._decide_route(request, defer, target, method, route)
            except GatewayError as error:  # the audit line names the route that asked for a token
                result = _refusal(request, error, rule=route.name)
            if isinstance(result, Forward) and is_native_grpc(request.content_type):
                # Allowed, but a Worker cannot relay it: the response's trailers (its status) would be lost.
                result = _refuse(request, 501, "grpc_unsupported", "native gRPC cannot be relayed by a Worker",
                                 rule=route.name, identity=result.identity, groups_source=result.groups_source)
        return result if route.cors is None else with_cors(result, route.cors, request.origin)

    def _preflight(self, request: IncomingRequest, target: Target) -> Answer | None:
        """A CORS preflight for a route with a CORS policy, answered here; None for any other
        route, whose preflight is decided like any OPTIONS request. The route is the one the
        request the preflight announces (its method, this host and path) would be decided by."""
        requested = request.cors_method.strip().upper()
        if not is_method(requested):
            return None
        route = self.policy.match(requested, target.host, target.path)
        if route is None or route.cors is None or route.fixed_decision is not None:
            return None
        methods = tuple(sorted({method for _, _, listed in route.match_spec for method in listed}))
        refused, headers = route.cors.preflight(request.origin, requested, request.cors_headers, methods)
        if refused is not None:
            return _refuse(request, 403, PREFLIGHT_REFUSED, f"CORS preflight refused: {refused}", rule=route.name)
        return Answer(204, "cors_preflight", (("x-request-id", request.request_id), *headers), None, rule=route.name)

    async def _decide_route(self, request, defer, target: Target, method: str, route) -> Forward | Answer:
        path_and_query = target.path_and_query
        origin = (route.origin or self.config.origin_url).rstrip("/")
        strip = tuple(self._headers_to_strip(request.header_names, request.connection,
                                             is_websocket_handshake(method, request.upgrade)))
        request_id_header = (self._request_id_header, request.request_id)
        cookie = ()
        kept = without_cookies(request.cookie, _is_gateway_cookie)
        if kept != request.cookie:
            # The gateway's own cookies are credentials for the gateway only; the others pass.
            strip += ("cookie",)
            cookie = (("cookie", kept),) if kept else ()
        if route.public:
            if unforwardable := _unforwardable_body(request, method, route.name):
                return unforwardable
            origin_strip, credential = await self._origin_credential(route, defer)
            return Forward(origin + path_and_query, strip + origin_strip, (request_id_header, *cookie, *credential), None,
                           route.name, "public")

        if route.login and self.signin is not None and not request.authorization:
            identity = await self.signin.identity(request)
            if identity is None:
                if is_navigation(request.method, request.sec_fetch_mode, request.accept):
                    return await self._begin_signin(request, path_and_query, route.name, defer)
                raise MissingCredential("sign in, or send a bearer token")
        else:
            token = extract_bearer(request.authorization)
            identity = await self.validator.validate(token, defer)
        decision = route.evaluate(identity)
        groups_source = FROM_TOKEN if route.uses_groups else None
        # Only a decision that hangs on groups the token could not list costs a lookup.
        if decision.reason == "groups_overage" and self.graph is not None:
            try:
                resolved = await self.graph.resolve(identity, defer)
            except (GroupsUnavailable, GraphNotConsented) as error:
                return _refusal(request, error, rule=route.name, identity=identity, groups_source=FROM_GRAPH)
            if resolved is not None:
                identity, groups_source = resolved
                decision = route.evaluate(identity)
        if not decision.allowed:
            challenge = insufficient_scope_challenge() if decision.reason == "insufficient_scope" else None
            return _refuse(request, 403, decision.reason, "not allowed by policy", challenge, rule=route.name,
                           identity=identity, groups_source=groups_source)
        if unforwardable := _unforwardable_body(request, method, route.name, identity):
            return unforwardable
        try:
            origin_strip, credential = await self._origin_credential(route, defer)
        except GatewayError as error:
            return _refuse(request, error.status, error.code, ORIGIN_CREDENTIAL_DETAIL, rule=route.name, identity=identity)
        strip += origin_strip

        part = self._identity_parts.get(identity)
        if part is None:
            part = IdentityPart(identity, self.config.header_prefix, self.policy_groups)
            self._identity_parts.put(identity, part)
        groups = part.groups
        add = [request_id_header, (self._rule_header, route.name), *part.headers, *cookie, *credential]
        if self.signer is not None:
            claims = assertion_claims(
                identity, groups, issuer=self.config.assertion_issuer, audience=origin, now=self.clock(),
                request_id=request.request_id, method=method, url=origin + path_and_query, rule=route.name,
            )
            assertion = await sign_assertion(self.signer, self.config.assertion_public_jwk["kid"], claims)
            add.append((self.config.header_prefix + "assertion", assertion))
        return Forward(origin + path_and_query, strip, tuple(add), identity, route.name, decision.reason, groups_source)

    async def _origin_credential(self, route, defer) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """(client headers to remove, headers to add) for the origin's own credential: a Google
        ID token when the route's origin needs one (google.py), else nothing. Raises
        OriginAuthUnavailable / OriginAuthRefused: nothing is forwarded without it."""
        google = self.google
        audience = google.audience_for(route) if google is not None else None
        if audience is None:
            return (), ()
        try:
            return google.STRIP, await google.headers(audience, defer)
        except GatewayError as error:  # the specifics are logged (google.py), not told to clients
            raise type(error)(ORIGIN_CREDENTIAL_DETAIL) from None

    async def _begin_signin(self, request, return_path: str, rule: str | None, defer) -> Answer:
        status, headers, body = await self.signin.begin(request, request_origin(request.url), return_path, defer)
        return Answer(status, "signin_redirect", (("cache-control", "no-store"), ("x-request-id", request.request_id),
                                                   *headers), body, rule=rule)

    async def _signin_endpoint(self, request: IncomingRequest, target: Target, defer) -> Answer:
        signin, request_id = self.signin, request.request_id
        if signin is None:
            return _refuse(request, 404, "not_found", "browser sign-in is not configured")
        origin = request_origin(request.url)
        query = target.path_and_query.partition("?")[2]
        method = request.method.upper()
        page_headers = (("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
                        ("x-request-id", request_id))
        if target.endpoint == "signin":
            return await self._begin_signin(request, dict(parse_qsl(query)).get("rd", "/"), None, defer)
        if target.endpoint == "callback":
            flow_cookie = signin.flow_cookie_for(query)
            try:
                location, set_cookies, identity = await signin.complete(request, origin, query, defer)
            except GatewayError as error:
                answer = _refusal(request, error)
                if flow_cookie is None:
                    return answer
                return Answer(answer.status, answer.code, answer.headers + (("set-cookie", clear_cookie(flow_cookie)),),
                              answer.body, grpc_status=answer.grpc_status)
            headers = (("location", location), ("cache-control", "no-store"), ("x-request-id", request_id),
                       *(("set-cookie", value) for value in set_cookies))
            return Answer(302, "signin_complete", headers, None, identity=identity)
        if target.endpoint == "signed_out":
            return Answer(200, "signed_out", page_headers, pages.signed_out(request_id))
        if target.endpoint == "frontchannel_logout":
            ok = await signin.frontchannel_logout(query, defer)
            return Answer(200 if ok else 400, "frontchannel_logout" if ok else "frontchannel_logout_refused",
                          (("cache-control", "no-store"), ("x-request-id", request_id)), "")
        # logout
        if method == "GET":
            identity = await signin.identity(request)
            csrf = signin.session_csrf(request) if identity else None
            if not csrf:
                return Answer(200, "signed_out", page_headers, pages.signed_out(request_id))
            page = pages.logout_confirm(request_id, csrf, pages.signed_in_as(identity.name, identity.username), LOGOUT_PATH)
            return Answer(200, "logout_confirm", page_headers, page)
        if method != "POST":
            return _refuse(request, 405, "method_not_allowed", "sign out with POST")
        # A cross-site form cannot sign anyone out: the browser says where the POST came from.
        site = (request.sec_fetch_site or "").lower()
        if (site and site not in ("same-origin", "none")) or (request.origin and request.origin != origin):
            return _refuse(request, 403, "cross_site_logout", "sign-out must come from this site")
        body = await request.read_body(MAX_FORM_BYTES) if request.read_body else None
        headers, _ = await signin.logout(request, origin, read_form(body), defer)
        return Answer(302, "logout", (("cache-control", "no-store"), ("x-request-id", request_id), *headers), None)

    async def health(self, request_id: str, defer) -> Answer:
        """Readiness: every issuer's key set loaded (from memory, KV or the network)."""
        now = self.clock()
        issuers = []
        for version, issuer_keys in self.keys.items():
            try:
                key_set = await issuer_keys.current(defer)
                issuers.append({"version": version, "loaded": True, "keys": len(key_set.keys),
                                "age_seconds": round(now - key_set.fetched_at)})
            except KeysUnavailable:
                issuers.append({"version": version, "loaded": False})
        ready = all(issuer["loaded"] for issuer in issuers)
        body = json.dumps({
            "status": "ready" if ready else "unavailable",
            "policy_version": self.policy.version,
            "issuers": issuers,
            "assertion": "enabled" if self.signer else "disabled",
        })
        headers = (("content-type", "application/json"), ("cache-control", "no-store"), ("x-request-id", request_id))
        return Answer(200 if ready else 503, "health", headers, body)

    def assertion_jwks(self) -> Answer:
        keys = [self.config.assertion_public_jwk] if self.signer else []
        keys += list(self.config.assertion_published_jwks)
        headers = (("content-type", "application/json"), ("cache-control", "public, max-age=300"))
        return Answer(200, "jwks", headers, json.dumps({"keys": keys}))

    def audit(self, request: IncomingRequest, result: Forward | Answer, status: int, latency_ms: float,
              failure: Answer | None = None) -> str | None:
        """The audit line for a decision (None for the gateway's own endpoints, and for
        allowed requests that sampling leaves out). `failure`: the origin could not answer."""
        if isinstance(result, Answer) and result.code in UNAUDITED:
            return None
        if isinstance(result, Forward) and failure is None and self.sample() >= self.config.audit_allow_sample_rate:
            return None
        return decision_audit_line(request, result, status, latency_ms, self.clock(), failure)


def decision_audit_line(request: IncomingRequest, result: Forward | Answer, status: int, latency_ms: float,
                        now: float, failure: Answer | None = None) -> str:
    allowed = isinstance(result, Forward)
    answer = failure or (None if allowed else result)  # what the client was told, if not the origin's answer
    decision = "allow" if allowed else ("signin" if result.code in SIGNIN_EVENTS else "deny")
    host, path_and_query = split_url(request.url)
    return audit_line(
        now=now, request_id=request.request_id, method=request.method, host=host,
        path=path_and_query.partition("?")[0], rule=result.rule, decision=decision,
        reason=answer.code if answer else result.reason, status=status, identity=result.identity,
        latency_ms=latency_ms, grpc_status=answer.grpc_status if answer else None,
        groups_source=result.groups_source, cause=answer.cause if answer else None,
    )


# The client's kind (JSON, HTML, gRPC) is read only when refusing: most requests are not refused.
def _refuse(request: IncomingRequest, status: int, code: str, detail: str, challenge: str | None = None, *,
            rule: str | None = None, identity: Identity | None = None, groups_source: str | None = None) -> Answer:
    kind = client_kind(request.accept, request.content_type, request.connect_version, request.method, request.url)
    return deny(status, code, detail, request.request_id, kind, challenge, rule=rule, identity=identity,
                groups_source=groups_source)


def _unforwardable_body(request: IncomingRequest, method: str, rule: str, identity: Identity | None = None):
    """The refusal for an allowed request whose body could not reach the origin intact, or None."""
    if request.body_without_length and method in METHODS_NEEDING_BODY_LENGTH:
        return _refuse(request, 411, "length_required", f"a {method} request's body needs a Content-Length",
                       rule=rule, identity=identity)
    return None


def _refusal(request: IncomingRequest, error: GatewayError, *, rule: str | None = None,
             identity: Identity | None = None, groups_source: str | None = None) -> Answer:
    kind = client_kind(request.accept, request.content_type, request.connect_version, request.method, request.url)
    return from_error(error, request.request_id, kind, rule=rule, identity=identity, groups_source=groups_source)


def with_cors(result: Forward | Answer, cors: CorsPolicy, origin: str | None) -> Forward | Answer:
    """The route's CORS headers: on a forward, for the origin's response (added by the shell);
    on the gateway's own answer, now, exposing its headers too."""
    if isinstance(result, Forward):
        return replace(result, cors=cors)
    headers = cors.response_headers(origin, result.headers)
    return replace(result, headers=result.headers + headers) if headers else result


def origin_failure(request: IncomingRequest, timed_out: bool, cors: CorsPolicy | None = None) -> Answer:
    if timed_out:
        answer = _refuse(request, 504, "origin_timeout", "the origin did not answer in time")
    else:
        answer = _refuse(request, 502, "origin_unreachable", "the origin could not be reached")
    return answer if cors is None else with_cors(answer, cors, request.origin)


def internal_error(request: IncomingRequest) -> Answer:
    """A bug (in the core or while forwarding): fail closed."""
    return _refuse(request, 500, "internal_error", "internal error")


def misconfigured(request: IncomingRequest, problems: list[str] = ()) -> Answer:
    """The answer while the gateway cannot be built from its configuration: refuse everything.
    The health endpoint says why (each problem names a variable, never a secret's value), so an
    operator sees it at once rather than one variable per request in the logs."""
    try:
        health = request_target(request.url).endpoint == "health"
    except GatewayError:
        health = False
    if health:
        body = json.dumps({"status": "misconfigured", "problems": list(problems)})
        headers = (("content-type", "application/json"), ("cache-control", "no-store"), ("x-request-id", request.request_id))
        return Answer(500, "health", headers, body)
    return _refuse(request, 500, "gateway_misconfigured", "the gateway is misconfigured")


def discovery_url(config: Config, version: str) -> str:
    suffix = "/v2.0" if version == "2.0" else ""
    return f"{config.authority}/{config.tenant}{suffix}/.well-known/openid-configuration"


def assemble(config: Config, policy: Policy, *, http, store, verifier, clock, log,
             policy_groups=frozenset(), signer=None, share=share_locally, platform=None) -> Gateway:
    """Wire a gateway from its parts; the Worker passes platform adapters, tests host ones.
    `platform`: what browser sign-in needs besides (cipher, rsa_signer, random_bytes)."""
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
            share=share,
        )
        for version in config.token_versions
    }
    validator = TokenValidator(config, keys, verifier)
    if config.token_cache_seconds:
        validator = CachingValidator(validator, keys, clock=clock, skew=config.clock_skew, max_age=config.token_cache_seconds)
    pages.set_branding(config.branding)
    signin = None
    if policy is not None and policy.has_login_routes:
        if config.client is None or config.sessions is None:
            raise ConfigError("routes with login = true need browser sign-in: set ENTRA_CLIENT_ID, "
                              "ENTRA_CLIENT_CERTIFICATE (or ENTRA_CLIENT_SECRET) and SESSION_KEYS")
        if platform is None:
            raise ConfigError("browser sign-in needs the platform's cipher and signer")
        id_keys = keys.get("2.0") or IssuerKeys(
            discovery_url(config, "2.0"), config.authority, http=http, store=store, clock=clock, log=log,
            max_age=config.jwks_max_age, cooldown=config.jwks_cooldown, timeout=config.fetch_timeout, share=share,
        )
        signin = build_signin(config, id_keys, verifier, http=http, store=store, clock=clock, log=log,
                              policy_groups=policy_groups, platform=platform)
    graph = None
    if config.graph is not None:
        graph = build_graph(config, http=http, store=store, clock=clock, log=log, policy_groups=policy_groups,
                            platform=platform, share=share)
    google = google_origins(config, policy, http=http, store=store, clock=clock, log=log, share=share, platform=platform)
    return Gateway(config, validator, policy, keys=keys, policy_groups=policy_groups, signer=signer, clock=clock, log=log,
                   signin=signin, graph=graph, google=google)


def build_graph(config: Config, *, http, store, clock, log, policy_groups, platform, share) -> GraphGroups:
    """Graph lookups as the gateway's own app registration (the credential of browser sign-in)."""
    client = config.client
    if client.certificate is not None and platform is None:
        raise ConfigError("Graph lookups with a client certificate need the platform's RSA signer")
    credential = ClientCredential(client.client_id, certificate=client.certificate, secret=client.secret,
                                  signer=platform.rsa_signer if platform is not None else None, clock=clock)
    return graph_groups(config, http=http, store=store, clock=clock, log=log, policy_groups=policy_groups,
                        tokens=TokenEndpoint(http, credential, config.graph.timeout), share=share)


def build_signin(config: Config, id_keys: IssuerKeys, verifier, *, http, store, clock, log, policy_groups,
                 platform) -> SignIn:
    client = config.client
    credential = ClientCredential(client.client_id, certificate=client.certificate, secret=client.secret,
                                  signer=platform.rsa_signer, clock=clock)
    async def get_endpoints(defer) -> Endpoints:
        """From the v2 discovery document the key set came from, each URL checked against the
        configured authority like jwks_uri (keys.signin_endpoints, authority.py)."""
        found = (await id_keys.current(defer)).endpoints
        if not found:
            raise EntraUnavailable("the discovery document names no usable sign-in endpoints")
        return Endpoints(found["authorization"], found["token"], found["end_session"])

    async def issuer_of(tid: str, defer) -> str | None:
        if not config.tenant_allowed(tid):
            return None
        key_set = await id_keys.current(defer)
        return key_set.issuer.replace("{tenantid}", tid)

    return SignIn(
        client_id=client.client_id, session_lifetime=config.sessions.lifetime, endpoints=get_endpoints,
        entra=TokenEndpoint(http, credential, config.fetch_timeout),
        id_tokens=IdTokenValidator(config, id_keys, verifier, client.client_id),
        sealer=Sealer(platform.cipher, config.sessions.keys, platform.random_bytes), store=store, clock=clock, log=log,
        policy_groups=policy_groups, issuers=issuer_of,
    )
