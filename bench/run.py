"""`make bench`: what the gateway costs in workerd, against what a user would pick instead (jose).

Per request (the headline): bench/pipeline_bench.py's scenarios (Gateway.handle) run inside
workerd by a Python Worker (bench/workerd_pipeline.py), beside the same pipeline written as a
JavaScript Worker with jose (bench/workerd_jose.mjs), both in one workerd under `wrangler dev`,
offline (runner/dev.py). Each run starts a fresh wrangler dev / workerd; every × compares the
two Workers within one run, and the figures are medians over --runs runs.

workerd's clock advances in whole milliseconds, so requests are timed in batches: a figure is
the median of batch means and "worst" the worst batch mean. There is no per-request
percentile from workerd.

The CPython column is the same code on the host's CPython (host crypto, no Pyodide, no
workerd). It stays because it separates the gateway's own work from the runtime's: where
workerd is many times CPython, the cost is Pyodide's interpreter, its JS crossings and event
loop, not a check the gateway could drop. Memory (tracemalloc, which Pyodide lacks) and policy
scaling are CPython figures too.

Cold start: what can be measured honestly here: wrangler dev's start to Ready (a JS Worker
alone for comparison), the Worker's modules imported in a fresh isolate inside workerd, the
first requests of a new isolate with keys from the network and from KV. The development
Pyodide bundle has no memory snapshot, so none of this is the edge's cold start.

Prints a table and writes bench-results.json (--docs: the figures into docs/BENCHMARKS.md too,
between its bench:start / bench:end markers; --readme is the old name of --docs). Nothing here
is a test.

    uv run python bench/run.py [--runs 3] [--skip-http] [--skip-scaling] [--docs]
"""

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tools"), str(ROOT / "tests"), str(ROOT / "runner")]

import pyodide_bundle  # noqa: E402
import vendor  # noqa: E402
from entragate_tools.compiler import compile_policies  # noqa: E402
from entragate_tools.host_crypto import new_assertion_key, new_session_key  # noqa: E402
from entragate_mocks.mock_entra import MockTenant  # noqa: E402
from entragate_mocks.stack import Runner, Stack  # noqa: E402

FRESH_TOKENS = 3000
# Batches long enough for a millisecond clock: 1000 repeated requests resolve 1 µs; 200 fresh
# tokens take ≥ 10 ms even in the jose Worker.
PIPELINE = {"repeat": 20000, "batch": 1000, "fresh_batch": 200}
PRIMITIVES = {"n": 5000}
# A user at Entra's limit of groups in a token (200; beyond it Entra sends an overage claim
# instead) with many app roles: ~15 KB, near the gateway's 16 KiB token limit.
LARGE_TOKEN_GROUPS = 200
LARGE_TOKEN_ROLES = 80
HTTP_CONCURRENCY = 8
HTTP_REQUESTS = 1000
RESULTS = ROOT / "bench-results.json"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tools")])}
JOSE_CONFIG = ROOT / "bench" / "workerd_jose.toml"
JOSE_BINDING = '\n[[services]]\nbinding = "JOSE"\nservice = "entragate-bench-jose"\n'


# The pipeline's policy: the examples' bearer-token routes (examples/policies/ but app.toml, whose
# browser sign-in route a gateway runs only with sign-in settings the benchmark does not exercise).
BENCH_POLICY_FILES = sorted(path for path in (ROOT / "examples" / "policies").glob("*.toml") if path.name != "app.toml")


def make_setup(tenant: MockTenant) -> dict:
    return {
        "vars": {
            "ENTRA_TENANT_ID": tenant.tenant_id,
            "ENTRA_AUTHORITY": tenant.authority,
            "ENTRA_AUDIENCES": f"{tenant.client_id},{tenant.app_id_uri}",
            "ORIGIN_URL": "https://origin.example.com",
            "ASSERTION_SIGNING_KEY": new_assertion_key(),
        },
        "issuers": {"1.0": tenant.issuer("1.0"), "2.0": tenant.issuer("2.0")},
        "keys": tenant.jwks("2.0")["keys"],
        "signing_kid": tenant.signing_kid,
        "policy_json": compile_policies(files=BENCH_POLICY_FILES).json_text,
        # Browser sessions (pipeline_bench.session_scenarios): the whole example policy, whose
        # app.toml is the sign-in route, and what a session of the repeated token's user holds.
        "session_policy_json": compile_policies(ROOT / "examples" / "policies").json_text,
        "signin_vars": {"ENTRA_CLIENT_ID": tenant.client_id, "ENTRA_CLIENT_SECRET": "bench",
                        "SESSION_KEYS": new_session_key()},
        "session_claims": json.dumps({"iss": tenant.issuer("2.0"), "oid": tenant.user_oid, "tid": tenant.tenant_id,
                                      "sub": "bench-subject", "name": "Bench User", "username": "bench@contoso.example"}),
        "gateway_url": "https://gateway.example.com",
        "fresh_tokens": [tenant.mint(lifetime=7200) for _ in range(FRESH_TOKENS)],
        "repeated_token": tenant.mint(lifetime=7200),
        "large_token": tenant.mint(lifetime=7200, claims={
            "groups": [f"{n:08x}-5a4f-4e3d-8c2b-1a0f9e8d7c6b" for n in range(LARGE_TOKEN_GROUPS)],
            "roles": [f"Orders.Region{n:03d}.ReadWrite" for n in range(LARGE_TOKEN_ROLES)],
        }),
    }


