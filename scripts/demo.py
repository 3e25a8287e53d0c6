"""`make demo`: the mock Entra tenant, the echo origin and the gateway together, offline.

The gateway enforces the example policies (examples/policies/, recompiled and reloaded on every
edit), not your policies/, and signs browsers in against the mock tenant (its client
certificate, a fresh session key). Prints the gateway URL, a page to open in a browser, and curl
lines; runs each line once itself so what is printed is what happens (with the audit line the
gateway wrote for it), then prints every audit line live as requests arrive. `make token` mints
more tokens from this demo's tenant. Ctrl-C stops all three.
"""

import argparse
import http.client
import json
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tools")]

from entragate_tools.host_crypto import new_session_key  # noqa: E402
from entragate_mocks.stack import EXAMPLE_POLICIES, RunnerFailed, Stack  # noqa: E402

GROUP_API_WRITERS = "22222222-2222-4222-8222-222222222222"  # examples/policies/gateway.toml alias api-writers
STATE = ROOT / ".wrangler" / "demo.json"
SIGNIN_PATH = "/app/"  # examples/policies/app.toml: login = true


def demo_settings() -> dict:
    """What the demo's Stack runs with besides its ports and state: the examples' policy
    (recompiled on every edit), and browser sign-in as the examples' login route needs it: the
    mock tenant's client registration with its certificate, and a fresh session key."""
    return {"policies": EXAMPLE_POLICIES, "watch": True, "client_credential": "certificate",
            "SESSION_KEYS": new_session_key()}


def demo_stack(port: int, persist_to: Path, policies: Path = EXAMPLE_POLICIES) -> Stack:
    """`policies`: another folder in place of the examples (a test edits a copy)."""
    return Stack(gateway_port=port, persist_to=persist_to, **{**demo_settings(), "policies": policies})


def curl(url: str, *, method="GET", token=None, data=None, headers=None) -> str:
    parts = ["curl", "-i"]
    if method != "GET":
        parts += ["-X", method]
    for name, value in (headers or {}).items():
        parts += ["-H", f"{name}: {value}"]
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
    rule = f" rule={line['rule']}" if line.get("rule") else " (no route)"
    return (f"  audit: {line['method']} {line['path']} -> {line['decision']} {line['status']} "
            f"reason={line['reason']}{cause}{rule}{who}{kind} {line['latency_ms']} ms")


def navigate(base_url: str, path: str, headers: dict) -> tuple[int, http.client.HTTPMessage]:
    """GET as a browser's navigation, without following a redirect (urllib would)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers
    finally:
        connection.close()


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
        stack = demo_stack(args.port, ROOT / ".wrangler" / "demo-state")
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
    browser = {"sec-fetch-mode": "navigate", "accept": "text/html"}

    people = ", ".join(user.name for user in tenant.users.values())
    print(f"\nentragate is running at {stack.url}  (policy: examples/policies/)")
    print(f"  mock Entra tenant {tenant.authority}  (tenant {tenant.tenant_id}, API {tenant.app_id_uri})")
    print(f"  echo origin       {stack.origin.url}")
    print(f"  start-up {stack.runner.ready['startup_ms']} ms (workerd, Python 3.14, offline: runner/dev.py)\n")
    print("Sign in with a browser:")
    print(f"  open {stack.url}{SIGNIN_PATH}")
    print(f"  pick a test user on the mock tenant's page ({people}),")
    print("  and you land on the echo origin, which shows the request as it arrived, identity headers included.")
    print(f"  sign out: {stack.url}/.well-known/entragate/logout\n")
    status, headers = navigate(stack.url, SIGNIN_PATH, browser)
    print(f"# a browser opening {SIGNIN_PATH} without a session is sent to the tenant to sign in -> {status}")
    print(curl(stack.url + SIGNIN_PATH, headers=browser))
    print(f"  location: {(headers.get('location') or '').partition('?')[0]}?client_id=…&code_challenge=…")
    try:
        print(readable(stack.runner.audit_line(headers["x-request-id"])) + "\n")
    except (AssertionError, KeyError):
        print()
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
    print("Policies: examples/policies/*.toml (wrangler recompiles and reloads on every edit). Your own policies/")
    print("are what `make deploy` ships and `make test` checks; the demo does not read them. Ctrl-C stops everything.")
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
