"""graph.GraphGroups on CPython with an injected clock, a scripted token endpoint and Graph, and
an in-memory KV: what is asked, what is cached where and for how long, and how every failure
fails closed. (Through Gateway.handle, over HTTP, against the mock Graph: test_graph_gateway.py.)
"""

import asyncio
import email.utils
import json

import pytest

from entragate.client_auth import ClientCredential
from entragate.entra import HttpFailure, TokenEndpoint
from entragate.graph import (
    CONSENT_RETRY_SECONDS, DEFAULT_THROTTLE_SECONDS, FAILURE_COOLDOWN_SECONDS, FROM_CACHE, FROM_GRAPH,
    KV_MIN_TTL_SECONDS, MAX_GROUP_IDS_PER_CALL, MAX_RETRY_AFTER_SECONDS, STORE_PREFIX, GraphGroups,
    GraphNotConsented, GroupsUnavailable, policy_digest, retry_after_seconds,
)
from entragate.identity import Identity

TENANT = "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b"
OTHER_TENANT = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
USER = "8a7b6c5d-4e3f-4a2b-9c1d-0e9f8a7b6c5d"
USER2 = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
ADMINS = "11111111-1111-4111-8111-111111111111"
WRITERS = "22222222-2222-4222-8222-222222222222"
READERS = "33333333-3333-4333-8333-333333333333"
OUTSIDE = "44444444-4444-4444-8444-444444444444"  # a group the policy never names
POLICY_GROUPS = frozenset({ADMINS, WRITERS, READERS})
GRAPH = "https://graph.example"
AUTHORITY = "https://login.example"
CACHE_SECONDS = 300
TIMEOUT = 2.0


def identity(oid=USER, tid=TENANT, kind="user", auth_method="bearer", groups=()):
    return Identity(oid=oid, tid=tid, sub="s", name="N", username="u@x", groups=groups, groups_overage=True, roles=(),
                    scopes=("access_as_user",) if kind == "user" else (), client_id="c", kind=kind, version="2.0",
                    issuer="i", audience="a", expires_at=2e9, auth_method=auth_method)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


class Store:
    def __init__(self):
        self.data, self.ttls, self.reads = {}, {}, 0
        self.fail = False

    async def get(self, key):
        self.reads += 1
        if self.fail:
            raise RuntimeError("KV is down")
        return self.data.get(key)

    async def put(self, key, value, ttl=None):
        self.data[key] = value
        self.ttls[key] = ttl


class Directory:
    """The token endpoint and Graph, scripted: membership per (tid, oid), and what to answer."""

    def __init__(self):
        self.member_of = {(TENANT, USER): {ADMINS, OUTSIDE}, (TENANT, USER2): set(), (OTHER_TENANT, USER): {WRITERS}}
        self.token_calls, self.graph_calls = [], []
        self.token_answer = None  # (status, document) instead of a token
        self.graph_answer = None  # (status, document, retry_after) or an exception instead of the membership
        self.expires_in = 3600
        self.gate = None  # an asyncio.Event Graph waits for

    async def post_form(self, url, fields, timeout):
        self.token_calls.append((url, fields["scope"]))
        if self.token_answer is not None:
            return self.token_answer
        return 200, {"access_token": f"app-token-{len(self.token_calls)}", "expires_in": self.expires_in}

    async def post_json(self, url, document, headers, timeout):
        self.graph_calls.append((url, list(document["groupIds"]), headers["authorization"]))
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.graph_answer, Exception):
            raise self.graph_answer
        if self.graph_answer is not None:
            return self.graph_answer
        tid = next(tid for tid in (TENANT, OTHER_TENANT) if self.token_tenant(headers) == tid)
        oid = url.split("/users/")[1].split("/")[0]
        if (tid, oid) not in self.member_of:
            return 404, {"error": {"code": "Request_ResourceNotFound"}}, None
        return 200, {"value": [g for g in document["groupIds"] if g in self.member_of[(tid, oid)]]}, None

    def token_tenant(self, headers):
        number = int(headers["authorization"].rsplit("-", 1)[1])
        return self.token_calls[number - 1][0].split("/")[3]