def run_json(command, **kwargs) -> dict:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=900) as response:
        return json.loads(response.read())


def workerd_run(setup: dict) -> dict:
    """One fresh wrangler dev / workerd running the Python benchmark Worker and the jose Worker."""
    with tempfile.TemporaryDirectory() as state:
        runner = Runner({}, persist_to=Path(state), main="bench/workerd_pipeline.py",
                        extra_toml=JOSE_BINDING, also=(JOSE_CONFIG,))
        try:
            url = runner.url
            result = {"startup_ms": runner.ready["startup_ms"], "imports": post(url + "/imports", {})}
            post(url + "/setup", setup)
            post(url + "/jose/setup", setup)
            result["python"] = post(url + "/pipeline", PIPELINE)
            result["jose"] = post(url + "/jose/pipeline", PIPELINE)
            result["breakdown"] = post(url + "/breakdown", {"batch": PIPELINE["fresh_batch"]})
            result["primitives"] = {"python": post(url + "/primitives", PRIMITIVES),
                                    "js": post(url + "/jose/primitives", PRIMITIVES)}
        except urllib.error.HTTPError as error:
            time.sleep(2)  # the Worker's traceback reaches wrangler's output after the response
            raise RuntimeError(f"{error.url}: HTTP {error.code}\n{runner.output[-6000:]}") from None
        finally:
            runner.stop()
    return result


