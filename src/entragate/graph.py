"""Groups overage resolved through Microsoft Graph (issue #15).

When a user is in more groups than fit in a token, Entra leaves `groups` out and says so
(claims.py: `_claim_names` / `hasgroups`); a rule that tests groups is then *unknown* and
fails closed with `groups_overage` (policy.py). With GRAPH_GROUPS = true the gateway asks
Graph instead, as its own application (client credentials, client_auth.py), whether the user
is a member of **the groups the policy names** (transitive membership):

    POST {GRAPH_URL}/v1.0/users/{oid}/checkMemberGroups   {"groupIds": [at most 20 ids]}
    -> 200 {"value": [the ids asked for that the user is a member of]}

and decides again on that answer (more than 20 groups: several calls, made at once, so a slow
Graph costs one timeout). Only those groups are ever asked for and stored, so an answer is
small and exact, whatever the user's other hundreds of groups.

- Who: user identities only (app-only tokens keep `groups_overage`: asking Graph about a
  service principal needs more permissions), whose `oid` and `tid` are GUIDs and whose tenant
  is accepted (ENTRA_TENANT_ID / ENTRA_ALLOWED_TENANTS). The Graph token is requested from the
  user's own tenant, `{authority}/{tid}/oauth2/v2.0/token`, scope `{GRAPH_URL}/.default`.
- Caching: the app token per tenant until REFRESH_MARGIN before it expires; each user's answer
  in memory (bounded) and in KV for GRAPH_CACHE_SECONDS from when Graph gave it (never longer,
  also while Graph is down), keyed by tenant, user and a digest of the policy's group set, so
  a policy change never reuses an answer to another question. Concurrent requests for one
  user share one lookup, and one app-token request per tenant (`share`, flights.py).
- Failure (fail closed, never "not a member"): Graph or the token endpoint unreachable, slow
  (the timeout), answering 5xx or garbage -> GroupsUnavailable (503, Retry-After), and the
  tenant's lookups fail fast for FAILURE_COOLDOWN; throttled (429/503 with Retry-After) ->
  no call to Graph for that tenant until then (at most MAX_RETRY_AFTER); the app not
  consented in the tenant (no service principal, or Graph's permission not granted) ->
  GraphNotConsented (403), asked again after CONSENT_RETRY.

Never logged: the app token, the client credential, the user's groups.
"""

import asyncio
import hashlib
import json
import math
import re
from dataclasses import replace

from .bounded import BoundedMap, strings_bytes
from .entra import EntraUnavailable, HttpFailure, TokenRequestRefused
from .errors import GatewayError
from .flights import share_locally
from .identity import USER, Identity, estimated_bytes

GRAPH_API_VERSION = "v1.0"
# Microsoft Graph's application id: its tokens' `aud` in some clouds and tools.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# checkMemberGroups takes at most 20 group ids per call (Graph documentation).
MAX_GROUP_IDS_PER_CALL = 20
# Where the groups of a decision came from (the audit line's groups_source).
FROM_TOKEN, FROM_GRAPH, FROM_CACHE = "token", "graph", "cache"

# The app token is renewed this long before it expires (Entra's last 60-90 minutes), so a
# request never carries one that expires on its way; at most half its lifetime.
REFRESH_MARGIN_SECONDS = 300
MAX_APP_TOKEN_CHARS = 16 * 1024
# After Graph or the token endpoint failed (unreachable, slow, 5xx, garbage), the tenant's
# lookups fail fast this long: during an outage one request per cooldown waits for the
# timeout, not every overage user's.
FAILURE_COOLDOWN_SECONDS = 5
# 429 without a usable Retry-After (Microsoft: back off); a Retry-After is honoured up to
# MAX_RETRY_AFTER_SECONDS, so a bogus value cannot shut a tenant's overage users out for days.
DEFAULT_THROTTLE_SECONDS = 10
MAX_RETRY_AFTER_SECONDS = 300
# A tenant that has not consented is asked again after this long: an administrator who grants
# consent sees it work within a minute, and the token endpoint is not asked on every request.
CONSENT_RETRY_SECONDS = 60
# Token-endpoint errors that mean "the app is not set up in this tenant" (AADSTS codes):
# 700016 application not found in the directory, 7000229 no service principal in the tenant,
# 65001 consent not granted, 500011 the resource (Graph) principal not found in the tenant.
NOT_CONSENTED_CODES = frozenset({"700016", "7000229", "65001", "500011"})
_AADSTS = re.compile(r"AADSTS(\d+)")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

