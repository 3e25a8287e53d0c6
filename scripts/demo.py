"""`make demo`: the mock Entra tenant, the echo origin and the gateway together, offline.

Prints the gateway URL and curl lines, runs each line once itself so what is printed is what
happens (with the audit line the gateway wrote for it), then prints every audit line live as
requests arrive. `make token` mints more tokens from this demo's tenant. Ctrl-C stops all three.
"""

import argparse
import json
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "tools")]

from fixtures.stack import RunnerFailed, Stack  # noqa: E402

GROUP_API_WRITERS = "22222222-2222-4222-8222-222222222222"  # policies/gateway.toml alias api-writers
STATE = ROOT / ".wrangler" / "demo.json"


def curl(url: str, *, method="GET", token=None, data=None) -> str:
    parts = ["curl", "-i"]
    if method != "GET":
        parts += ["-X", method]
    if token:
        parts += ["-H", f"Authorization: Bearer {token}"]
    if data:
        parts += ["-H", "content-type: application/json", "--data", data]
    return " ".join(shlex.quote(p) for p in parts + [url])


def readable(line: dict) -> str:
    """One audit line, for people: what was asked, what was decided and why, by whom."""
    who = line.get("oid") and f" oid={line['oid']}" or ""
    kind = line.get("token_kind") and f" ({line['token_kind']})" or ""
    cause = f" cause={line['cause']}" if line.get("cause") else ""
    return (f"  audit: {line['method']} {line['path']} -> {line['decision']} {line['status']} "
            f"reason={line['reason']}{cause} rule={line['rule']}{who}{kind} {line['latency_ms']} ms")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8787, help="gateway port (default 8787)")
    args = parser.parse_args()
    if not port_free(args.port):
        print(f"port {args.port} is in use: stop what listens there, or run `make demo PORT={args.port + 1}`",
              file=sys.stderr)
        return 1

    print("starting mock Entra tenant, echo origin and the gateway (workerd under wrangler dev, offline, ~6 s)...",
          flush=True)
    try:
        stack = Stack(gateway_port=args.port, persist_to=ROOT / ".wrangler" / "demo-state")
    except RunnerFailed as error:
        print(f"the gateway did not start:\n{str(error)[-2000:]}", file=sys.stderr)
        return 1
    tenant = stack.tenant
    STATE.write_text(json.dumps({"authority": tenant.authority, "gateway": stack.url, "origin": stack.origin.url}))
    user = tenant.mint(lifetime=8 * 3600)
    writer = tenant.mint(claims={"groups": [GROUP_API_WRITERS]}, lifetime=8 * 3600)
    app = tenant.mint(kind="app", lifetime=8 * 3600)
    examples = [
        ("a user token with scope access_as_user reads the API", "GET", "/api/hello?name=ada", user, None),
        ("no token: refused", "GET", "/api/hello", None, None),
        ("the same user may not write (not in api-writers)", "POST", "/api/items", user, '{"n":1}'),
        ("a member of api-writers may", "POST", "/api/items", writer, '{"n":1}'),
        ("an app-only token with role Gateway.Invoke calls /internal", "GET", "/internal/jobs", app, None),
        ("the public health route needs no token", "GET", "/healthz", None, None),
        ("a path no route covers: default deny", "GET", "/elsewhere", user, None),
    ]

    print(f"\nentragate is running at {stack.url}")
    print(f"  mock Entra tenant {tenant.authority}  (tenant {tenant.tenant_id}, API {tenant.app_id_uri})")
    print(f"  echo origin       {stack.origin.url}")
    print(f"  start-up {stack.runner.ready['startup_ms']} ms (workerd, Python 3.14, offline: runner/dev.py)\n")
    print("Try these (each was just run once; the status it got and the gateway's audit line are shown):\n")
    for title, method, path, token, data in examples:
        status, headers, _ = stack.request(method, path, token=token, body=data.encode() if data else None,
                                           headers={"content-type": "application/json"} if data else None)
        print(f"# {title} -> {status}")
        print(curl(stack.url + path, method=method, token=token, data=data))
        try:
            print(readable(stack.runner.audit_line(headers["x-request-id"])) + "\n")
        except (AssertionError, KeyError):
            print()
    print("Mint more tokens (your own groups, roles, app-only, v1, expired, other tenant, overage):")
    print("  make -s token ARGS='--groups 22222222-2222-4222-8222-222222222222'   (make token ARGS=--help)")
    print("Policies: policies/*.toml (wrangler recompiles and reloads on every edit). Ctrl-C stops everything.")
    print("\nAudit lines, live:", flush=True)

    stopped = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.append(True))
    shown = len(stack.runner.audit_lines())
    try:
        while not stopped:
            time.sleep(0.2)
            lines = stack.runner.audit_lines()
            for line in lines[shown:]:
                print(readable(line), flush=True)
            shown = len(lines)
            if stack.runner.process.poll() is not None and not stopped:
                print("the gateway exited:\n" + stack.runner.output[-2000:], file=sys.stderr)
                return 1
    finally:
        print("\nstopping...", flush=True)
        STATE.unlink(missing_ok=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
