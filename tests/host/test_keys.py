"""Key cache rules on CPython with a fake clock, fake HTTP and a fake KV store."""

import asyncio
import json

import pytest

from entragate.errors import KeysUnavailable
from entragate.keys import (
    COLD_RETRY_FIRST_SECONDS, COLD_RETRY_MAX_SECONDS, IssuerKeys, KeyFetchError, KeySet, cold_retry_delay,
)

AUTHORITY = "https://login.example"
DISCOVERY = f"{AUTHORITY}/tid/v2.0/.well-known/openid-configuration"
JWKS = f"{AUTHORITY}/tid/discovery/v2.0/keys"
ISSUER = "https://login.microsoftonline.com/tid/v2.0"
N = "x" * 342  # shape only: the cache never does RSA maths


def jwk(kid, **extra):
    return {"kty": "RSA", "use": "sig", "kid": kid, "n": N, "e": "AQAB", **extra}


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


class FakeHttp:
    def __init__(self, kids=("k1",)):
        self.discovery = {"issuer": ISSUER, "jwks_uri": JWKS}
        self.jwks = {"keys": [jwk(k) for k in kids]}
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.calls = []

    def set_kids(self, *kids):
        self.jwks = {"keys": [jwk(k) for k in kids]}

    async def get_json(self, url, timeout):
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return self.discovery if url == DISCOVERY else self.jwks

    def jwks_fetches(self):
        return self.calls.count(JWKS)


class FakeStore:
    def __init__(self):
        self.data = {}
        self.fail_get = False
        self.gets = 0

    async def get(self, key):
        self.gets += 1
        if self.fail_get:
            raise RuntimeError("KV unavailable")
        return self.data.get(key)

    async def put(self, key, value):
        self.data[key] = value


class Deferred:
    def __init__(self):
        self.tasks = []

    def __call__(self, coroutine):
        self.tasks.append(coroutine)

    async def run(self):
        for task in self.tasks:
            await task
        self.tasks.clear()

    def __del__(self):
        for task in self.tasks:
            task.close()  # background work a test chose not to run


def dropped(coroutine):
    """A `defer` for calls whose background work (KV writes) the test does not look at."""
    coroutine.close()


def make(http=None, store=None, clock=None, max_age=3600, cooldown=60, timeout=1.0):
    logs = []
    keys = IssuerKeys(
        DISCOVERY, AUTHORITY,
        http=http or FakeHttp(), store=store or FakeStore(), clock=clock or FakeClock(),
        log=logs.append, max_age=max_age, cooldown=cooldown, timeout=timeout,
    )
    return keys, logs


def run(coroutine):
    return asyncio.run(coroutine)


def test_first_use_fetches_discovery_then_jwks_and_writes_kv_in_background():
    http, store, defer = FakeHttp(), FakeStore(), Deferred()
    keys, logs = make(http, store)

    async def scenario():
        key_set = await keys.current(defer)
        assert store.data == {}, "the KV write must not happen on the request path"
        await defer.run()
        return key_set

    key_set = run(scenario())
    assert http.calls == [DISCOVERY, JWKS]
    assert key_set.issuer == ISSUER and set(key_set.keys) == {"k1"}
    (stored,) = store.data.values()
    assert json.loads(stored)["fetched_at"] == 1_000_000.0
    assert KeySet.from_json(stored, AUTHORITY).keys == key_set.keys
    assert logs == [], "an empty key store is the normal cold start, not something to log"


def test_fresh_keys_are_served_from_memory():
    http = FakeHttp()
    keys, _ = make(http)

    async def scenario():
        for _ in range(5):
            assert await keys.key("k1", dropped) is not None

    run(scenario())
    assert http.jwks_fetches() == 1


def test_stale_keys_are_refreshed_after_max_age():
    http, clock = FakeHttp(), FakeClock()
    keys, _ = make(http, clock=clock, max_age=3600)

    async def scenario():
        await keys.current(dropped)
        clock.now += 3599
        await keys.current(dropped)
        assert http.jwks_fetches() == 1
        clock.now += 1
        await keys.current(dropped)

    run(scenario())
    assert http.jwks_fetches() == 2


