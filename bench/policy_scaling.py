"""How route matching scales with policy size. Prints figures; it is not a test.

    PYTHONPATH=src:tools uv run python bench/policy_scaling.py [--runs 9] [--requests 20000]

For 10 / 100 / 1 000 / 10 000 routes it generates a policy (TOML text, compiled with the real
compiler), loads it with the edge's Policy.loads, then times the edge code per request:

  match µs       Policy.match over requests spread across all routes: exact hosts, wildcard
                 hosts, any host; literal, `*` and `**` patterns; 20% misses
  decide µs      Policy.decide (match + condition evaluation) over the same requests
  hot match µs   Policy.match over requests for 30 routes only: the same algorithmic work
                 with a small working set, to tell index cost from CPU-cache effects
  checked µs     Policy.match where every request needs its spelling checked (issue #13): a
                 policy of the same size made of broad routes with a narrower one under each,
                 requests for the broad ones (fold the path, match it again, compare)
  load ms        Policy.loads (json.loads + from_json; the index is prebuilt by the compiler)
  compile ms     the build-time compiler (TOML parse, pydantic validation, index, checks)

Each per-request figure is the median of --runs runs, sizes interleaved within each run.
The index is a trie per host tier, so µs/match should stay flat as routes grow.
"""

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tools")]

from entragate.identity import Identity  # noqa: E402
from entragate.policy import Policy  # noqa: E402
from entragate_tools.compiler import compile_policies  # noqa: E402

SIZES = (10, 100, 1000, 10000)
GROUP = "11111111-1111-4111-8111-111111111111"


def generate(n: int) -> str:
    """n routes: a third on exact hosts, a third on wildcard hosts, a third on any host."""
    lines = [f'[groups]\nteam = "{GROUP}"\n']
    for i in range(n):
        tier = i % 3
        lines.append("[[routes]]")
        if tier == 0:
            lines.append(f'hosts = ["svc{i % 97}.example.com"]')
        elif tier == 1:
            lines.append(f'hosts = ["*.zone{i % 89}.example.net"]')
        shape = (i // 3) % 3
        if shape == 0:
            path = f"/app{i}/v1/items/**"
        elif shape == 1:
            path = f"/app{i}/*/detail"
        else:
            path = f"/app{i}/static/file"
        lines.append(f'paths = ["{path}"]')
        lines.append('methods = ["GET", "POST"]')
        lines.append('allow = { any = [{ groups = ["team"] }, { roles = ["Reader"] }], kind = "user" }\n')
    lines.append('[[routes]]\npaths = ["/healthz"]\npublic = true\n')
    return "\n".join(lines)


def generate_overlapping(n: int) -> str:
    """n routes in pairs: `/app{i}/**` for the team, and a deny-all `/app{i}/admin/**` under it.
    Every broad slot is marked for the spelling check (another spelling of /app{i}/admin/x,
    e.g. /app{i}/Admin/x, would fall to the broad route)."""
    lines = [f'[groups]\nteam = "{GROUP}"\n']
    for i in range(max(n // 2, 1)):
        lines.append(f'[[routes]]\npaths = ["/app{i}/**"]\nallow = {{ groups = ["team"] }}\n')
        lines.append(f'[[routes]]\npaths = ["/app{i}/admin/**"]\ndeny = {{ authenticated = true }}\n')
    return "\n".join(lines)


def checked_requests(n: int, count: int) -> list:
    rng = random.Random(n)
    return [("GET", "anything.example.org", f"/app{rng.randrange(max(n // 2, 1))}/items/{rng.randrange(1000)}")
            for _ in range(count)]


def requests_for(n: int, count: int, spread: int | None = None) -> list:
    """count requests for routes drawn from the first `spread` routes (default: all n)."""
    rng = random.Random(n)
    reqs = []
    for _ in range(count):
        i = rng.randrange(min(spread or n, n))
        tier, shape = i % 3, (i // 3) % 3
        host = (
            f"svc{i % 97}.example.com" if tier == 0
            else f"api.zone{i % 89}.example.net" if tier == 1
            else "anything.example.org"
        )
        path = (
            f"/app{i}/v1/items/42/history" if shape == 0
            else f"/app{i}/x{rng.randrange(1000)}/detail" if shape == 1
            else f"/app{i}/static/file"
        )
        if rng.random() < 0.2:  # misses: unknown prefix, near-miss segment
            path = rng.choice([f"/nope{i}/a/b", f"/app{i}/static/other", "/healthz/x"])
        reqs.append(("GET", host, path))
    return reqs


def time_once(fn, reqs) -> float:
    start = time.perf_counter()
    for method, host, path in reqs:
        fn(method, host, path)
    return (time.perf_counter() - start) / len(reqs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    identity = Identity(
        oid="o", tid="t", sub="o", name=None, username=None, groups=(GROUP,), groups_overage=False,
        roles=(), scopes=(), client_id="c", kind="user", version="2.0", issuer="", audience="", expires_at=0,
    )
    rows = {}
    for n in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "bench.toml").write_text(generate(n))
            t0 = time.perf_counter()
            compiled = compile_policies(tmp)
            compile_ms = (time.perf_counter() - t0) * 1e3
        loads = []
        policy = None
        for _ in range(args.runs):  # what the Worker does at import: parse + from_json
            del policy  # free the previous copy outside the timed region
            t0 = time.perf_counter()
            policy = Policy.loads(compiled.json_text)
            loads.append((time.perf_counter() - t0) * 1e3)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "bench.toml").write_text(generate_overlapping(n))
            overlapping = Policy.loads(compile_policies(tmp).json_text)
        reqs = requests_for(n, args.requests)
        hot = requests_for(n, args.requests, spread=30)
        checked = checked_requests(n, args.requests)
        hits = sum(policy.match(*r) is not None for r in reqs) / len(reqs) * 100
        decide = (lambda p: lambda m, h, path: p.decide(m, h, path, identity))(policy)
        decide("GET", "h", "/")  # warm-up: conditions compile on first use
        for r in reqs:
            decide(*r)
        rows[n] = dict(compile=compile_ms, load=statistics.median(loads), hits=hits,
                       jobs=[(policy.match, reqs), (decide, reqs), (policy.match, hot), (overlapping.match, checked)],
                       samples=[[], [], [], []])
    # Interleave sizes within each run so machine noise and drift hit every size alike;
    # the cyclic GC is paused while timing, as timeit does.
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.runs):
            for n in SIZES:
                for (fn, reqs), samples in zip(rows[n]["jobs"], rows[n]["samples"]):
                    samples.append(time_once(fn, reqs))
    finally:
        gc.enable()
    print(f"python {sys.version.split()[0]}, {args.requests} requests per figure, median of {args.runs} runs")
    print(f"{'routes':>7} {'compile ms':>11} {'load ms':>8} {'match µs':>9} {'decide µs':>10} "
          f"{'hot match µs':>13} {'checked µs':>11} {'hit %':>6}")
    for n in SIZES:
        row = rows[n]
        match_us, decide_us, hot_us, checked_us = (statistics.median(s) for s in row["samples"])
        print(f"{n:>7} {row['compile']:>11.1f} {row['load']:>8.2f} {match_us:>9.3f} "
              f"{decide_us:>10.3f} {hot_us:>13.3f} {checked_us:>11.3f} {row['hits']:>6.1f}")


if __name__ == "__main__":
    main()