@contextlib.contextmanager
def plain_js_worker():
    """wrangler dev (through runner/dev.py, as the gateway's Worker) with a JavaScript Worker that
    answers 200 at once: what wrangler's local server and workerd cost without Python or a
    gateway. Its folder is a scratch one (the runner links python_modules/ beside the config)."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "worker.mjs").write_text('export default { fetch: () => new Response("ok") };\n')
        (Path(folder) / "wrangler.toml").write_text(
            'name = "entragate-bench-plain"\nmain = "worker.mjs"\ncompatibility_date = "2026-09-08"\n')
        runner = Runner({}, persist_to=Path(folder) / "state", config=Path(folder) / "wrangler.toml")
        try:
            yield runner
        finally:
            runner.stop()


def js_worker_startup() -> int:
    with plain_js_worker() as runner:
        return runner.ready["startup_ms"]


def first_requests() -> dict:
    """The gateway's own Worker (src/entry.py on the examples, as the Stack runs it): start to
    Ready, its first request with keys from the network, a warm one, then a new isolate (new
    workerd, same KV on disk): start to Ready and its first request with keys from KV."""
    with tempfile.TemporaryDirectory() as state, Stack(persist_to=state) as stack:
        startup = stack.runner.ready["startup_ms"]
        token = stack.tenant.mint()
        started = time.perf_counter()
        assert stack.request("GET", "/api/cold", token=token)[0] == 200
        from_network = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        assert stack.request("GET", "/api/warm", token=token)[0] == 200
        warm = (time.perf_counter() - started) * 1000
        stack.restart_runner()
        started = time.perf_counter()
        assert stack.request("GET", "/api/cold", token=stack.tenant.mint())[0] == 200
        from_kv = (time.perf_counter() - started) * 1000
        return {"startup_ms": startup, "restart_startup_ms": stack.runner.ready["startup_ms"],
                "first_request_keys_from_network_ms": round(from_network, 1),
                "first_request_keys_from_kv_ms": round(from_kv, 1), "warm_request_ms": round(warm, 1)}


def median_of(runs, *keys):
    values = []
    for run in runs:
        for key in keys:
            run = run[key]
        values.append(run)
    return round(statistics.median(values), 1)


def collect(setup_path: Path, runs: int) -> dict:
    setup = json.loads(setup_path.read_text())
    # Built (or found cached) before any start is timed; the runner would do it on its first start.
    pyodide_bundle.build()
    vendor.vendor()
    workerd_runs, cpython_runs, cold_runs = [], [], []
    for n in range(runs):
        print(f"  run {n + 1}/{runs}: workerd (Python Worker + jose Worker), CPython, cold starts", flush=True)
        workerd_runs.append(workerd_run(setup))
        # Memory once, in the last run: it is the slow part, and the same every run.
        command = [sys.executable, "bench/pipeline_bench.py", str(setup_path)] + (["--no-memory"] if n < runs - 1 else [])
        cpython_runs.append(run_json(command, env=ENV, timeout=900))
        cold_runs.append({"js_worker_startup_ms": js_worker_startup(), **first_requests()})

    rows = []
    for name in workerd_runs[0]["python"]:
        # The jose Worker has no browser sessions: those rows have no jose figure.
        in_jose = name in workerd_runs[0]["jose"]
        rows.append({
            "scenario": name,
            "jose_median_us": median_of(workerd_runs, "jose", name, "median_us") if in_jose else None,
            "jose_worst_us": median_of(workerd_runs, "jose", name, "worst_us") if in_jose else None,
            "workerd_median_us": median_of(workerd_runs, "python", name, "median_us"),
            "workerd_worst_us": median_of(workerd_runs, "python", name, "worst_us"),
            # Each run's Python figure against that run's jose figure.
            "x_jose": round(statistics.median(run["python"][name]["median_us"] / run["jose"][name]["median_us"]
                                              for run in workerd_runs), 2) if in_jose else "–",
            "cpython_median_us": median_of(cpython_runs, "scenarios", name, "median_us"),
            "cpython_p99_us": median_of(cpython_runs, "scenarios", name, "p99_us"),
        })
    last = cpython_runs[-1]
    return {
        "rows": rows,
        "jose_jwtverify_fresh_us": median_of(workerd_runs, "jose", "jwtVerify alone, fresh token", "median_us"),
        "fresh_breakdown": {
            "workerd": {stage: median_of(workerd_runs, "breakdown", stage) for stage in workerd_runs[0]["breakdown"]},
            "cpython": {stage: median_of(cpython_runs, "fresh_breakdown", stage) for stage in cpython_runs[0]["fresh_breakdown"]},
        },
        "primitives": {side: {name: median_of(workerd_runs, "primitives", side, name)
                              for name, value in workerd_runs[0]["primitives"][side].items() if value is not None}
                       for side in ("python", "js")},
        "cold": {
            "bench_workers_startup_ms": median_of(workerd_runs, "startup_ms"),
            "worker_import_ms": median_of(workerd_runs, "imports", "worker_import_ms"),
            "worker_import_ms_each_run": [run["imports"]["worker_import_ms"] for run in workerd_runs],
            "modules_loaded": workerd_runs[0]["imports"]["modules_loaded"],
            **{key: median_of(cold_runs, key) for key in cold_runs[0]},
        },
        "overage": {name: median_of(cpython_runs, "overage", name, "median_us") for name in cpython_runs[0]["overage"]},
        "token_cache_memory": last["token_cache_memory"],
        "token_cache_memory_large": last["token_cache_memory_large"],
        "runtimes": {"workerd": workerd_version(workerd_runs[0]["imports"]["python"]), "cpython": last["runtime"]},
        "raw": {"workerd": workerd_runs, "cold": cold_runs},
    }


def workerd_version(python: str) -> str:
    """e.g. "workerd 2026-11-17, Pyodide 314.0.6 (Python 3.14.2), wrangler 4.164.0"."""
    import dev  # runner/dev.py

    workerd = subprocess.run([dev.workerd_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{workerd}, Pyodide {pyodide_bundle._version('pyodide')} (Python {python}), "
            f"wrangler {pyodide_bundle._version('wrangler')}")


def http_overhead() -> dict:
    """Loopback HTTP load on the echo origin directly, on a plain JavaScript Worker under
    wrangler dev (wrangler's local server and workerd alone), and through the gateway's Worker
    under wrangler dev (the same, plus the Worker and its fetch of the origin)."""
    load = [str(ROOT / "node_modules" / ".bin" / "node"), "bench/http_load.mjs"]
    with plain_js_worker() as runner:
        plain = run_json(load + [runner.url + "/", str(HTTP_CONCURRENCY), str(HTTP_REQUESTS)])
    with tempfile.TemporaryDirectory() as state, Stack(persist_to=state) as stack:
        token = stack.tenant.mint(lifetime=7200)
        stack.request("GET", "/api/warm", token=token)
        direct = run_json(load + [stack.origin.url + "/api/load", str(HTTP_CONCURRENCY), str(HTTP_REQUESTS)])
        gateway = run_json(load + [stack.url + "/api/load", str(HTTP_CONCURRENCY), str(HTTP_REQUESTS), f"authorization:Bearer {token}"])
    return {
        "concurrency": HTTP_CONCURRENCY, "requests": HTTP_REQUESTS, "direct": direct, "plain_js_worker": plain,
        "via_gateway": gateway,
        "added_p50_ms": round(gateway["p50_ms"] - direct["p50_ms"], 2),
        "added_p99_ms": round(gateway["p99_ms"] - direct["p99_ms"], 2),
    }


def policy_scaling() -> str:
    result = subprocess.run([sys.executable, "bench/policy_scaling.py", "--runs", "5"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=900)
    return result.stdout.strip()


def bundle() -> dict:
    """What `make check` measures: the Worker with python_modules/ vendored by runner/vendor.py
    (the edge dependencies and the Workers SDK, as pywrangler would), `wrangler deploy --dry-run`."""
    requirements = vendor.vendor()
    with tempfile.TemporaryDirectory() as out:
        # npx, as `make check`: it puts node_modules/.bin (wrangler's Node 22) first on PATH.
        dry = subprocess.run(["npx", "wrangler", "deploy", "--dry-run", "--outdir", out],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    match = re.search(r"Total Upload: ([\d.]+) KiB / gzip: ([\d.]+) KiB", dry.stdout + dry.stderr)
    if not match:
        raise RuntimeError(f"wrangler deploy --dry-run gave no size:\n{(dry.stdout + dry.stderr)[-3000:]}")
    return {"upload_kib": float(match.group(1)), "gzip_kib": float(match.group(2)),
            "vendored": [line for line in requirements.splitlines() if line]}


def us(value) -> str:
    """A figure as precise as it is: whole µs from 100 on, one decimal below."""
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def print_table(results: dict) -> None:
    p = results["pipeline"]
    print(f"\nPer-request pipeline in workerd ({p['runtimes']['workerd']}), µs: median batch mean / worst batch; "
          f"× = Python Worker / jose Worker, same workerd, same run. CPython: median / p99 per request.")
    print(f"{'scenario':28} {'jose Worker':>16} {'Python Worker':>16} {'×jose':>7} {'CPython':>16}")
    for row in p["rows"]:
        print(f"{row['scenario']:28} {us(row['jose_median_us']):>8} / {us(row['jose_worst_us']):<6} "
              f"{us(row['workerd_median_us']):>8} / {us(row['workerd_worst_us']):<6} {row['x_jose']:>7} "
              f"{us(row['cpython_median_us']):>8} / {us(row['cpython_p99_us']):<6}")
    print(f"jose jwtVerify alone, fresh token: {p['jose_jwtverify_fresh_us']} µs")
    print("\nWhere a fresh token's time goes (mean µs over every fresh token):")
    print(f"{'stage':50} {'workerd':>9} {'cpython':>9}")
    for stage, value in p["fresh_breakdown"]["workerd"].items():
        print(f"{stage:50} {us(value):>9} {us(p['fresh_breakdown']['cpython'].get(stage)):>9}")
    print("\nSingle operations in workerd (µs each, loops timed as one):")
    print(f"{'operation':80} {'Python':>8} {'JS':>8}")
    for name, python, js in primitive_rows(p["primitives"]):
        print(f"{name:80} {us(python):>8} {us(js):>8}")
    print(f"\nCold start: {p['cold']}")
    print(overage_line(p["overage"]))
    for memory in (p["token_cache_memory"], p["token_cache_memory_large"]):
        print(memory_line(memory))
    if "http" in results:
        print(http_line(results["http"]))
    b = results["bundle"]
    print(f"Bundle: {b['upload_kib']} KiB upload / {b['gzip_kib']} KiB gzip; vendored: {', '.join(b['vendored'])}")
    if results.get("policy_scaling"):
        print("\nPolicy scaling (CPython):\n" + results["policy_scaling"])


def primitive_rows(primitives: dict) -> list:
    names = list(dict.fromkeys([*primitives["python"], *primitives["js"]]))
    return [(name, primitives["python"].get(name), primitives["js"].get(name)) for name in names]


def http_line(h: dict) -> str:
    def figures(load):
        return f"p50 {load['p50_ms']} ms / p99 {load['p99_ms']} ms, {load['rps']} req/s"

    return (f"HTTP, {h['requests']} requests at concurrency {h['concurrency']} on loopback: the echo origin direct "
            f"{figures(h['direct'])}; a JavaScript Worker that answers at once, under `wrangler dev` "
            f"{figures(h['plain_js_worker'])}; the gateway's Worker under `wrangler dev` (token from its cache, "
            f"origin fetched) {figures(h['via_gateway'])}: added to the origin p50 {h['added_p50_ms']} ms, "
            f"p99 {h['added_p99_ms']} ms.")


def overage_line(overage: dict) -> str:
    listed, resolved = overage.values()
    return (f"Groups overage (`pipeline_bench.overage_scenarios`, CPython, median per request): the same user on a "
            f"route that tests groups, the group in the token {listed} µs, overage answered from the isolate's Graph "
            f"answers {resolved} µs ({resolved - listed:+.1f} µs).")


def memory_line(memory: dict) -> str:
    return (f"Token cache + header memo after {memory['tokens']:,} distinct users' tokens of {memory['token_bytes']:,} bytes "
            f"({memory['groups']} groups, {memory['roles']} roles): {memory['entries']} + {memory['memo_entries']} entries, "
            f"{memory['bytes'] / 1e6:.1f} MB (CPython tracemalloc; estimated {memory['estimated_bytes'] / 1e6:.1f} MB "
            f"of a {memory['budget_bytes'] / 1e6:.1f} MB budget: the ceiling, whatever the traffic).")


def markdown(results: dict) -> str:
    p, h, b = results["pipeline"], results.get("http"), results["bundle"]
    c, runs = p["cold"], results["runs"]
    lines = [
        f"Measured {results['when']} with `uv run python bench/run.py --runs {runs} --docs` on a 2-core VM "
        f"shared with other jobs (load average {' at start, '.join(map(str, results['load_average']))} at end), in "
        f"{p['runtimes']['workerd']} under `wrangler dev`, offline (`runner/dev.py`). "
        f"Two Workers in one workerd: the gateway's code (`Gateway.handle`, Python) in `bench/workerd_pipeline.py`, "
        f"and the same pipeline as the JavaScript Worker a user would write instead with jose "
        f"(`bench/workerd_jose.mjs`, `bench/jose_pipeline.mjs`). Each run is a fresh workerd; × = Python / jose "
        f"within a run; figures are medians of {runs} runs. workerd's clock advances in whole milliseconds, so "
        f"requests are timed in batches ({PIPELINE['batch']} repeated, {PIPELINE['fresh_batch']} fresh): a figure "
        f"is the median batch mean, \"worst\" the worst batch mean; there is no per-request p99 from workerd. "
        f"CPython ({p['runtimes']['cpython']}, host crypto, per request) is the same code without Pyodide or "
        f"workerd: what the gateway's own work costs. jose's `jwtVerify` alone: {p['jose_jwtverify_fresh_us']} µs "
        f"for a fresh token.",
        "",
        "| scenario (Gateway.handle) | jose Worker µs, median / worst | Python Worker µs, median / worst | × jose | CPython µs, median / p99 |",
        "|---|---|---|---|---|",
    ]
    for row in p["rows"]:
        lines.append(f"| {row['scenario']} | {us(row['jose_median_us'])} / {us(row['jose_worst_us'])} | "
                     f"{us(row['workerd_median_us'])} / {us(row['workerd_worst_us'])} | {row['x_jose']} | "
                     f"{us(row['cpython_median_us'])} / {us(row['cpython_p99_us'])} |")
    breakdown = p["fresh_breakdown"]
    lines += ["", f"Where a fresh token's time goes (`bench/pipeline_bench.py` `fresh_breakdown`): the validator's "
              f"steps timed in sequence within each validation, each summed over {FRESH_TOKENS} fresh tokens and "
              f"divided by their count, mean µs. In workerd one token's stage reads 0 or 1000 µs; the mean over "
              f"many is unbiased, with a standard error of √(1000·d/{FRESH_TOKENS}) µs for a stage of d µs "
              f"(~1 µs at 5 µs, ~8 µs at 200 µs). \"whole Gateway.handle\" is timed in batches on a gateway "
              f"whose cache holds none of the tokens.", "",
              "| stage | workerd | CPython |", "|---|---|---|"]
    for stage, value in breakdown["workerd"].items():
        lines.append(f"| {stage} | {us(value)} | {us(breakdown['cpython'].get(stage))} |")
    lines += ["", "Single operations in workerd, for scale (µs each; a loop of "
              f"{PRIMITIVES['n']} timed as one), from the Python Worker and in the JavaScript Worker:", "",
              "| operation | from Python | in JS |", "|---|---|---|"]
    for name, python, js in primitive_rows(p["primitives"]):
        lines.append(f"| {name} | {us(python)} | {us(js)} |")
    lines += [
        "",
        f"- Cold start, as far as it can be measured here. The development Pyodide bundle has **no memory "
        f"snapshot**, so a new isolate runs Python's start-up and the imports the edge restores from a snapshot: "
        f"none of this is the edge's cold start. `wrangler dev` start to Ready (`runner/dev.py`, wrangler, "
        f"workerd, bundling): the gateway's Worker {c['startup_ms']:.0f} ms (its `[build]` policy compile "
        f"included), again on the same KV {c['restart_startup_ms']:.0f} ms; the benchmark's Python + jose "
        f"Workers {c['bench_workers_startup_ms']:.0f} ms; a JavaScript Worker alone {c['js_worker_startup_ms']:.0f} ms. "
        f"Inside workerd, the Worker's modules (`src/entry.py` and the {c['modules_loaded']} modules it "
        f"loads, the compiled policy included) import in {c['worker_import_ms']:.0f} ms on a fresh isolate's first "
        f"request (per run: {', '.join(f'{v:.0f}' for v in c['worker_import_ms_each_run'])} ms; timed in a request, "
        f"since workerd's clock stands still while modules are evaluated at the isolate's start).",
        f"- First request to a new isolate of the gateway's Worker, through `wrangler dev`: keys from the "
        f"network (mock tenant on loopback) {c['first_request_keys_from_network_ms']:.0f} ms, keys from KV (new "
        f"workerd, same KV) {c['first_request_keys_from_kv_ms']:.0f} ms; a warm request {c['warm_request_ms']:.0f} ms.",
        f"- {overage_line(p['overage'])}",
        f"- {memory_line(p['token_cache_memory'])}",
        f"- {memory_line(p['token_cache_memory_large'])}",
    ]
    if h:
        lines.append(f"- {http_line(h)}")
    lines.append(f"- Bundle (`wrangler deploy --dry-run` with `python_modules/` vendored as `make check` does): "
                 f"{b['upload_kib']} KiB upload / {b['gzip_kib']} KiB gzip; vendored: {', '.join(b['vendored'])}.")
    if results.get("policy_scaling"):
        lines += ["", "Policy scaling (`bench/policy_scaling.py`, CPython):", "", "```", results["policy_scaling"], "```"]
    return "\n".join(lines)


# The one place the documentation quotes these figures; everything else links to it.
FIGURES_DOC = ROOT / "docs" / "BENCHMARKS.md"


def write_docs(results: dict) -> None:
    text = FIGURES_DOC.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"{FIGURES_DOC.relative_to(ROOT)}: expected one {start} ... {end} pair")
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    FIGURES_DOC.write_text(f"{before}{start}\n{markdown(results)}\n{end}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="also write the figures into docs/BENCHMARKS.md (--readme: the old name)")
    args = parser.parse_args()

    # Other jobs share the machine: the load average says how much (1-minute figure, 2 cores).
    results = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": args.runs,
               "load_average": [round(os.getloadavg()[0], 1)]}
    scratch = ROOT / ".wrangler" / "bench"
    scratch.mkdir(parents=True, exist_ok=True)
    setup_path = scratch / "setup.json"
    print("minting tokens...", flush=True)
    with MockTenant() as tenant:
        setup_path.write_text(json.dumps(make_setup(tenant)))
    results["pipeline"] = collect(setup_path, args.runs)
    if not args.skip_http:
        print("  HTTP overhead through the Worker in workerd...", flush=True)
        results["http"] = http_overhead()
    print("  bundle...", flush=True)
    results["bundle"] = bundle()
    if not args.skip_scaling:
        print("  policy scaling...", flush=True)
        results["policy_scaling"] = policy_scaling()
    results["load_average"].append(round(os.getloadavg()[0], 1))
    RESULTS.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    if args.docs:
        write_docs(results)
        print(f"figures written into {FIGURES_DOC.relative_to(ROOT)}; its comparison with the targets, "
              "below them, is written by hand: revise it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