def test_unknown_kid_refreshes_at_most_once_per_cooldown():
    http, clock = FakeHttp(), FakeClock()
    keys, _ = make(http, clock=clock, cooldown=60)

    async def scenario():
        await keys.current(dropped)
        assert await keys.key("nope-0", dropped) is None  # the first fetch started the cooldown
        assert http.jwks_fetches() == 1
        clock.now += 60
        assert await keys.key("nope-1", dropped) is None  # refresh 2
        clock.now += 59
        assert await keys.key("nope-2", dropped) is None  # within cooldown: no fetch
        assert http.jwks_fetches() == 2
        clock.now += 1
        http.set_kids("k1", "k2")
        assert await keys.key("k2", dropped) is not None  # cooldown over: refresh 3

    run(scenario())
    assert http.jwks_fetches() == 3


def test_rotation_new_key_appears_old_key_disappears():
    http, clock = FakeHttp(("old",)), FakeClock()
    keys, _ = make(http, clock=clock, cooldown=60)

    async def scenario():
        assert await keys.key("old", dropped)
        http.set_kids("old", "new")
        clock.now += 60
        assert await keys.key("new", dropped)
        http.set_kids("new")
        clock.now += 3600
        assert await keys.key("old", dropped) is None
        assert await keys.key("new", dropped)

    run(scenario())


def test_concurrent_requests_share_one_fetch():
    http = FakeHttp()
    keys, _ = make(http)

    async def scenario():
        http.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(keys.key(f"kid-{i}", dropped)) for i in range(100)]
        await asyncio.sleep(0)
        http.gate.set()
        return await asyncio.gather(*waiting)

    results = run(scenario())
    assert results == [None] * 100
    assert http.calls == [DISCOVERY, JWKS]


@pytest.mark.parametrize("failure", [
    KeyFetchError("HTTP 500"),
    KeyFetchError("did not return JSON"),
    KeyFetchError("fetch failed: TimeoutError"),
])
def test_failed_refresh_keeps_last_known_good(failure):
    http, clock = FakeHttp(), FakeClock()
    keys, logs = make(http, clock=clock)

    async def scenario():
        await keys.current(dropped)
        http.failure = failure
        clock.now += 7200
        return await keys.key("k1", dropped)

    assert run(scenario()) is not None
    assert http.jwks_fetches() == 1 and len(http.calls) == 3
    assert "keeping last-known-good keys" in logs[-1]


@pytest.mark.parametrize("jwks", [
    {"keys": []},
    {"keys": [{"kty": "EC", "kid": "e", "crv": "P-256", "x": "a", "y": "b"}]},
    {"keys": [jwk("enc-only", use="enc")]},
    {"keys": [{"kty": "RSA", "kid": "k", "e": "AQAB"}]},
    {"keys": "not a list"},
    ["not", "an", "object"],
])
def test_unusable_key_sets_count_as_failures(jwks):
    http = FakeHttp()
    http.jwks = jwks
    keys, logs = make(http)
    with pytest.raises(KeysUnavailable):
        run(keys.current(dropped))
    assert "no keys at all" in logs[-1]


def test_no_keys_is_a_503_that_says_so():
    http = FakeHttp()
    http.failure = KeyFetchError("connection refused")
    keys, _ = make(http)
    with pytest.raises(KeysUnavailable) as refusal:
        run(keys.current(Deferred()))
    assert (refusal.value.status, refusal.value.detail) == (503, "signing keys for the token issuer are not available")


def test_cold_retry_delays_double_from_one_second_to_five_and_never_pass_the_cooldown():
    assert [cold_retry_delay(n, 60) for n in range(1, 8)] == [1, 2, 4, 5, 5, 5, 5]
    assert [cold_retry_delay(n, 3) for n in range(1, 6)] == [1, 2, 3, 3, 3]
    assert [cold_retry_delay(n, 0) for n in range(1, 4)] == [0, 0, 0]  # cooldown 0: every request retries
    assert (COLD_RETRY_FIRST_SECONDS, COLD_RETRY_MAX_SECONDS) == (1, 5)


def attempt_times(keys, http, store, clock, until, step=0.25):
    """Send a request every `step` seconds up to `until`; the times at which one made an
    attempt (a KV read, then discovery), each checked to be one of each."""
    times = []
    start = clock.now
    while clock.now - start <= until:
        gets, calls = store.gets, len(http.calls)
        with pytest.raises(KeysUnavailable):
            run(keys.current(dropped))
        if store.gets != gets:
            assert (store.gets - gets, len(http.calls) - calls) == (1, 1), "each attempt: KV, then discovery"
            times.append(clock.now - start)
        else:
            assert len(http.calls) == calls, "no fetch without reading KV first"
        clock.now += step
    return times