class Harness:
    def __init__(self, *, store=None, groups=POLICY_GROUPS, allowed=(TENANT, OTHER_TENANT), directory=None):
        self.clock = Clock()
        self.store = store or Store()
        self.directory = directory or Directory()
        self.logs = []
        credential = ClientCredential("6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60", secret="s3cret", clock=self.clock)
        self.graph = GraphGroups(
            graph_url=GRAPH, authority=AUTHORITY, policy_groups=groups,
            tokens=TokenEndpoint(self.directory, credential, TIMEOUT), http=self.directory, store=self.store,
            clock=self.clock, log=self.logs.append, cache_seconds=CACHE_SECONDS, timeout=TIMEOUT,
            tenant_allowed=lambda tid: tid in allowed,
        )
        self.deferred = []

    def defer(self, coroutine):
        self.deferred.append(coroutine)

    async def _resolve(self, who):
        try:
            return await self.graph.resolve(who, self.defer)
        finally:
            while self.deferred:  # what waitUntil would finish after the response
                await self.deferred.pop(0)

    def resolve(self, who=None):
        return asyncio.run(self._resolve(who or identity()))

    def groups(self, who=None):
        resolved, source = self.resolve(who)
        return resolved.groups, source


def test_asks_only_for_the_policys_groups_and_keeps_only_those():
    h = Harness()
    resolved, source = h.resolve()
    assert source == FROM_GRAPH
    assert resolved.groups == (ADMINS,) and resolved.groups_overage is False  # OUTSIDE never asked, never kept
    [(url, asked, authorization)] = h.directory.graph_calls
    assert url == f"{GRAPH}/v1.0/users/{USER}/checkMemberGroups"
    assert sorted(asked) == sorted(POLICY_GROUPS) and authorization == "Bearer app-token-1"
    assert h.directory.token_calls == [(f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token", f"{GRAPH}/.default")]
    stored = json.loads(h.store.data[f"{STORE_PREFIX}{TENANT}:{USER}:{policy_digest(POLICY_GROUPS)}"])
    assert stored["groups"] == [ADMINS] and OUTSIDE not in json.dumps(stored)


def test_the_rest_of_the_identity_is_kept():
    h = Harness()
    original = identity()
    resolved, _ = h.resolve(original)
    assert resolved == Identity(**{**{name: getattr(original, name) for name in Identity.__slots__},
                                   "groups": (ADMINS,), "groups_overage": False})


def test_batches_of_at_most_twenty_group_ids():
    groups = frozenset(f"{n:08x}-0000-4000-8000-000000000000" for n in range(45)) | {ADMINS}
    h = Harness(groups=groups)
    assert h.groups()[0] == (ADMINS,)
    sizes = [len(asked) for _, asked, _ in h.directory.graph_calls]
    assert sizes == [MAX_GROUP_IDS_PER_CALL, MAX_GROUP_IDS_PER_CALL, 6]
    assert sorted(g for _, asked, _ in h.directory.graph_calls for g in asked) == sorted(groups)
    assert len(h.directory.token_calls) == 1  # one app token for all three calls


def test_the_batches_are_asked_at_once_so_a_slow_graph_costs_one_wait():
    groups = frozenset(f"{n:08x}-0000-4000-8000-000000000000" for n in range(45)) | {ADMINS}
    h = Harness(groups=groups)

    async def lookup():
        h.directory.gate = asyncio.Event()
        task = asyncio.ensure_future(h.graph.resolve(identity(), h.defer))
        await asyncio.sleep(0.01)
        in_flight = len(h.directory.graph_calls)  # before Graph answered any of them
        h.directory.gate.set()
        return in_flight, await task

    in_flight, (resolved, _) = asyncio.run(lookup())
    for coroutine in h.deferred:
        coroutine.close()
    assert in_flight == 3 and resolved.groups == (ADMINS,)


def test_non_guid_group_names_are_never_sent():
    h = Harness(groups=frozenset({ADMINS, "not-a-guid"}))
    assert h.groups()[0] == (ADMINS,)
    assert h.directory.graph_calls[0][1] == [ADMINS]


def test_not_a_member_is_an_empty_answer_and_cached():
    h = Harness()
    assert h.groups(identity(USER2)) == ((), FROM_GRAPH)
    assert h.groups(identity(USER2)) == ((), FROM_CACHE)
    assert len(h.directory.graph_calls) == 1


def test_memory_answers_until_the_cache_lifetime_then_graph_again():
    h = Harness()
    h.resolve()
    h.clock.now += CACHE_SECONDS - 1
    assert h.groups()[1] == FROM_CACHE
    assert len(h.directory.graph_calls) == 1
    h.clock.now += 1
    h.directory.member_of[(TENANT, USER)] = {READERS}  # membership changed meanwhile
    assert h.groups() == ((READERS,), FROM_GRAPH)
    assert len(h.directory.graph_calls) == 2


def test_a_token_seen_again_gets_the_same_resolved_identity_object():
    h = Harness()
    who = identity()
    first, _ = h.resolve(who)
    again, source = h.resolve(who)
    assert source == FROM_CACHE and again is first
    other_token, _ = h.resolve(identity())  # a new token of the same user: an equal, new identity
    assert other_token == first and len(h.directory.graph_calls) == 1


def test_kv_answer_serves_a_fresh_isolate_without_graph():
    store = Store()
    first = Harness(store=store)
    first.resolve()
    key = f"{STORE_PREFIX}{TENANT}:{USER}:{policy_digest(POLICY_GROUPS)}"
    assert first.store.ttls[key] == CACHE_SECONDS
    fresh = Harness(store=store)  # another isolate: empty memory, same KV
    fresh.clock.now = first.clock.now + 100
    assert fresh.groups() == ((ADMINS,), FROM_CACHE)
    assert fresh.directory.graph_calls == [] and fresh.directory.token_calls == []
    # The KV answer keeps its own age: it expires when Graph's answer is CACHE_SECONDS old.
    fresh.clock.now = first.clock.now + CACHE_SECONDS
    assert fresh.groups()[1] == FROM_GRAPH


@pytest.mark.parametrize("age, used", [(0, True), (CACHE_SECONDS - 1, True), (CACHE_SECONDS, False), (-5, False)])
def test_kv_answers_only_within_their_lifetime(age, used):
    store = Store()
    h = Harness(store=store)
    key = f"{STORE_PREFIX}{TENANT}:{USER}:{policy_digest(POLICY_GROUPS)}"
    store.data[key] = json.dumps({"format": 1, "asked": policy_digest(POLICY_GROUPS), "groups": [READERS],
                                  "resolved_at": h.clock.now - age})
    assert h.groups() == (((READERS,), FROM_CACHE) if used else ((ADMINS,), FROM_GRAPH))


def test_a_policy_change_asks_again():
    store = Store()
    Harness(store=store).resolve()
    changed = Harness(store=store, groups=POLICY_GROUPS | {OUTSIDE})
    assert changed.groups() == ((ADMINS, OUTSIDE) if ADMINS < OUTSIDE else (OUTSIDE, ADMINS), FROM_GRAPH)
    assert len(store.data) == 2  # two questions, two answers; neither reused for the other


@pytest.mark.parametrize("stored", [
    "not json", json.dumps([1]), json.dumps({"format": 2, "groups": [], "resolved_at": 1}),
    json.dumps({"format": 1, "asked": "other", "groups": [], "resolved_at": 1e6}),
    json.dumps({"format": 1, "asked": policy_digest(POLICY_GROUPS), "groups": [OUTSIDE], "resolved_at": 1e6}),
    json.dumps({"format": 1, "asked": policy_digest(POLICY_GROUPS), "groups": "x", "resolved_at": 1e6}),
    json.dumps({"format": 1, "asked": policy_digest(POLICY_GROUPS), "groups": [], "resolved_at": True}),
])
def test_a_corrupt_or_foreign_kv_entry_is_ignored(stored):
    store = Store()
    h = Harness(store=store)
    store.data[f"{STORE_PREFIX}{TENANT}:{USER}:{policy_digest(POLICY_GROUPS)}"] = stored
    assert h.groups() == ((ADMINS,), FROM_GRAPH)


def test_kv_outage_falls_back_to_graph():
    store = Store()
    store.fail = True
    h = Harness(store=store)
    assert h.groups() == ((ADMINS,), FROM_GRAPH)
    assert any("KV is down" in line for line in h.logs)


def test_kv_ttl_is_never_below_kvs_minimum():
    store = Store()
    h = Harness(store=store)
    h.graph._cache_seconds = 30  # below KV's minimum (config refuses it; the write must still be accepted)
    h.resolve()
    assert set(store.ttls.values()) == {KV_MIN_TTL_SECONDS}


def test_concurrent_requests_for_one_user_share_one_lookup():
    h = Harness()
    h.directory.gate = None

    async def burst():
        h.directory.gate = asyncio.Event()
        tasks = [asyncio.ensure_future(h.graph.resolve(identity(), h.defer)) for _ in range(50)]
        await asyncio.sleep(0.01)
        h.directory.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(burst())
    for coroutine in h.deferred:
        coroutine.close()
    assert {source for _, source in results} == {FROM_GRAPH}
    assert len(h.directory.graph_calls) == 1 and len(h.directory.token_calls) == 1
    assert h.store.reads == 1


def test_concurrent_users_of_one_tenant_share_one_app_token_request():
    h = Harness()

    async def burst():
        h.directory.gate = asyncio.Event()
        tasks = [asyncio.ensure_future(h.graph.resolve(identity(oid), h.defer)) for oid in (USER, USER2)]
        await asyncio.sleep(0.01)
        h.directory.gate.set()
        return await asyncio.gather(*tasks)

    asyncio.run(burst())
    for coroutine in h.deferred:
        coroutine.close()
    assert len(h.directory.token_calls) == 1 and len(h.directory.graph_calls) == 2


def test_app_token_is_reused_then_renewed_before_it_expires():
    h = Harness()
    h.resolve(identity(USER))
    h.clock.now += 3600 - 301
    h.resolve(identity(USER2))
    assert len(h.directory.token_calls) == 1
    h.clock.now += 1  # 300 s before it expires
    h.resolve(identity("5a5b5c5d-0000-4000-8000-000000000000"))
    assert len(h.directory.token_calls) == 2
    assert h.directory.graph_calls[-1][2] == "Bearer app-token-2"


def test_a_short_lived_app_token_is_renewed_at_half_its_life():
    h = Harness()
    h.directory.expires_in = 100
    h.resolve(identity(USER))
    h.clock.now += 50
    h.resolve(identity(USER2))
    assert len(h.directory.token_calls) == 2


def test_each_tenant_gets_its_own_app_token_from_its_own_token_endpoint():
    h = Harness()
    assert h.groups(identity(USER, OTHER_TENANT)) == ((WRITERS,), FROM_GRAPH)
    assert h.groups(identity(USER, TENANT)) == ((ADMINS,), FROM_GRAPH)  # same oid, other tenant: its own answer
    assert [url for url, _ in h.directory.token_calls] == [f"{AUTHORITY}/{OTHER_TENANT}/oauth2/v2.0/token",
                                                           f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"]


@pytest.mark.parametrize("who", [
    identity(kind="app"),
    identity(oid="not-a-guid"), identity(oid="../../groups"), identity(oid=None),
    identity(tid="9f9f9f9f-0000-4000-8000-000000000000"),  # a tenant not accepted
    identity(tid=None),
])
def test_identities_graph_is_never_asked_about(who):
    h = Harness()
    assert h.resolve(who) is None
    assert h.directory.token_calls == [] and h.directory.graph_calls == []


def test_a_policy_without_groups_asks_nothing():
    h = Harness(groups=frozenset())
    assert h.resolve() is None and h.directory.graph_calls == []


def test_session_identities_are_resolved_like_bearer_ones():
    h = Harness()
    resolved, source = h.resolve(identity(auth_method="session"))
    assert (resolved.groups, resolved.auth_method, source) == ((ADMINS,), "session", FROM_GRAPH)


def test_a_user_graph_does_not_know_is_a_member_of_nothing_and_not_remembered():
    h = Harness()
    stranger = identity("5a5b5c5d-0000-4000-8000-000000000000")
    assert h.groups(stranger) == ((), FROM_GRAPH)
    assert h.groups(stranger) == ((), FROM_GRAPH)
    assert len(h.directory.graph_calls) == 2 and h.store.data == {}


# -- failures: transient, never "not a member", never an allow


def unavailable(h, who=None) -> GroupsUnavailable:
    with pytest.raises(GroupsUnavailable) as caught:
        h.resolve(who)
    return caught.value


@pytest.mark.parametrize("answer, why", [
    (HttpFailure("fetch failed: TimeoutError"), "TimeoutError"),
    ((500, {"error": {}}, None), "HTTP 500"),
    ((502, None, None), "HTTP 502"),
    ((503, None, None), "HTTP 503"),
    ((200, None, None), "list of"),  # not JSON
    ((200, {"value": "x"}, None), "list of"),
    ((200, {"value": [OUTSIDE]}, None), "list of"),  # a group not asked about
    ((200, {"value": [1]}, None), "list of"),
    ((200, {}, None), "list of"),
    ((400, {"error": {"code": "Request_BadRequest"}}, None), "HTTP 400"),
])
def test_graph_failures_are_transient_refusals_and_nothing_is_kept(answer, why):
    h = Harness()
    h.directory.graph_answer = answer
    error = unavailable(h)
    assert error.status == 503 and error.code == "groups_unavailable" and error.retry_after == FAILURE_COOLDOWN_SECONDS
    assert any(why in line for line in h.logs)
    assert h.store.data == {} and h.graph._answers.get((TENANT, USER)) is None


def test_after_a_failure_the_tenant_is_not_asked_until_the_cooldown_ends():
    h = Harness()
    h.directory.graph_answer = HttpFailure("fetch failed: TimeoutError")
    unavailable(h)
    h.directory.graph_answer = None
    h.clock.now += FAILURE_COOLDOWN_SECONDS - 1
    error = unavailable(h, identity(USER2))  # another user of the same tenant fails fast
    assert error.retry_after == 1 and len(h.directory.graph_calls) == 1
    assert h.groups(identity(USER, OTHER_TENANT))[1] == FROM_GRAPH  # other tenants are asked
    h.clock.now += 1
    assert h.groups()[1] == FROM_GRAPH


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_is_respected_for_its_retry_after(status):
    h = Harness()
    h.directory.graph_answer = (status, {"error": {"code": "TooManyRequests"}}, "42")
    assert unavailable(h).retry_after == 42
    h.directory.graph_answer = None
    h.clock.now += 41
    assert unavailable(h, identity(USER2)).retry_after == 1
    assert len(h.directory.graph_calls) == 1  # nothing sent while throttled
    h.clock.now += 1
    assert h.groups()[1] == FROM_GRAPH


def test_a_cached_answer_serves_while_throttled_within_its_lifetime_only():
    h = Harness()
    h.resolve()
    h.directory.graph_answer = (429, None, "600")
    h.clock.now += CACHE_SECONDS - 1
    assert h.groups()[1] == FROM_CACHE
    h.clock.now += 1
    unavailable(h)  # expired: not served stale, however long Graph stays down


def test_429_without_retry_after_backs_off_by_default_and_a_huge_one_is_capped():
    h = Harness()
    h.directory.graph_answer = (429, None, None)
    assert unavailable(h).retry_after == DEFAULT_THROTTLE_SECONDS
    h.clock.now += DEFAULT_THROTTLE_SECONDS
    h.directory.graph_answer = (429, None, "86400")
    assert unavailable(h).retry_after == MAX_RETRY_AFTER_SECONDS


def test_graph_401_drops_the_app_token():
    h = Harness()
    h.directory.graph_answer = (401, {"error": {"code": "InvalidAuthenticationToken"}}, None)
    unavailable(h)
    h.directory.graph_answer = None
    h.clock.now += FAILURE_COOLDOWN_SECONDS
    h.resolve()
    assert len(h.directory.token_calls) == 2 and h.directory.graph_calls[-1][2] == "Bearer app-token-2"


def test_graph_403_means_the_permission_is_not_granted_in_that_tenant():
    h = Harness()
    h.directory.graph_answer = (403, {"error": {"code": "Authorization_RequestDenied"}}, None)
    with pytest.raises(GraphNotConsented) as caught:
        h.resolve()
    assert (caught.value.status, caught.value.code) == (403, "graph_not_consented")
    assert any("User.Read.All and GroupMember.Read.All" in line for line in h.logs)


@pytest.mark.parametrize("code", ["700016", "7000229", "65001", "500011"])
def test_a_tenant_without_consent_is_refused_distinctly_and_asked_again_after_a_minute(code):
    h = Harness()
    h.directory.token_answer = (401, {"error": "invalid_client", "error_description": f"AADSTS{code}: not here."})
    with pytest.raises(GraphNotConsented):
        h.resolve()
    h.clock.now += CONSENT_RETRY_SECONDS - 1
    with pytest.raises(GraphNotConsented):
        h.resolve(identity(USER2))
    assert len(h.directory.token_calls) == 1
    h.directory.token_answer = None  # an administrator consented
    h.clock.now += 1
    assert h.groups()[1] == FROM_GRAPH


@pytest.mark.parametrize("answer", [
    (401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
    (500, {"error": "temporarily_unavailable"}),
    (200, {"access_token": "", "expires_in": 3600}),
    (200, {"access_token": "a b", "expires_in": 3600}),
    (200, {"access_token": "t", "expires_in": 0}),
    (200, {"access_token": "t", "expires_in": "soon"}),
    (200, {"token_type": "Bearer"}),
])
def test_token_endpoint_failures_are_transient_refusals(answer):
    h = Harness()
    h.directory.token_answer = answer
    assert unavailable(h).retry_after == FAILURE_COOLDOWN_SECONDS
    assert h.directory.graph_calls == []


def test_v1_style_string_expires_in_is_accepted():
    h = Harness()
    h.directory.token_answer = (200, {"access_token": "t", "expires_in": "3599"})
    h.directory.graph_answer = (200, {"value": []}, None)
    assert h.groups() == ((), FROM_GRAPH)


def test_the_app_token_and_credential_are_never_logged():
    h = Harness()
    h.directory.graph_answer = (500, None, None)
    unavailable(h)
    assert not any("app-token" in line or "s3cret" in line for line in h.logs)


@pytest.mark.parametrize("value, expected", [
    ("7", 7), (" 7 ", 7), ("0", 1), ("999999", MAX_RETRY_AFTER_SECONDS), (None, 10), ("", 10), ("soon", 10),
    ("-3", 10), (email.utils.formatdate(1_000_030.0, usegmt=True), 30), (email.utils.formatdate(999_000.0, usegmt=True), 1),
])
def test_retry_after_values(value, expected):
    assert retry_after_seconds(value, 1_000_000.0, 10) == expected
