"""Gateway.handle decisions that depend on the request itself, with a real compiled policy."""

import asyncio
import json
from pathlib import Path

import pytest
from entragate_tools.host_crypto import HostVerifier

from entragate.config import Config
from entragate.denials import Answer
from entragate.gateway import Forward, IncomingRequest, assemble
from entragate.policy import Policy

ROOT = Path(__file__).resolve().parents[2]


def gateway():
    text = (ROOT / "src" / "compiled_policy.py").read_text()
    namespace = {}
    exec(compile(text, "compiled_policy.py", "exec"), namespace)
    env = {"ORIGIN_URL": "https://origin.example", "ENTRA_TENANT_ID": "organizations", "ENTRA_ALLOWED_TENANTS": "*",
           "ENTRA_AUDIENCES": "api://a"}
    return assemble(Config.from_env(env.get), Policy.from_json(json.loads(namespace["POLICY_JSON"])),
                    http=None, store=None, verifier=HostVerifier(), clock=lambda: 0, log=lambda m: None)


def handle(url, method="GET"):
    request = IncomingRequest(method=method, url=url, request_id="r", header_names=())
    return asyncio.run(gateway().handle(request, lambda c: c.close()))


@pytest.mark.parametrize("host", ["a.example.com..", ".a.example.com", "a..example.com", "app.example.net.."])
def test_hosts_with_empty_labels_are_refused(host):
    result = handle(f"https://{host}/healthz")
    assert isinstance(result, Answer) and (result.status, result.code) == (400, "ambiguous_path")


@pytest.mark.parametrize("host", ["app.example.net", "app.example.net.", "APP.example.net:8443"])
def test_ordinary_hosts_reach_the_public_route(host):
    result = handle(f"https://{host}/healthz")
    assert isinstance(result, Forward) and result.url == "https://origin.example/healthz"
