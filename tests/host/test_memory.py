"""Every cache of the edge is bounded by entries and by an estimate of the bytes it holds
(bounded.py), and the estimates are checked against what CPython really allocates
(tracemalloc) for ordinary identities and for users in 200 groups with 80 app roles."""

import asyncio
import gc
import time
import tracemalloc

import pytest
from fixtures.host_gateway import ENV, EXAMPLE_POLICIES, OfflineHttp, signin_platform

from entragate.bounded import BoundedMap, strings_bytes
from entragate.config import Config
from entragate.gateway import IDENTITY_PARTS_MAX_BYTES, Forward, IdentityPart, IncomingRequest, assemble
from entragate.identity import USER, Identity, estimated_bytes
from entragate.keys import MAX_ISSUER_CHARS, MAX_KID_LENGTH, MAX_MODULUS_CHARS, _parse_jwks
from entragate.token_cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, ENTRY_OVERHEAD_BYTES, CachingValidator
from entragate import token_cache as token_cache_module

NOW = time.time()

# tracemalloc counts every thread's allocations; servers that other test modules left running
# (mock tenants, echo origins) allocate too. Count only what this file and the edge code hold.
_OWN = [tracemalloc.Filter(True, "*/entragate/*"), tracemalloc.Filter(True, __file__)]


class held_memory:
    """with held_memory() as held: ...; held.bytes = what this file and entragate kept."""

    def __enter__(self):
        gc.collect()
        tracemalloc.start(1)
        self._before = tracemalloc.take_snapshot().filter_traces(_OWN)
        return self

    def __exit__(self, *exc):
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(_OWN)
        tracemalloc.stop()
        self.bytes = sum(stat.size_diff for stat in after.compare_to(self._before, "filename"))



def identity(n: int, groups: int = 2, roles: int = 0, name: str = "Zoë Example") -> Identity:
    """User n: every string its own object, as parsing each token makes them."""
    tag = f"{n:012d}"
    return Identity(
        oid=f"00000000-0000-4000-8000-{tag}", tid=f"11111111-1111-4111-8111-{tag}", sub=f"sub-{tag}-" + "s" * 26,
        name=f"{name} {tag}", username=f"user{tag}@contoso.example", client_id=f"22222222-2222-4222-8222-{tag}",
        groups=tuple(f"{g:08x}-5a4f-4e3d-8c2b-{tag}" for g in range(groups)), groups_overage=False,
        roles=tuple(f"Orders.Region{r:03d}.ReadWrite.{tag}" for r in range(roles)),
        scopes=(f"access_as_user{tag}"[:14],), kind=USER, version=f"2.0{tag}"[:3] + "",
        issuer=f"https://login.microsoftonline.com/{tag}/v2.0", audience=f"api://{tag}",
        expires_at=NOW + 3600, not_before=NOW - 10,
    )


