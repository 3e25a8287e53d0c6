"""Per-request pipeline cost of the real gateway code: extract → validate → authorize →
build the upstream request (Gateway.handle). Runs unchanged on CPython (host verifier; this
file as a script) and inside workerd (Pyodide, WebCrypto verifier; bench/workerd_pipeline.py).

Input: a JSON file written by bench/run.py (config, key set, tokens minted by the mock tenant).
Output: one JSON line {"runtime", "scenarios": {name: {"median_us", "p99_us", "worst_us", "n"}}, ...}.
Keys come from a pre-filled store, so no request touches the network.

    python bench/pipeline_bench.py SETUP.json [--no-memory]
"""

import asyncio
import gc
from dataclasses import replace
import json
import statistics
import sys
import time
import tracemalloc

IN_PYODIDE = sys.platform == "emscripten"

from entragate.config import Config  # noqa: E402
from entragate.gateway import IDENTITY_PARTS_MAX_BYTES, IncomingRequest, assemble, discovery_url  # noqa: E402
from entragate.keys import STORE_FORMAT  # noqa: E402
from entragate.policy import Policy  # noqa: E402
from entragate.signin import SESSION_COOKIE  # noqa: E402
from entragate.token_cache import DEFAULT_MAX_BYTES, CachingValidator  # noqa: E402
from entragate.upstream import referenced_groups  # noqa: E402


class NoNetwork:
    async def get_json(self, url, timeout):
        raise AssertionError(f"benchmark must not fetch {url}")


class Store:
    def __init__(self, data):
        self.data = data

    async def get(self, key):
        return self.data.get(key)

    async def put(self, key, value, ttl=None):
        self.data[key] = value


def verifier_and_signer(private_jwk):
    if IN_PYODIDE:
        import platform_io

        return platform_io.WebCryptoVerifier(), (platform_io.WebCryptoSigner(private_jwk) if private_jwk else None)
    from entragate_tools.host_crypto import HostSigner, HostVerifier

    return HostVerifier(), (HostSigner(private_jwk) if private_jwk else None)


def build(setup, *, assertion: bool):
    variables = dict(setup["vars"])
    if not assertion:
        variables.pop("ASSERTION_SIGNING_KEY", None)
    config = Config.from_env(variables.get)
    # Stored as fetched ten minutes ago, not now: in workerd, time.time() is Pyodide's
    # monotonicDateNow, which adds 1 ms per read while Date.now() stands still and drops back
    # when it ticks (up to ~1.8 s measured under wrangler dev). A set dated by a read that ran
    # ahead looks fetched in the future, hence stale, and NoNetwork would be asked for keys.
    fetched_at = time.time() - 600
    store = Store({
        f"entragate:jwks:v{STORE_FORMAT}:{discovery_url(config, version)}": json.dumps({
            "format": STORE_FORMAT, "issuer": issuer, "jwks_uri": "", "fetched_at": fetched_at, "keys": setup["keys"],
        })
        for version, issuer in setup["issuers"].items()
    })
    policy_data = json.loads(setup["policy_json"])
    verifier, signer = verifier_and_signer(config.assertion_private_jwk)
    return assemble(
        config, Policy.from_json(policy_data), http=NoNetwork(), store=store, verifier=verifier,
        clock=time.time, log=lambda message: None, policy_groups=referenced_groups(policy_data), signer=signer,
    )


def signin_platform():
    if IN_PYODIDE:
        import platform_io

        return platform_io.SignInPlatform()
    from entragate_tools.host_crypto import HostSignInPlatform

    return HostSignInPlatform()


def session_request(url, cookie):
    """A browser's navigation carrying the session cookie (and no Authorization)."""
    return IncomingRequest(
        method="GET", url=url, request_id="bench", header_names=("host", "cookie", "accept", "sec-fetch-mode"),
        accept="text/html", sec_fetch_mode="navigate", cookie=f"theme=dark; {SESSION_COOKIE}={cookie}",
    )