def test_without_keys_attempts_follow_the_backoff_not_the_cooldown():
    """An isolate that never had keys (the issuer was down when it started) retries 1, 2, 4, 5,
    5 … s after each failure, each time reading KV first; not once per 60 s cooldown."""
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    http.failure = KeyFetchError("connection refused")
    keys, logs = make(http, store, clock, cooldown=60)
    assert attempt_times(keys, http, store, clock, until=40) == [0, 1, 3, 7, 12, 17, 22, 27, 32, 37]
    assert sum("no keys at all" in line for line in logs) == 10


@pytest.mark.parametrize("cooldown,expected", [(3, [0, 1, 3, 6, 9, 12]), (0, [0, 0.25, 0.5, 0.75, 1.0])])
def test_without_keys_the_backoff_never_waits_longer_than_the_cooldown(cooldown, expected):
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    http.failure = KeyFetchError("connection refused")
    keys, _ = make(http, store, clock, cooldown=cooldown)
    assert attempt_times(keys, http, store, clock, until=expected[-1]) == expected


@pytest.mark.parametrize("outage", [0.5, 5, 20, 600])
def test_an_isolate_without_keys_serves_within_five_seconds_of_the_issuer_coming_back(outage):
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    http.failure = KeyFetchError("connection refused")
    keys, _ = make(http, store, clock, cooldown=60)
    attempt_times(keys, http, store, clock, until=outage)
    http.failure = None
    back = clock.now
    while True:
        try:
            run(keys.current(dropped))
            break
        except KeysUnavailable:
            clock.now += 0.25
    assert clock.now - back <= COLD_RETRY_MAX_SECONDS


def test_without_keys_each_retry_reads_kv_first_and_takes_a_set_another_isolate_stored():
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    http.failure = KeyFetchError("connection refused")
    keys, _ = make(http, store, clock, cooldown=60)
    with pytest.raises(KeysUnavailable):
        run(keys.current(dropped))
    assert (store.gets, http.calls) == (1, [DISCOVERY])

    other, _ = make(FakeHttp(), store, clock)  # another isolate, which can reach the issuer

    async def warm():
        defer = Deferred()
        await other.current(defer)
        await defer.run()

    run(warm())
    gets = store.gets
    clock.now += 0.5
    with pytest.raises(KeysUnavailable):  # within the backoff: not even KV is read again
        run(keys.current(dropped))
    assert store.gets == gets
    clock.now += 0.5
    assert run(keys.key("k1", dropped)) is not None
    assert store.gets == gets + 1 and http.calls == [DISCOVERY], "the set came from KV, not the network"


def test_without_keys_concurrent_requests_share_one_attempt():
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    http.failure = KeyFetchError("connection refused")
    keys, logs = make(http, store, clock, cooldown=60)

    async def burst():
        http.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(keys.key(f"kid-{i}", dropped)) for i in range(100)]
        await asyncio.sleep(0)
        http.gate.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = run(burst())
    assert all(isinstance(result, KeysUnavailable) for result in results)
    assert (store.gets, len(http.calls)) == (1, 1)
    assert sum("no keys at all" in line for line in logs) == 1, "logged once per attempt, not per request"
    clock.now += 1
    http.failure = None
    results = run(burst())
    assert results == [None] * 100
    assert (store.gets, http.calls) == (2, [DISCOVERY, DISCOVERY, JWKS])


def test_once_keys_are_known_the_cooldown_rules_again():
    """The backoff is for isolates without keys: one that has keys (here: after a cold
    failure, then a success) refetches for unknown kids once per cooldown, as before."""
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    http.failure = KeyFetchError("connection refused")
    keys, _ = make(http, store, clock, cooldown=60)
    with pytest.raises(KeysUnavailable):
        run(keys.current(dropped))
    clock.now += 1
    http.failure = None
    assert run(keys.key("k1", dropped)) is not None
    fetches = http.jwks_fetches()
    http.failure = KeyFetchError("connection refused")
    for _ in range(20):
        clock.now += 2
        assert run(keys.key("unknown", dropped)) is None
    assert len(http.calls) == 3 and http.jwks_fetches() == fetches  # 40 s: within the cooldown
    clock.now += 20
    assert run(keys.key("unknown", dropped)) is None
    assert len(http.calls) == 4  # one attempt, 60 s after the last