def allocated(make, count: int) -> tuple[list, float]:
    """(the objects, bytes allocated per object while making them)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    made = [make(n) for n in range(count)]
    per = (tracemalloc.get_traced_memory()[0] - before - 8 * count) / count  # minus the list itself
    tracemalloc.stop()
    return made, per


@pytest.mark.parametrize("groups, roles, name", [(2, 0, "Zoë Example"), (200, 80, "Zoë Example"),
                                                 (200, 80, "山田 太郎"), (0, 0, "A")])
def test_identity_estimate_is_at_least_what_cpython_allocates_and_not_far_above(groups, roles, name):
    made, real = allocated(lambda n: identity(n, groups, roles, name), 500)
    estimate = sum(map(estimated_bytes, made)) / len(made)
    assert real <= estimate <= 1.6 * real, (real, estimate)


def test_strings_bytes_counts_non_ascii_characters_at_their_widest():
    assert strings_bytes(("abc",)) < strings_bytes(("abé",)) == 3 * 4 + strings_bytes(("",))
    assert strings_bytes(("abé", "x" * 100)) == strings_bytes(("abé",)) + strings_bytes(("x" * 100,))
    assert strings_bytes(()) == 0


class Size:
    def __init__(self, size):
        self.size = size


def test_bounded_map_keeps_entries_and_bytes_under_both_bounds_oldest_out_first():
    m = BoundedMap(max_entries=3, max_bytes=100)
    for key in "abc":
        m.put(key, Size(10))
    m.put("d", Size(10))  # the entry bound
    assert list(m) == ["b", "c", "d"] and m.bytes == 30
    m.put("e", Size(80))  # the byte bound: b leaves, and that is enough
    assert list(m) == ["c", "d", "e"] and m.bytes == 100
    m.put("f", Size(85))  # c, d and e leave
    assert list(m) == ["f"] and m.bytes == 85
    m.put("f", Size(20))  # the same key again (two requests filled it): counted once
    m.put("g", Size(10))
    assert list(m) == ["f", "g"] and m.bytes == 30
    m.put("h", Size(101))  # larger than the whole budget: not stored, nothing evicted
    assert "h" not in m and list(m) == ["f", "g"]
    m.discard("f")
    m.discard("missing")
    assert list(m) == ["g"] and m.bytes == 10 == sum(m.get(k).size for k in m)
    assert m.get("g").size == 10 and m.get("x") is None
    m.put("g", Size(10))  # stored again, nothing evicted: still counted once
    assert list(m) == ["g"] and m.bytes == 10


def test_a_token_validated_by_concurrent_requests_is_counted_once():
    class Slow(Inner):
        async def validate_with_kid(self, token, defer):
            await asyncio.sleep(0)  # both requests miss before either stores
            return await super().validate_with_kid(token, defer)

    inner = Slow(groups=2, roles=0)
    c = cache(inner)

    async def twice():
        await asyncio.gather(c.validate("t1", None), c.validate("t1", None))

    asyncio.run(twice())
    assert inner.calls == 2 and len(c) == 1
    assert c._entries.bytes == c._entries.get(next(iter(c._entries))).size


# --- the verified-token cache --------------------------------------------------------------------

class KeySet:
    keys = {"k1": {}}


class Issuer:
    key_set = KeySet()


class Inner:
    """Validates token "t<n>" as identity(n) with the given shape."""

    def __init__(self, groups=200, roles=80):
        self.groups, self.roles = groups, roles
        self.calls = 0

    async def validate_with_kid(self, token, defer):
        self.calls += 1
        return identity(int(token[1:]), self.groups, self.roles), "k1"


def cache(inner, **kwargs):
    return CachingValidator(inner, {"2.0": Issuer()}, clock=lambda: NOW, skew=60, **kwargs)


def validate(c, n):
    return asyncio.run(c.validate(f"t{n}", None))


def test_many_large_identities_keep_the_token_cache_under_its_byte_budget_oldest_out_first():
    inner = Inner()
    c = cache(inner, max_bytes=1_000_000)
    for n in range(200):
        validate(c, n)
    entries = c._entries
    assert entries.bytes <= 1_000_000 < entries.bytes + entries.get(next(iter(entries))).size
    assert 25 <= len(c) <= 40  # ~30 KB each, far under the 4096-entry bound
    assert sum(entries.get(key).size for key in entries) == entries.bytes
    calls = inner.calls
    validate(c, 199)  # the newest is still there
    assert inner.calls == calls
    validate(c, 0)  # the oldest went first
    assert inner.calls == calls + 1


def test_ordinary_identities_are_bounded_by_entries_as_before():
    c = cache(Inner(groups=2, roles=0))
    for n in range(DEFAULT_MAX_ENTRIES + 100):
        validate(c, n)
    assert len(c) == DEFAULT_MAX_ENTRIES and c._entries.bytes < DEFAULT_MAX_BYTES


def test_real_memory_of_the_token_cache_stays_within_its_budget_with_200_group_tokens():
    inner = Inner()
    c = cache(inner)
    with held_memory() as memory:
        for n in range(1500):
            validate(c, n)
    held = memory.bytes
    assert 400 <= len(c) <= 700  # not 1500, and not 4096 (~120 MB of such tokens)
    assert c._entries.bytes <= DEFAULT_MAX_BYTES
    assert 0.7 * c._entries.bytes <= held <= c._entries.bytes, (held, c._entries.bytes)


def test_entry_estimate_covers_the_entry_itself():
    c = cache(Inner(groups=0, roles=0))
    validate(c, 1)
    entry = c._entries.get(next(iter(c._entries)))
    assert entry.size == ENTRY_OVERHEAD_BYTES + estimated_bytes(entry.identity)


# --- the identity-header memo --------------------------------------------------------------------

def gateway_with(inner):
    import json

    from entragate_tools.compiler import compile_policies
    from entragate_tools.host_crypto import HostVerifier

    from entragate.policy import Policy
    from entragate.upstream import referenced_groups

    compiled = json.loads(compile_policies(EXAMPLE_POLICIES).json_text)
    policy = Policy.from_json(compiled)
    gateway = assemble(Config.from_env(ENV.get), policy, http=OfflineHttp(), store=None,
                       verifier=HostVerifier(), clock=lambda: NOW, log=lambda message: None,
                       policy_groups=referenced_groups(compiled), platform=signin_platform(policy))
    gateway.validator = cache(inner)
    return gateway


def forward(gateway, n):
    request = IncomingRequest(method="GET", url="https://app.example.net/api/items", request_id="r",
                              header_names=("accept",), authorization=f"Bearer t{n}")
    result = asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))
    assert isinstance(result, Forward), result
    return result


def test_identity_part_estimate_is_at_least_what_it_allocates():
    prefix, groups = "x-entragate-", frozenset(f"{g:08x}-5a4f-4e3d-8c2b-{0:012d}" for g in range(0, 200, 3))
    for shape in ((2, 0), (200, 80)):
        identities = [identity(n, *shape) for n in range(300)]
        parts, real = allocated(lambda n: IdentityPart(identities[n], prefix, groups), len(identities))
        estimate = sum(p.size - estimated_bytes(i) for p, i in zip(parts, identities)) / len(parts)
        assert real <= estimate <= 2 * real, (shape, real, estimate)


def test_the_header_memo_stays_under_its_byte_budget_and_forwards_the_same_headers():
    inner = Inner()
    gateway = gateway_with(inner)
    first = forward(gateway, 0)
    for n in range(1, 400):
        forward(gateway, n)
    memo = gateway._identity_parts
    assert memo.bytes <= IDENTITY_PARTS_MAX_BYTES and 150 <= len(memo) <= 350
    assert forward(gateway, 0).add == first.add  # rebuilt after eviction, identical


def test_token_cache_and_header_memo_together_stay_within_their_budgets_in_real_memory():
    """The ceiling `make bench` reports: what both caches hold after many large tokens."""
    gateway = gateway_with(Inner())
    with held_memory() as memory:
        for n in range(1200):
            forward(gateway, n)
    held = memory.bytes
    assert held <= DEFAULT_MAX_BYTES + IDENTITY_PARTS_MAX_BYTES
    assert held <= gateway.validator._entries.bytes + gateway._identity_parts.bytes


# --- key sets ------------------------------------------------------------------------------------

def test_key_set_entries_are_bounded_in_size():
    ok = {"kty": "RSA", "kid": "k", "n": "n" * 342, "e": "AQAB"}
    oversized = [
        {**ok, "kid": "k" * (MAX_KID_LENGTH + 1)},
        {**ok, "kid": "big-n", "n": "n" * (MAX_MODULUS_CHARS + 1)},
        {**ok, "kid": "big-e", "e": "A" * 13},
        {**ok, "kid": "big-issuer", "issuer": "https://" + "i" * MAX_ISSUER_CHARS},
    ]
    keys = _parse_jwks({"keys": [*oversized, ok, {**ok, "kid": "max", "n": "n" * MAX_MODULUS_CHARS}]})
    assert sorted(keys) == ["k", "max"]