async def session_scenarios(setup, repeat, batch=1, fresh_batch=None):
    """Browser sessions beside tokens, on the examples' sign-in route (/app/**, the whole example
    policy): a sealed session cookie this isolate has not opened yet (AES-GCM open with the
    platform's cipher, then the revocation check in the store: a dict here, one KV read at the
    edge) and one it has (the in-memory cache of opened sessions)."""
    fresh_batch = fresh_batch or batch
    variables = {**setup["vars"], **setup["signin_vars"]}
    variables.pop("ASSERTION_SIGNING_KEY", None)
    config = Config.from_env(variables.get)
    policy_data = json.loads(setup["session_policy_json"])
    verifier, _ = verifier_and_signer(None)
    gateway = assemble(config, Policy.from_json(policy_data), http=NoNetwork(), store=Store({}), verifier=verifier,
                       clock=time.time, log=lambda message: None, policy_groups=referenced_groups(policy_data),
                       platform=signin_platform())
    now = int(time.time())
    claims = json.loads(setup["session_claims"])

    async def cookie(n):
        return await gateway.signin._sealer.seal(SESSION_COOKIE, {
            **claims, "sid": f"bench-session-{n:06d}", "csrf": "bench", "iat": now - 60, "exp": now + 7200})

    fresh = [await cookie(n) for n in range(len(setup["fresh_tokens"]))]
    repeated = await cookie(len(fresh))
    url = setup["gateway_url"] + "/app/page"
    await timed(gateway, [session_request(url, repeated)], "Forward")
    return {
        "fresh session": summary(await timed(gateway, [session_request(url, c) for c in fresh], "Forward", fresh_batch)),
        "repeated session": summary(await timed(gateway, [session_request(url, repeated)] * repeat, "Forward", batch)),
    }


def request(url, token=None):
    return IncomingRequest(
        method="GET", url=url, request_id="bench", header_names=("host", "authorization", "accept"),
        authorization=f"Bearer {token}" if token else None, accept="application/json",
    )


async def timed(gateway, requests, expect, batch=1):
    """µs per request. With `batch` > 1 (workerd, whose clock ticks in whole milliseconds),
    each run of `batch` requests is timed as one and yields its mean, once."""
    samples = []
    background = []
    for first in range(0, len(requests), batch):
        chunk = requests[first:first + batch]
        started = time.perf_counter()
        for incoming in chunk:
            result = await gateway.handle(incoming, background.append)
            if type(result).__name__ != expect:
                raise AssertionError(f"expected {expect}, got {result!r}")
        samples.append((time.perf_counter() - started) * 1e6 / len(chunk))
    for coroutine in background:
        coroutine.close()
    return samples


def summary(samples):
    """Over per-request samples (CPython) or batch means (workerd, where p99 of a few dozen
    batches is simply the worst one: `worst_us` says so)."""
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "worst_us": round(ordered[-1], 1),
        "n": len(ordered),
    }


async def scenarios(setup, repeat, batch=1, fresh_batch=None):
    """`batch`/`fresh_batch`: requests timed as one (workerd's clock ticks in milliseconds)."""
    fresh_batch = fresh_batch or batch
    base = setup["gateway_url"]
    fresh_tokens = setup["fresh_tokens"]
    token = setup["repeated_token"]
    results = {}
    for assertion in (False, True):
        gateway = build(setup, assertion=assertion)
        await timed(gateway, [request(base + "/api/warm", token)], "Forward")  # load keys, import WebCrypto key
        suffix = " +assertion" if assertion else ""
        results["fresh token" + suffix] = summary(await timed(gateway, [request(base + "/api/items", t) for t in fresh_tokens], "Forward", fresh_batch))
        results["repeated token" + suffix] = summary(await timed(gateway, [request(base + "/api/items", token)] * repeat, "Forward", batch))
    gateway = build(setup, assertion=False)
    await timed(gateway, [request(base + "/api/warm", token)], "Forward")
    results["denied (policy 403)"] = summary(await timed(gateway, [request(base + "/admin/panel", token)] * repeat, "Answer", batch))
    results["denied (no token 401)"] = summary(await timed(gateway, [request(base + "/api/items")] * repeat, "Answer", batch))
    results["public route"] = summary(await timed(gateway, [request(base + "/healthz")] * repeat, "Forward", batch))
    results.update(await session_scenarios(setup, repeat, batch, fresh_batch))
    return results


