"""The Worker: wires configuration and platform adapters to the gateway, and carries out
its answer. Holds no decisions of its own."""

import json

import js
from workers import Response, WorkerEntrypoint

import platform_io
from compiled_policy import POLICY_JSON
from entragate.config import Config, ConfigError
from entragate.denials import Deny, deny
from entragate.gateway import Forward, Gateway, IncomingRequest, assemble
from entragate.policy import Policy

KV_BINDING = "JWKS_CACHE"
POLICY = Policy.from_json(json.loads(POLICY_JSON))

_gateway: Gateway | None = None


def build_gateway(env) -> Gateway:
    return assemble(
        Config.from_env(platform_io.env_getter(env)),
        POLICY,
        http=platform_io.WorkersHttp(),
        store=platform_io.KvStore(getattr(env, KV_BINDING)),
        verifier=platform_io.WebCryptoVerifier(),
        clock=platform_io.clock,
        log=platform_io.log,
    )


def _request_id(js_request) -> str:
    return platform_io.header(js_request, "cf-ray") or str(js.crypto.randomUUID())


def _response(denial: Deny) -> Response:
    return Response(denial.body, status=denial.status, headers=dict(denial.headers))


async def _forward(js_request, forward: Forward):
    init = platform_io.forward_init(js_request)
    return Response(await js.fetch(forward.url, init))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        global _gateway
        js_request = request.js_object
        request_id = _request_id(js_request)
        if _gateway is None:
            try:
                _gateway = build_gateway(self.env)
            except ConfigError as error:
                platform_io.log(f"entragate is misconfigured: {error}")
                return _response(deny(500, "gateway_misconfigured", "the gateway is misconfigured", request_id))
        outcome = await _gateway.handle(
            IncomingRequest(js_request.method, js_request.url, platform_io.header(js_request, "authorization"), request_id),
            platform_io.deferrer(self.ctx),
        )
        if isinstance(outcome, Deny):
            return _response(outcome)
        return await _forward(js_request, outcome)
