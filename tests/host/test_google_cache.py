"""google.CachedCredential: one credential kept until shortly before it expires, one shared
fetch, a background refresh while the held one is still good, a cooldown after failures.
A fake clock and a fake fetch that counts its calls."""

import asyncio

import pytest

from entragate.google import (
    FAILURE_COOLDOWN_SECONDS, MIN_REFRESH_INTERVAL_SECONDS, REFRESH_BEFORE_EXPIRY_SECONDS,
    STOP_USING_BEFORE_EXPIRY_SECONDS, CachedCredential, OriginAuthRefused, OriginAuthUnavailable, jwt_expiry,
)

LIFETIME = 3600


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


class Source:
    """A token service: numbered tokens of LIFETIME seconds, or the error it is told to raise;
    `gate` holds answers back until released (to line up concurrent callers)."""

    def __init__(self, clock):
        self.clock = clock
        self.calls = 0
        self.error = None
        self.lifetime = LIFETIME
        self.gate = None

    async def fetch(self, defer):
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return f"token-{self.calls}", self.clock() + self.lifetime


class Harness:
    def __init__(self):
        self.clock = Clock()
        self.source = Source(self.clock)
        self.logs = []
        self.deferred = []
        self.cache = CachedCredential("test", self.source.fetch, clock=self.clock, log=self.logs.append)
        self.loop = asyncio.new_event_loop()

    def defer(self, coroutine):
        self.deferred.append(self.loop.create_task(coroutine))

    def get(self):
        value = self.loop.run_until_complete(self.cache.get(self.defer))
        self.settle()
        return value

    def settle(self):
        """Let background work finish, as waitUntil would."""
        while self.deferred:
            tasks, self.deferred = self.deferred, []
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def close(self):
        self.settle()
        self.loop.close()


@pytest.fixture
def harness():
    made = Harness()
    yield made
    made.close()


def test_a_fresh_credential_is_served_from_memory(harness):
    assert harness.get() == "token-1"
    harness.clock.now += LIFETIME - REFRESH_BEFORE_EXPIRY_SECONDS - 1
    assert [harness.get() for _ in range(50)] == ["token-1"] * 50
    assert harness.source.calls == 1


def test_in_its_refresh_window_it_is_refreshed_once_in_the_background(harness):
    harness.get()
    harness.clock.now += LIFETIME - REFRESH_BEFORE_EXPIRY_SECONDS  # the refresh window opens
    # The request that notices gets the held token at once; the refresh runs beside it.
    assert harness.get() == "token-1"
    assert harness.source.calls == 2
    assert [harness.get() for _ in range(20)] == ["token-2"] * 20
    assert harness.source.calls == 2


def test_an_unusable_credential_makes_every_caller_wait_for_one_shared_fetch(harness):
    harness.get()
    harness.clock.now += LIFETIME - STOP_USING_BEFORE_EXPIRY_SECONDS  # no longer worth sending
    harness.source.gate = asyncio.Event()

    async def burst():
        waiters = [asyncio.ensure_future(harness.cache.get(harness.defer)) for _ in range(100)]
        await asyncio.sleep(0.01)
        assert not any(waiter.done() for waiter in waiters)  # nobody got the stale one
        harness.source.gate.set()
        return await asyncio.gather(*waiters)

    assert harness.loop.run_until_complete(burst()) == ["token-2"] * 100
    assert harness.source.calls == 2


def test_a_cold_burst_shares_one_fetch(harness):
    harness.source.gate = asyncio.Event()

    async def burst():
        waiters = [asyncio.ensure_future(harness.cache.get(harness.defer)) for _ in range(100)]
        await asyncio.sleep(0)
        harness.source.gate.set()
        return await asyncio.gather(*waiters)

    assert set(harness.loop.run_until_complete(burst())) == {"token-1"}
    assert harness.source.calls == 1


@pytest.mark.parametrize("error", [OriginAuthUnavailable("down"), OriginAuthRefused("no")])
def test_after_a_failure_nobody_asks_again_until_the_cooldown_ends(harness, error):
    harness.source.error = error
    for _ in range(10):
        with pytest.raises(type(error)):
            harness.get()
        harness.clock.now += (FAILURE_COOLDOWN_SECONDS - 0.5) / 10
    assert harness.source.calls == 1  # the same refusal, from memory
    assert len(harness.logs) == 1 and error.code in harness.logs[0]
    harness.clock.now += 1
    harness.source.error = None
    assert harness.get() == "token-2"
    assert harness.source.calls == 2


def test_a_failed_refresh_keeps_serving_the_held_credential_while_it_is_usable(harness):
    harness.get()
    harness.source.error = OriginAuthUnavailable("STS down")
    harness.clock.now += LIFETIME - REFRESH_BEFORE_EXPIRY_SECONDS + 1
    assert harness.get() == "token-1"  # the background refresh failed
    assert harness.source.calls == 2
    # Retried once per cooldown, the held one served meanwhile ...
    for _ in range(20):
        harness.clock.now += 1
        assert harness.get() == "token-1"
    assert harness.source.calls == 2 + 20 // FAILURE_COOLDOWN_SECONDS
    # ... until it is no longer worth sending: then the refusal.
    harness.clock.now += REFRESH_BEFORE_EXPIRY_SECONDS  # past expiry - STOP_USING
    with pytest.raises(OriginAuthUnavailable):
        harness.get()


def test_a_credential_that_arrives_nearly_expired_is_not_used(harness):
    harness.source.lifetime = STOP_USING_BEFORE_EXPIRY_SECONDS
    with pytest.raises(OriginAuthUnavailable, match="expires too soon"):
        harness.get()


def test_one_arriving_inside_its_refresh_window_is_not_fetched_on_every_request(harness):
    harness.source.lifetime = STOP_USING_BEFORE_EXPIRY_SECONDS + 30
    assert [harness.get() for _ in range(20)] == ["token-1"] * 20
    assert harness.source.calls == 1
    harness.clock.now += MIN_REFRESH_INTERVAL_SECONDS
    harness.get()
    assert harness.source.calls == 2


def test_discard_forgets_the_held_credential(harness):
    harness.get()
    harness.cache.discard()
    assert harness.get() == "token-2"


def test_the_store_is_read_once_and_a_stored_credential_saves_the_fetch(harness):
    reads = []

    async def load():
        reads.append(1)
        return "stored", harness.clock() + LIFETIME

    saved = []

    async def save(token, expires_at):
        saved.append((token, expires_at))

    harness.cache = CachedCredential("test", harness.source.fetch, clock=harness.clock, log=harness.logs.append,
                                     load=load, save=save)
    assert [harness.get() for _ in range(5)] == ["stored"] * 5
    assert reads == [1] and harness.source.calls == 0 and saved == []
    harness.clock.now += LIFETIME
    assert harness.get() == "token-1"
    assert saved == [("token-1", harness.clock() + LIFETIME)] and reads == [1]


def test_an_unreadable_store_means_a_fetch(harness):
    async def load():
        raise TimeoutError()

    harness.cache = CachedCredential("test", harness.source.fetch, clock=harness.clock, log=harness.logs.append,
                                     load=load)
    assert harness.get() == "token-1"
    assert "ignoring the stored test" in harness.logs[0]


@pytest.mark.parametrize("token,expected", [
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2ln", 1700000000.0),
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOiIxNzAwMDAwMDAwIn0.c2ln", None),  # "exp" as a string
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOnRydWV9.c2ln", None),  # true
    ("not-a-jwt", None),
    ("a.!!!.c", None),
])
def test_the_id_tokens_expiry_is_read_from_its_payload(token, expected):
    assert jwt_expiry(token) == expected