async def fresh_breakdown(setup, batch=1):
    """Where a fresh token's time goes: the steps TokenValidator.validate_with_kid takes, timed
    one after another within each token's validation (stages timed alone in a tight loop look
    cheaper than they are between the event-loop turns of real requests), over every fresh
    token. Each stage's time is summed over the tokens and divided by their count: workerd's
    clock ticks in whole milliseconds, so one token's stage reads 0 or 1000 µs, but a tick falls
    inside a stage with a probability equal to its share of a millisecond, and the mean over
    many tokens is unbiased (the same mean on CPython, for comparison). `batch`: the whole
    Gateway.handle line is timed in batches (see `timed`)."""
    from entragate.claims import identity_from_claims
    from entragate.credential import require_compact_jws
    from entragate.tokens import _check_header, _decode

    gateway = build(setup, assertion=False)
    await timed(gateway, [request(setup["gateway_url"] + "/api/warm", setup["repeated_token"])], "Forward")
    inner = gateway.validator._validator
    config = gateway.config
    totals = {}
    clock = time.perf_counter
    if IN_PYODIDE:
        import js
        from pyodide.ffi import to_js

        subtle_verify = js.crypto.subtle.verify

    def note(stage, started):
        now = clock()
        totals[stage] = totals.get(stage, 0.0) + (now - started)
        return now

    tokens = setup["fresh_tokens"]
    for token in tokens:
        started = at = clock()
        require_compact_jws(token)
        at = note("token shape (one compact JWS)", at)
        decoded = _decode(token, config.clock_skew)
        at = note("PyJWT parse + time claims", at)
        kid = _check_header(decoded["header"], config.algorithms)
        issuer_keys = inner._keys_by_version[decoded["payload"]["ver"]]
        at = note("header rules", at)
        await issuer_keys.current(None)
        jwk = await issuer_keys.key(kid, None)
        at = note("key lookup (in memory)", at)
        signing_input = token.rpartition(".")[0].encode("ascii")
        verified = await inner._verifier.verify(decoded["header"]["alg"], jwk, signing_input, decoded["signature"])
        at = note("signature verify, awaited", at)
        assert verified
        identity_from_claims(decoded["payload"])
        at = note("claims -> Identity", at)
        note("sum of the above", started)
        if IN_PYODIDE:  # the verify step again, in its three crossings of the Python/JS bridge
            key = await inner._verifier._import(decoded["header"]["alg"], jwk)
            at = clock()
            signature_js, signing_input_js = to_js(decoded["signature"]), to_js(signing_input)
            at = note("for scale: signature + signing input copied to JS", at)
            promise = subtle_verify("RSASSA-PKCS1-v1_5", key, signature_js, signing_input_js)
            at = note("for scale: crypto.subtle.verify called from Python", at)
            assert await promise
            at = note("for scale: its promise awaited from Python", at)
            await js.Promise.resolve(None)
            note("for scale: awaiting one resolved JS promise", at)
    result = {stage: round(total * 1e6 / len(tokens), 1) for stage, total in totals.items()}
    gateway = build(setup, assertion=False)  # its token cache has none of the fresh tokens
    await timed(gateway, [request(setup["gateway_url"] + "/api/warm", setup["repeated_token"])], "Forward")
    samples = await timed(gateway, [request(setup["gateway_url"] + "/api/items", t) for t in tokens], "Forward", batch)
    result["whole Gateway.handle"] = round(statistics.fmean(samples), 1)
    return result


def _close(coroutine):
    coroutine.close()


def _copy(text: str) -> str:
    return (text + " ")[:-1]  # an equal str, but its own object


async def cache_memory(setup, tokens, which="repeated_token"):
    """Memory held by the verified-token cache and the identity-header memo after `tokens`
    distinct users' tokens shaped like `setup[which]`, each through Gateway.handle: both are
    bounded by entries and by estimated bytes, so this is the ceiling however many pass."""
    gateway = build(setup, assertion=False)
    await timed(gateway, [request(setup["gateway_url"] + "/api/warm", setup["repeated_token"])], "Forward")
    inner = gateway.validator._validator
    identity = await inner.validate(setup[which], lambda c: c.close())

    class Distinct:
        """Every token a different user: an identity of the real token's shape, every string
        a new object (as parsing each token makes them)."""

        def __init__(self):
            self.n = 0

        async def validate_with_kid(self, token, defer):
            self.n += 1
            tag = f"{self.n:08d}"
            return replace(identity, oid=identity.oid[:-8] + tag, sub=identity.sub[:-8] + tag,
                           name=f"{identity.name} {tag}", username=f"{tag}.{identity.username}",
                           issuer=identity.issuer + tag, audience=identity.audience + tag,
                           tid=_copy(identity.tid), client_id=_copy(identity.client_id),
                           scopes=tuple(map(_copy, identity.scopes)),
                           groups=tuple(g[:-8] + tag for g in identity.groups),
                           roles=tuple(r + tag for r in identity.roles)), setup["signing_kid"]

    cache = CachingValidator(Distinct(), gateway.validator._keys_by_version, clock=time.time, skew=60)
    gateway.validator = cache
    header = setup["repeated_token"].split(".")[0]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(tokens):  # not `timed`: its list of samples would be measured too
        result = await gateway.handle(request(setup["gateway_url"] + "/api/items", f"{header}.{n:012d}.x"), _close)
        if type(result).__name__ != "Forward":
            raise AssertionError(f"expected Forward, got {result!r}")
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    parts = gateway._identity_parts
    return {"tokens": tokens, "token_bytes": len(setup[which]), "groups": len(identity.groups), "roles": len(identity.roles),
            "entries": len(cache), "memo_entries": len(parts), "bytes": held,
            "estimated_bytes": cache._entries.bytes + parts.bytes, "budget_bytes": DEFAULT_MAX_BYTES + IDENTITY_PARTS_MAX_BYTES}