@pytest.mark.parametrize("jwks_uri", [
    "https://attacker.example/keys",
    "http://login.example/tid/discovery/v2.0/keys",  # another scheme
    "https://login.example:8443/tid/discovery/v2.0/keys",  # another port
    "https://login.example:443/tid/discovery/v2.0/keys",  # the default port, spelled out
    "https://attacker.example\\@login.example/tid/discovery/v2.0/keys",  # WHATWG: attacker.example
    "https://login.example/tid/../../attacker/keys",
    None, 42,
])
def test_jwks_uri_off_the_authority_is_refused(jwks_uri):
    http = FakeHttp()
    http.discovery = {"issuer": ISSUER, "jwks_uri": jwks_uri}
    keys, logs = make(http)
    with pytest.raises(KeysUnavailable):
        run(keys.current(dropped))
    assert http.calls == [DISCOVERY]
    assert "jwks_uri refused" in logs[-1]


def test_kv_copy_is_used_without_fetching_when_fresh():
    http, store, clock = FakeHttp(), FakeStore(), FakeClock()
    first, _ = make(http, store, clock)

    async def warm():
        defer = Deferred()
        await first.current(defer)
        await defer.run()

    run(warm())
    second_http = FakeHttp()
    second, _ = make(second_http, store, clock)  # a new isolate
    assert run(second.key("k1", dropped)) is not None
    assert second_http.calls == []


def test_stale_kv_copy_is_last_known_good_when_refresh_fails():
    store, clock = FakeStore(), FakeClock()
    first, _ = make(FakeHttp(), store, clock)

    async def warm():
        defer = Deferred()
        await first.current(defer)
        await defer.run()

    run(warm())
    clock.now += 86400
    down = FakeHttp()
    down.failure = KeyFetchError("HTTP 503")
    second, _ = make(down, store, clock)
    assert run(second.key("k1", dropped)) is not None
    assert down.calls == [DISCOVERY]


def test_unreadable_or_corrupt_kv_falls_back_to_fetching():
    store = FakeStore()
    store.fail_get = True
    http = FakeHttp()
    keys, logs = make(http, store)
    assert run(keys.key("k1", dropped)) is not None
    assert "ignoring cached key set" in logs[0]

    corrupt = FakeStore()
    corrupt.data[keys._store_key] = "{not json"
    http2 = FakeHttp()
    keys2, _ = make(http2, corrupt)
    assert run(keys2.key("k1", dropped)) is not None
    assert http2.jwks_fetches() == 1


def test_per_key_issuer_is_kept():
    http = FakeHttp()
    http.jwks = {"keys": [jwk("k1", issuer="https://login.microsoftonline.com/{tenantid}/v2.0")]}
    keys, _ = make(http)
    assert run(keys.key("k1", dropped))["issuer"].endswith("{tenantid}/v2.0")


@pytest.mark.parametrize("jwks_uri", [
    "http://login.example/tid/discovery/v2.0/keys",  # the authority's host, another scheme
    "https://login.example:8443/tid/discovery/v2.0/keys",  # the authority's host, another port
    "https://login.example:80/tid/discovery/v2.0/keys",
    "http://login.example:443/tid/discovery/v2.0/keys",
])
def test_keys_are_never_fetched_from_another_scheme_or_port_than_the_authority(jwks_uri):
    """ENTRA_AUTHORITY is https://login.example: a discovery document naming its host with
    another scheme or port does not make the gateway fetch keys there (whatever it does
    instead, every URL it fetches is on the authority's scheme, host and port)."""
    from urllib.parse import urlsplit

    http = FakeHttp()
    http.discovery = {"issuer": ISSUER, "jwks_uri": jwks_uri}
    keys, _ = make(http)
    try:
        run(keys.current(Deferred()))
    except KeysUnavailable:
        pass
    assert jwks_uri not in http.calls
    authority = urlsplit(AUTHORITY)
    assert all((urlsplit(url).scheme, urlsplit(url).hostname, urlsplit(url).port)
               == (authority.scheme, authority.hostname, authority.port) for url in http.calls), http.calls