STORE_FORMAT = 1
STORE_PREFIX = f"entragate:groups:v{STORE_FORMAT}:"
KV_MIN_TTL_SECONDS = 60  # Workers KV refuses a shorter expirationTtl
# Memory (bounded.py): an answer holds its key, a tuple of the policy's own group strings
# (shared, 8 bytes each) and the last identity it was applied to with its resolved copy (which
# shares the identity's strings): ~2.2 KB estimated for an ordinary user (test_memory.py), so
# ~1,900 users in 4 MiB, oldest out first; the others are one KV read away. App tokens: one per
# tenant, ~2 KB each.
MAX_ANSWERS = 4096
MAX_ANSWER_BYTES = 4 * 1024 * 1024
ANSWER_OVERHEAD_BYTES = 600
MAX_TENANTS = 1024
MAX_TENANT_BYTES = 4 * 1024 * 1024
TENANT_OVERHEAD_BYTES = 400


class GroupsUnavailable(GatewayError):
    """Membership could not be learnt right now: transient, never "not a member"."""

    status = 503
    code = "groups_unavailable"

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.retry_after = retry_after


class GraphNotConsented(GatewayError):
    """The user's tenant has not let the gateway's app read group membership (no service
    principal, or the Graph permission not granted): not transient, and not the user's doing,
    so not `condition_not_met` either; the tenant's administrator has to act."""

    status = 403
    code = "graph_not_consented"


def policy_digest(groups) -> str:
    """Names the question asked (the policy's group set) in cache keys."""
    return hashlib.sha256("\n".join(sorted(groups)).encode()).hexdigest()[:32]


def asked_groups(policy_groups) -> tuple:
    """What Graph is asked about: the policy's groups, sorted. Only GUIDs can name Entra groups;
    anything else would make Graph refuse the whole call (and can never be a member)."""
    return tuple(sorted(group for group in policy_groups if GUID.match(group)))


def with_resolved_groups(identity: Identity, member_of) -> Identity:
    """`identity` as Graph described it: its groups are the policy's groups it is a member of,
    and nothing is unknown any more (the forwarded groups are complete for the policy's groups,
    the only ones ever forwarded). Used by the gateway and by `explain` / `test` alike."""
    return replace(identity, groups=tuple(member_of), groups_overage=False)