def _first_group(node):
    if isinstance(node, list) and len(node) == 2:
        if node[0] == "groups":
            return node[1][0]
        for child in node[1] if node[0] in ("any", "all") else [node[1]] if node[0] == "not" else []:
            found = _first_group(child)
            if found:
                return found
    return None


class GraphStandIn:
    """The token endpoint and Microsoft Graph for the overage scenario: asked once, at warm-up."""

    def __init__(self, member_of):
        self.member_of = member_of
        self.calls = 0

    async def get_json(self, url, timeout):
        raise AssertionError(f"benchmark must not fetch {url}")

    async def post_form(self, url, fields, timeout):
        self.calls += 1
        return 200, {"access_token": "bench-app-token", "expires_in": 3600}

    async def post_json(self, url, document, headers, timeout):
        self.calls += 1
        return 200, {"value": [group for group in document["groupIds"] if group in self.member_of]}, None


async def overage_scenarios(setup, repeat, batch=1, path="/admin/panel"):
    """Groups overage resolved through Graph (graph.py), answered from the isolate's memory,
    beside the same user with the group listed in the token, on a route that tests groups (the
    example policy's admin route). Both tokens come from the verified-token cache (a stand-in
    validator behind the real CachingValidator), so the difference is the overage path alone:
    the overage decision, the answer lookup and the second decision."""
    variables = dict(setup["vars"])
    variables.pop("ASSERTION_SIGNING_KEY", None)
    variables.update(ENTRA_CLIENT_ID="6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60", ENTRA_CLIENT_SECRET="bench",
                     GRAPH_GROUPS="true")
    config = Config.from_env(variables.get)
    policy_data = json.loads(setup["policy_json"])
    policy = Policy.from_json(policy_data)
    url = setup["gateway_url"] + path
    group = _first_group(policy.match("GET", url.split("/")[2], path)._allow_json)
    standin = GraphStandIn({group})
    now = time.time()
    store = Store({
        f"entragate:jwks:v{STORE_FORMAT}:{discovery_url(config, version)}": json.dumps({
            "format": STORE_FORMAT, "issuer": issuer, "jwks_uri": "", "fetched_at": now, "keys": setup["keys"],
        })
        for version, issuer in setup["issuers"].items()
    })
    verifier, _ = verifier_and_signer(None)
    gateway = assemble(config, policy, http=standin, store=store, verifier=verifier, clock=time.time,
                       log=lambda message: None, policy_groups=referenced_groups(policy_data))
    await timed(gateway, [request(setup["gateway_url"] + "/api/warm", setup["repeated_token"])], "Forward")
    identity = await gateway.validator._validator.validate(setup["repeated_token"], _close)
    header = setup["repeated_token"].split(".")[0]
    listed, overage = f"{header}.listed.x", f"{header}.overage.x"
    identities = {listed: replace(identity, groups=identity.groups + (group,)),
                  overage: replace(identity, groups=(), groups_overage=True)}

    class StandInValidator:
        async def validate_with_kid(self, token, defer):
            return identities[token], setup["signing_kid"]

    gateway.validator = CachingValidator(StandInValidator(), gateway.validator._keys_by_version, clock=time.time, skew=60)
    await timed(gateway, [request(url, listed), request(url, overage)], "Forward")  # the one Graph lookup
    calls = standin.calls
    results = {
        "groups in the token": summary(await timed(gateway, [request(url, listed)] * repeat, "Forward", batch)),
        "overage, groups from memory": summary(await timed(gateway, [request(url, overage)] * repeat, "Forward", batch)),
    }
    if standin.calls != calls or calls != 2:  # one app token, one checkMemberGroups
        raise AssertionError(f"expected one Graph lookup, saw {standin.calls} calls")
    return results


async def main(path, repeat=2000, memory=True):
    """On CPython (bench/run.py runs it as a script; workerd_pipeline.py calls the parts)."""
    with open(path) as file:
        setup = json.load(file)
    results = {
        "runtime": "cpython " + sys.version.split()[0],
        "scenarios": await scenarios(setup, repeat),
        "fresh_breakdown": await fresh_breakdown(setup),
        "overage": await overage_scenarios(setup, repeat),
    }
    if memory:  # tracemalloc is not available in Pyodide's build, and this is the slow part
        results["token_cache_memory"] = await cache_memory(setup, 100_000)
        results["token_cache_memory_large"] = await cache_memory(setup, 20_000, "large_token")
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], memory="--no-memory" not in sys.argv[2:]))