def test_the_same_scheme_host_and_port_as_the_authority_is_fetched():
    http = FakeHttp()
    keys, _ = make(http)
    assert set(run(keys.current(Deferred())).keys) == {"k1"} and http.calls == [DISCOVERY, JWKS]


def test_a_key_set_keeps_only_the_first_max_keys_usable_keys():
    """A JWKS of more keys than MAX_KEYS keeps the first MAX_KEYS usable ones, in order;
    unusable entries (encryption keys, other key types) do not use up the allowance."""
    from entragate.keys import MAX_KEYS

    http = FakeHttp()
    entries = []
    for i in range(MAX_KEYS + 10):
        entries += [jwk(f"enc-{i}", use="enc"), {"kty": "EC", "kid": f"ec-{i}", "crv": "P-256", "x": "a", "y": "b"},
                    jwk(f"k{i}")]
    http.jwks = {"keys": entries}
    keys, _ = make(http)
    key_set = run(keys.current(Deferred()))
    assert list(key_set.keys) == [f"k{i}" for i in range(MAX_KEYS)]
    assert run(keys.key(f"k{MAX_KEYS}", Deferred())) is None  # the first one past the cap is not trusted
    assert http.jwks_fetches() == 1


# --- the cooldown end to end through the gateway, on the injected clock ----------------------------
# (tests/runtime/test_faults.py shows the same in workerd, with margins for a loaded machine.)

COOLDOWN = 60


@pytest.fixture
def entra():
    from entragate_mocks.mock_entra import MockTenant

    return MockTenant()  # minting only: keys are served from memory


def gateway_on(entra_tenant, clock):
    from fixtures.host_gateway import MemoryEntra, token_gateway

    http = MemoryEntra(entra_tenant)
    gateway = token_gateway(entra_tenant, http=http, clock=clock, ENTRA_TOKEN_VERSIONS="2.0",
                            JWKS_COOLDOWN_SECONDS=str(COOLDOWN))
    return gateway, http


def statuses(gateway, tokens):
    """Answer all the requests concurrently (one event loop, as one isolate would)."""
    from entragate.gateway import Forward, IncomingRequest

    async def one(token):
        request = IncomingRequest("GET", "https://gw.example/api/items", "r", ("authorization",),
                                  authorization=f"Bearer {token}")
        result = await gateway.handle(request, Deferred())
        return 200 if isinstance(result, Forward) else result.status

    async def burst():
        return await asyncio.gather(*(one(token) for token in tokens))

    return run(burst())


def test_a_burst_of_unknown_kids_costs_one_key_fetch_per_cooldown(entra):
    clock = FakeClock()
    gateway, http = gateway_on(entra, clock)
    fetches = lambda: http.calls.count(http.v2_keys)  # noqa: E731
    # A cold isolate: 100 requests at once, each with its own unknown kid, share one fetch.
    assert statuses(gateway, [entra.mint(headers={"kid": f"cold-{i}"}) for i in range(100)]) == [401] * 100
    assert fetches() == 1
    # Within the cooldown (up to its last second): more unknown kids fetch nothing, valid tokens pass.
    clock.now += COOLDOWN - 1
    assert statuses(gateway, [entra.mint(headers={"kid": f"warm-{i}"}) for i in range(99)] + [entra.mint()]) \
        == [401] * 99 + [200]
    assert fetches() == 1
    # Once the cooldown is over: one more fetch for the next 100, however they interleave.
    clock.now += 1
    assert statuses(gateway, [entra.mint(headers={"kid": f"later-{i}"}) for i in range(100)]) == [401] * 100
    assert fetches() == 2


def test_a_rotated_key_is_picked_up_after_the_cooldown_not_before(entra):
    clock = FakeClock()
    gateway, http = gateway_on(entra, clock)
    assert statuses(gateway, [entra.mint(headers={"kid": "probe"})]) == [401]  # a fetch: the cooldown starts
    entra.rotate()
    clock.now += COOLDOWN - 1
    assert statuses(gateway, [entra.mint()]) == [401]  # signed with a key not fetched yet
    assert http.calls.count(http.v2_keys) == 1
    clock.now += 1
    assert statuses(gateway, [entra.mint()]) == [200]
    assert http.calls.count(http.v2_keys) == 2