def retry_after_seconds(value: str | None, now: float, default: int) -> int:
    """A Retry-After header (delta-seconds or an HTTP date) as whole seconds, 1..MAX."""
    seconds = None
    if value:
        value = value.strip()
        if value.isdigit():
            seconds = int(value)
        else:
            # Graph sends seconds; an HTTP date is rare, and `email` is too heavy to import with
            # the Worker (tests/runtime/test_edge_imports.py).
            import email.utils

            try:
                seconds = math.ceil(email.utils.parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None:
        seconds = default
    return max(1, min(MAX_RETRY_AFTER_SECONDS, seconds))


class _Answer:
    """One user's membership among the policy's groups, and until when it may be used."""

    __slots__ = ("groups", "resolved_at", "expires_at", "source", "resolved", "size")

    def __init__(self, groups: tuple, resolved_at: float, expires_at: float, identity: Identity):
        self.groups = groups
        self.resolved_at = resolved_at
        self.expires_at = expires_at
        # The identity this answer was last applied to and the result: a token seen again
        # comes from the token cache as the very same object, so a hit costs no copy.
        self.source = None
        self.resolved = None
        self.size = ANSWER_OVERHEAD_BYTES + 8 * len(groups) + strings_bytes((identity.tid, identity.oid)) \
            + estimated_bytes(identity)

    def applied(self, identity: Identity) -> Identity:
        if self.source is not identity:
            self.resolved = with_resolved_groups(identity, self.groups)
            self.source = identity
        return self.resolved


class _Tenant:
    """Per tenant: the app token, and whether (and until when) Graph is not to be asked."""

    __slots__ = ("token", "refresh_at", "token_flight", "blocked_until", "blocked_because", "size")

    def __init__(self):
        self.token = None
        self.refresh_at = 0.0
        self.token_flight = None
        self.blocked_until = 0.0
        self.blocked_because = None  # a GatewayError class
        self.size = TENANT_OVERHEAD_BYTES + MAX_APP_TOKEN_CHARS // 8  # an app token is ~2 KB

    def block(self, until: float, because) -> None:
        self.blocked_until = max(self.blocked_until, until)
        self.blocked_because = because


class _NotFound(Exception):
    """Graph knows no such user in the tenant (deleted since the token was issued)."""


async def _settled(flight) -> None:
    try:
        await flight
    except Exception:
        pass


class GraphGroups:
    """Resolves overage identities; one per gateway (isolate)."""

    def __init__(self, *, graph_url: str, authority: str, policy_groups: frozenset, tokens, http, store, clock, log,
                 cache_seconds: int, timeout: float, tenant_allowed, share=share_locally):
        self._graph_url = graph_url.rstrip("/")
        self._scope = self._graph_url + "/.default"
        self._authority = authority.rstrip("/")
        self._ask = asked_groups(policy_groups)
        self.digest = policy_digest(self._ask)
        self._tokens = tokens
        self._http = http
        self._store = store
        self._clock = clock
        self._log = log
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._tenant_allowed = tenant_allowed
        self._share = share
        self._answers = BoundedMap(MAX_ANSWERS, MAX_ANSWER_BYTES)
        self._tenants = BoundedMap(MAX_TENANTS, MAX_TENANT_BYTES)
        self._pending: dict = {}  # (tid, oid) -> the lookup in flight

    @property
    def asked_groups(self) -> tuple:
        return self._ask

    async def resolve(self, identity: Identity, defer) -> tuple[Identity, str] | None:
        """(`identity` with its groups as Graph gives them, FROM_CACHE | FROM_GRAPH), or None
        when Graph cannot be asked about this identity (the overage refusal stands). Raises
        GroupsUnavailable or GraphNotConsented."""
        if identity.kind != USER:
            return None
        key = (identity.tid, identity.oid)
        entry = self._answers.get(key)
        if entry is not None and self._clock() < entry.expires_at:
            return entry.applied(identity), FROM_CACHE
        tid, oid = key
        if not (isinstance(tid, str) and isinstance(oid, str) and GUID.match(tid) and GUID.match(oid)
                and self._tenant_allowed(tid)) or not self._ask:
            return None
        flight = self._pending.get(key)
        if flight is None:
            flight = self._pending[key] = self._share(self._lookup(key, identity, defer))
            defer(_settled(flight))
        entry, source = await flight
        return entry.applied(identity), source

    # -- one user's lookup: KV, then Graph

    async def _lookup(self, key: tuple, identity: Identity, defer) -> tuple[_Answer, str]:
        try:
            tid, oid = key
            stored = await self._read_store(tid, oid, identity)
            if stored is not None:
                self._answers.put(key, stored)
                return stored, FROM_CACHE
            tenant = self._tenant(tid)
            self._check_blocked(tenant, tid)
            token = await self._app_token(tid, tenant, defer)
            # The batches at once, so a slow Graph costs one timeout, not one per 20 groups.
            batches = [self._ask[first:first + MAX_GROUP_IDS_PER_CALL]
                       for first in range(0, len(self._ask), MAX_GROUP_IDS_PER_CALL)]
            answers = await asyncio.gather(*(self._check(tid, oid, token, batch, tenant) for batch in batches),
                                           return_exceptions=True)
            member_of = []
            try:
                for answer in answers:
                    if isinstance(answer, BaseException):
                        raise answer
                    member_of += answer
            except _NotFound:
                # Member of nothing; not kept: a user created a moment ago may not have reached
                # every Graph replica yet.
                now = self._clock()
                return _Answer((), now, now, identity), FROM_GRAPH
            now = self._clock()
            answered = frozenset(member_of)
            entry = _Answer(tuple(group for group in self._ask if group in answered), now, now + self._cache_seconds,
                            identity)
            self._answers.put(key, entry)
            defer(self._write_store(tid, oid, entry))
            return entry, FROM_GRAPH
        finally:
            self._pending.pop(key, None)

    def _check_blocked(self, tenant: _Tenant, tid: str) -> None:
        remaining = tenant.blocked_until - self._clock()
        if remaining <= 0:
            return
        if tenant.blocked_because is GraphNotConsented:
            raise GraphNotConsented(f"the gateway's application is not consented in tenant {tid}")
        raise GroupsUnavailable("group membership cannot be checked right now", math.ceil(remaining))

    def _tenant(self, tid: str) -> _Tenant:
        tenant = self._tenants.get(tid)
        if tenant is None:
            tenant = _Tenant()
            self._tenants.put(tid, tenant)
        return tenant

    def _fail(self, tenant: _Tenant, tid: str, why: str, seconds: int = FAILURE_COOLDOWN_SECONDS) -> GroupsUnavailable:
        self._log(f"groups lookup in tenant {tid} failed: {why}; Graph is not asked for {seconds} s")
        tenant.block(self._clock() + seconds, GroupsUnavailable)
        return GroupsUnavailable("group membership cannot be checked right now", seconds)

    def _not_consented(self, tenant: _Tenant, tid: str, why: str) -> GraphNotConsented:
        self._log(f"groups lookup in tenant {tid} refused: {why}; asked again in {CONSENT_RETRY_SECONDS} s")
        tenant.block(self._clock() + CONSENT_RETRY_SECONDS, GraphNotConsented)
        return GraphNotConsented(f"the gateway's application is not consented in tenant {tid}")

    # -- the app token, per tenant

    async def _app_token(self, tid: str, tenant: _Tenant, defer) -> str:
        if tenant.token is not None and self._clock() < tenant.refresh_at:
            return tenant.token
        if tenant.token_flight is None:
            tenant.token_flight = self._share(self._fetch_token(tid, tenant))
            defer(_settled(tenant.token_flight))
        return await tenant.token_flight

    async def _fetch_token(self, tid: str, tenant: _Tenant) -> str:
        try:
            url = f"{self._authority}/{tid}/oauth2/v2.0/token"
            try:
                document = await self._tokens.client_credentials(url, self._scope)
            except TokenRequestRefused as error:
                codes = set(_AADSTS.findall(error.description))
                if codes & NOT_CONSENTED_CODES:
                    raise self._not_consented(tenant, tid, f"token endpoint: {error}") from None
                # The gateway's own credential is wrong (expired secret, unknown certificate...).
                raise self._fail(tenant, tid, f"token endpoint refused the gateway's credential: {error}") from None
            except EntraUnavailable as error:
                raise self._fail(tenant, tid, error.detail) from None
            token, lifetime = document.get("access_token"), document.get("expires_in")
            if isinstance(lifetime, str) and lifetime.isdigit():
                lifetime = int(lifetime)  # v1 endpoints send a string
            if not (isinstance(token, str) and 0 < len(token) <= MAX_APP_TOKEN_CHARS and token.isascii()
                    and token.isprintable() and " " not in token
                    and isinstance(lifetime, int) and not isinstance(lifetime, bool) and lifetime > 0):
                raise self._fail(tenant, tid, "token endpoint answered without a usable access_token / expires_in")
            tenant.token = token
            tenant.refresh_at = self._clock() + lifetime - min(REFRESH_MARGIN_SECONDS, lifetime // 2)
            return token
        finally:
            tenant.token_flight = None

    # -- Graph

    async def _check(self, tid: str, oid: str, token: str, batch: tuple, tenant: _Tenant) -> list:
        url = f"{self._graph_url}/{GRAPH_API_VERSION}/users/{oid}/checkMemberGroups"
        try:
            status, document, retry_after = await self._http.post_json(
                url, {"groupIds": list(batch)}, {"authorization": f"Bearer {token}"}, self._timeout)
        except HttpFailure as error:
            raise self._fail(tenant, tid, f"Graph: {error}") from None
        if status == 200:
            value = document.get("value") if isinstance(document, dict) else None
            asked = frozenset(batch)
            # Exactly what was asked for, or garbage: an id not asked about would be a group
            # the policy never named, and a non-list no answer at all.
            if not isinstance(value, list) or not all(isinstance(group, str) and group in asked for group in value):
                raise self._fail(tenant, tid, "Graph answered checkMemberGroups with something other than a list of "
                                              "the group ids asked about")
            return value
        if status == 404:
            raise _NotFound()
        if status == 429 or (status == 503 and retry_after):
            seconds = retry_after_seconds(retry_after, self._clock(), DEFAULT_THROTTLE_SECONDS)
            raise self._fail(tenant, tid, f"Graph throttled (HTTP {status})", seconds)
        if status == 401:
            tenant.token = None  # not accepted (revoked, signing key rolled): the next lookup gets another
            raise self._fail(tenant, tid, "Graph refused the app token (HTTP 401)")
        if status == 403:
            raise self._not_consented(tenant, tid, "Graph answered 403: the application permission (User.Read.All "
                                                   "and GroupMember.Read.All) is not granted in this tenant")
        raise self._fail(tenant, tid, f"Graph answered HTTP {status}")

    # -- KV

    def _store_key(self, tid: str, oid: str) -> str:
        return f"{STORE_PREFIX}{tid}:{oid}:{self.digest}"

    async def _read_store(self, tid: str, oid: str, identity: Identity) -> _Answer | None:
        try:
            text = await asyncio.wait_for(self._store.get(self._store_key(tid, oid)), self._timeout)
            if not isinstance(text, str):
                return None
            data = json.loads(text)
            groups, resolved_at = data.get("groups"), data.get("resolved_at")
            if (data.get("format") != STORE_FORMAT or data.get("asked") != self.digest or not isinstance(groups, list)
                    or not all(isinstance(group, str) and group in self._ask for group in groups)
                    or not isinstance(resolved_at, (int, float)) or isinstance(resolved_at, bool)):
                raise ValueError("not a stored answer to this policy's question")
        except Exception as error:  # KV outage or a corrupt entry: ask Graph
            self._log(f"ignoring stored groups for a user of tenant {tid}: {type(error).__name__}: {error}")
            return None
        expires_at = resolved_at + self._cache_seconds
        # An answer "from the future" is not trusted to expire: ask again.
        if not resolved_at <= self._clock() < expires_at:
            return None
        member_of = frozenset(groups)
        return _Answer(tuple(group for group in self._ask if group in member_of), resolved_at, expires_at, identity)

    async def _write_store(self, tid: str, oid: str, entry: _Answer) -> None:
        text = json.dumps({"format": STORE_FORMAT, "asked": self.digest, "groups": list(entry.groups),
                           "resolved_at": entry.resolved_at}, separators=(",", ":"))
        ttl = max(KV_MIN_TTL_SECONDS, math.ceil(entry.expires_at - self._clock()))
        try:
            await self._store.put(self._store_key(tid, oid), text, ttl=ttl)
        except Exception as error:
            self._log(f"could not store groups for a user of tenant {tid}: {type(error).__name__}: {error}")


def graph_groups(config, *, http, store, clock, log, policy_groups, tokens, share=share_locally) -> GraphGroups:
    """The resolver for `config.graph` (config.GraphSettings); `tokens`: an entra.TokenEndpoint
    holding the gateway's client credential."""
    settings = config.graph
    return GraphGroups(graph_url=settings.url, authority=config.authority, policy_groups=policy_groups, tokens=tokens,
                       http=http, store=store, clock=clock, log=log, cache_seconds=settings.cache_seconds,
                       timeout=settings.timeout, tenant_allowed=config.tenant_allowed, share=share)
