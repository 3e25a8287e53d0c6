"""CORS at the edge, in a real browser: a page served on one loopback origin calls the gateway
on another with Connect-ES's browser transports (Connect, proto and JSON, and gRPC-Web, over
fetch) and with grpc-web, gRPC's own browser client (gRPC-Web's text format, over
XMLHttpRequest), sending the bearer token, so every call is preflighted. Headless Chromium
(Debian's chromium; tests/browser/conftest.py says when it is required) runs the page (tests/runtime/grpc/browser.mjs, bundled with esbuild), which
posts what each call gave back to the page's own server.

The gateway runs src/entry.py on a policy compiled here (tests/runtime/workers/policy_from_var.py:
the page's origin names a port only known now); the origin is the Connect server of
tests/runtime/test_grpc.py.
"""

import json
import queue
import subprocess
import textwrap
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from entragate_tools.compiler import compile_policies
from fixtures.connect_origin import HARNESS, NODE, ConnectOrigin
from entragate_mocks.stack import PROJECT, Stack, environment_ok

ESBUILD = PROJECT / "node_modules" / ".bin" / "esbuild"

pytestmark = [
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cors test</title></head>
<body><script type="module" src="/bundle.js"></script></body></html>
"""


def policy_text(page_origin: str) -> str:
    return textwrap.dedent(f"""
        [[routes]]
        name = "orders-read"
        paths = ["/shop.v1.Orders/GetOrder", "/shop.v1.Orders/ListOrders"]
        methods = ["POST"]
        allow = {{ scopes = ["access_as_user"] }}
        cors = {{ origins = ["{page_origin}"], headers = ["authorization", "content-type", "connect-protocol-version", "connect-timeout-ms", "grpc-timeout", "x-grpc-web", "x-user-agent"], expose = ["grpc-status", "grpc-message"], max_age = 60 }}

        [[routes]]
        name = "orders-ops"
        paths = ["/shop.v1.Orders/CancelOrder"]
        methods = ["POST"]
        allow = {{ authenticated = true }}
    """)


class PageHandler(SimpleHTTPRequestHandler):
    """Serves the page and its bundle; takes the page's report (POST /report)."""

    reports: queue.Queue

    def do_POST(self):
        if self.path != "/report":
            self.send_error(404)
            return
        self.reports.put(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, chromium_executable):
    folder = tmp_path_factory.mktemp("page")
    (folder / "index.html").write_text(PAGE)
    built = subprocess.run([str(ESBUILD), str(HARNESS / "browser.mjs"), "--bundle", "--format=esm",
                            f"--outfile={folder / 'bundle.js'}", "--log-level=warning"],
                           cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    reports = queue.Queue()
    handler = type("Handler", (PageHandler,), {"reports": reports})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", reports
    server.shutdown()


@pytest.fixture(scope="module")
def origin():
    running = ConnectOrigin()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(page_server, origin, tmp_path_factory):
    policies = tmp_path_factory.mktemp("cors-policies")
    (policies / "routes.toml").write_text(policy_text(page_server[0]))
    compiled = compile_policies(policies)
    with Stack(main="tests/runtime/workers/policy_from_var.py", TEST_POLICY_JSON=compiled.json_text,
               ORIGIN_URL=origin.url) as running:
        yield running


def run_page(chromium: str, url: str, reports: queue.Queue, profile: Path) -> dict:
    """Open the page in headless Chromium and wait for its report."""
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                f"--user-data-dir={profile}", url],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        report = reports.get(timeout=120)
    except queue.Empty:
        browser.kill()
        raise AssertionError(f"the page sent no report:\n{browser.communicate()[1][-3000:]}") from None
    finally:
        if browser.poll() is None:
            browser.terminate()
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
    assert "error" not in report, report["error"]
    return report


def test_a_page_on_another_origin_calls_the_gateway_preflight_and_all(stack, page_server, origin, tmp_path,
                                                                    chromium_executable):
    page, reports = page_server
    assert page.rsplit(":", 1)[1] != stack.url.rsplit(":", 1)[1]  # two origins
    token = stack.tenant.mint()
    before = len(origin.calls)
    report = run_page(chromium_executable, f"{page}/index.html?gateway={stack.url}&token={token}", reports, tmp_path / "profile")
    assert report["origin"] == page
    by_call = {(r["transport"], r["method"], r["with_token"]): r for r in report["results"]}
    for transport in ("connect", "connect-json", "grpc-web", "grpc-web-text"):
        # Allowed: the preflight was answered at the edge, the call went through with identity.
        allowed = by_call[(transport, "getOrder", True)]
        assert allowed["ok"], allowed
        seen = allowed["messages"][0]["seen"]
        assert (seen["x-entragate-user-oid"], seen["x-entragate-rule"]) == (stack.tenant.user_oid, "orders-read")
        stream = by_call[(transport, "listOrders", True)]
        assert stream["ok"] and [m.get("sequence", 0) for m in stream["messages"]] == [0, 1, 2], stream
        # Refused by the gateway: the script reads the code, not an opaque network error.
        refused = by_call[(transport, "getOrder", False)]
        assert (refused["ok"], refused["code"]) == (False, "unauthenticated"), refused
        assert "(missing_token, request " in refused["message"]
        # A route without CORS: the browser stops the call after its preflight is refused as before.
        blocked = by_call[(transport, "cancelOrder", True)]
        network_error = "http status code: 0" if transport == "grpc-web-text" else "Failed to fetch"  # XHR / fetch
        assert (blocked["ok"], blocked["code"]) == (False, "unknown") and network_error in blocked["message"], blocked
    # The origin saw the allowed calls and nothing else: no preflight, no blocked call.
    seen_by_origin = origin.calls[before:]
    assert all("call" in line for line in seen_by_origin), seen_by_origin
    assert sorted(line["call"] for line in seen_by_origin) == sorted(["GetOrder", "ListOrders"] * 4)
    # Preflights answered at the edge leave no audit line; the refused one of the route without CORS does.
    lines = stack.runner.audit_lines()
    assert not any(line["reason"] == "cors_preflight" for line in lines)
    ops = [line for line in lines if line["path"] == "/shop.v1.Orders/CancelOrder"]
    assert ops and all((line["method"], line["reason"]) == ("OPTIONS", "method_not_allowed") for line in ops), ops