def test_a_stored_key_set_round_trips_with_its_issuer_and_refuses_other_shapes():
    stored = KeySet(ISSUER, {"k1": {"kty": "RSA", "kid": "k1", "n": N, "e": "AQAB"}}, 1_000_000.0)
    again = KeySet.from_json(stored.to_json(JWKS), AUTHORITY)
    assert (again.issuer, again.keys, again.fetched_at) == (ISSUER, stored.keys, 1_000_000.0)
    good = json.loads(stored.to_json(JWKS))
    for bad in ({**good, "format": 2}, {**good, "format": None}, {**good, "fetched_at": True},
                {**good, "fetched_at": "1000000"}, {k: v for k, v in good.items() if k != "fetched_at"},
                [good], "text", None):
        with pytest.raises(KeyFetchError):
            KeySet.from_json(json.dumps(bad), AUTHORITY)


def test_each_unusable_key_is_skipped_and_the_next_one_still_read():
    """Every bound to the byte, and each refusal skips one key: a bad key before a good one
    must not end the reading (nor make the set unusable)."""
    from entragate.keys import MAX_EXPONENT_CHARS, MAX_ISSUER_CHARS, MAX_KID_LENGTH, MAX_MODULUS_CHARS

    http = FakeHttp()
    http.jwks = {"keys": [
        "not an object", jwk("k" * (MAX_KID_LENGTH + 1)), jwk("ok-kid-" + "k" * (MAX_KID_LENGTH - 7)),
        {**jwk("long-n"), "n": "x" * (MAX_MODULUS_CHARS + 1)}, {**jwk("ok-n"), "n": "x" * MAX_MODULUS_CHARS},
        {**jwk("long-e"), "e": "A" * (MAX_EXPONENT_CHARS + 1)}, {**jwk("ok-e"), "e": "A" * MAX_EXPONENT_CHARS},
        jwk("long-issuer", issuer="https://" + "i" * (MAX_ISSUER_CHARS - 7)),
        jwk("ok-issuer", issuer="https://" + "i" * (MAX_ISSUER_CHARS - 8)),
        {**jwk("empty-n"), "n": ""}, {**jwk("no-e"), "e": None}, {**jwk("ec"), "kty": "EC"}, jwk("enc", use="enc"),
        jwk("last"),
    ]}
    keys, _ = make(http)
    kept = run(keys.current(Deferred())).keys
    assert list(kept) == ["ok-kid-" + "k" * (MAX_KID_LENGTH - 7), "ok-n", "ok-e", "ok-issuer", "last"]


@pytest.mark.parametrize("issuer", ["http://login.microsoftonline.com/tid/v2.0", "", None, 7])
def test_a_discovery_document_without_an_https_issuer_gives_no_keys(issuer):
    http = FakeHttp()
    http.discovery = {"issuer": issuer, "jwks_uri": JWKS}
    keys, logs = make(http)
    with pytest.raises(KeysUnavailable):
        run(keys.current(Deferred()))
    assert "no keys at all" in logs[-1]


def test_fetches_use_the_configured_timeout_and_the_stored_copy_names_its_source():
    class TimedHttp(FakeHttp):
        async def get_json(self, url, timeout):
            self.timeouts = getattr(self, "timeouts", []) + [timeout]
            return await super().get_json(url, timeout)

    http, store, defer = TimedHttp(), FakeStore(), Deferred()
    keys, _ = make(http, store)

    async def scenario():
        await keys.current(defer)
        await defer.run()

    run(scenario())
    assert http.timeouts == [1.0, 1.0]  # make(): timeout=1.0
    assert json.loads(next(iter(store.data.values())))["jwks_uri"] == JWKS


def test_a_stalled_key_store_is_given_up_after_the_fetch_timeout():
    class StalledStore(FakeStore):
        async def get(self, key):
            await asyncio.sleep(3600)

    http = FakeHttp()
    keys, logs = make(http, StalledStore(), timeout=0.05)  # the fetch timeout bounds the one KV read too
    assert run(keys.key("k1", Deferred())) is not None
    assert "ignoring cached key set" in logs[0] and http.jwks_fetches() == 1
