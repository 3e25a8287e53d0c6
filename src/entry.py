"""The Worker: wires configuration and platform adapters to the gateway, carries out its
answer, and writes the audit line. Holds no decisions of its own."""

import json

import js
from workers import Response, WorkerEntrypoint

import platform_io
from compiled_policy import POLICY_JSON
from entragate.config import Config, ConfigError
from entragate.denials import Answer
from entragate.gateway import (
    Forward, Gateway, IncomingRequest, assemble, decision_audit_line, internal_error, misconfigured, origin_failure,
)
from entragate.policy import Policy
from entragate.upstream import referenced_groups

KV_BINDING = "JWKS_CACHE"
POLICY_DATA = json.loads(POLICY_JSON)
POLICY = Policy.from_json(POLICY_DATA)

_gateway: Gateway | None = None


def build_gateway(env) -> Gateway:
    config = Config.from_env(platform_io.env_getter(env))
    kv = getattr(env, KV_BINDING, None)
    if kv is None:
        raise ConfigError(f"no KV namespace bound as {KV_BINDING} (wrangler.toml [[kv_namespaces]])")
    signer = platform_io.WebCryptoSigner(config.assertion_private_jwk) if config.assertion_private_jwk else None
    return assemble(
        config,
        POLICY,
        http=platform_io.WorkersHttp(),
        store=platform_io.KvStore(kv),
        verifier=platform_io.WebCryptoVerifier(),
        clock=platform_io.clock,
        log=platform_io.log,
        policy_groups=referenced_groups(POLICY_DATA),
        signer=signer,
        share=platform_io.share,
        # Sign-in, Graph lookups and Google-authenticated origins sign as the gateway's app (a
        # certificate credential with WebCrypto) and seal what they keep.
        platform=platform_io.SignInPlatform() if POLICY.has_login_routes or config.graph or config.google else None,
    )


def _response(answer: Answer) -> Response:
    # A list, not a dict: an answer may set several cookies.
    return Response(answer.body, status=answer.status, headers=list(answer.headers))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        global _gateway
        started = platform_io.clock()
        js_request = request.js_object
        headers = platform_io.request_headers(js_request)
        request_id = headers.get("cf-ray") or str(js.crypto.randomUUID())
        incoming = IncomingRequest(
            method=js_request.method,
            url=js_request.url,
            request_id=request_id,
            header_names=tuple(headers),
            authorization=headers.get("authorization"),
            accept=headers.get("accept"),
            content_type=headers.get("content-type"),
            cookie=headers.get("cookie"),
            sec_fetch_mode=headers.get("sec-fetch-mode"),
            sec_fetch_site=headers.get("sec-fetch-site"),
            origin=headers.get("origin"),
            read_body=lambda limit: platform_io.read_capped(js_request.body, limit),
            connection=headers.get("connection"),
            upgrade=headers.get("upgrade"),
            body_without_length=bool(js_request.body) and "content-length" not in headers,
            connect_version=headers.get("connect-protocol-version"),
            cors_method=headers.get("access-control-request-method"),
            cors_headers=headers.get("access-control-request-headers"),
        )
        if _gateway is None:
            try:
                _gateway = build_gateway(self.env)
            except ConfigError as error:
                platform_io.log(f"entragate is misconfigured: {error}")
                answer = misconfigured(incoming, error.problems)
                if answer.code != "health":  # the gateway's own endpoint: not a decision, not audited
                    latency_ms = (platform_io.clock() - started) * 1000
                    platform_io.emit(decision_audit_line(incoming, answer, answer.status, latency_ms, platform_io.clock()))
                return _response(answer)

        result = await _gateway.handle(incoming, platform_io.deferrer(self.ctx))
        failure = None
        if isinstance(result, Forward):
            try:
                js_response = await platform_io.forward(js_request, result.url, result.strip, result.add, _gateway.config.origin_timeout)
                relayed = platform_io.with_request_id(js_response, request_id)
                if result.cors is not None:
                    relayed = platform_io.with_cors(relayed, result.cors.response_headers(incoming.origin))
                response = Response(relayed)
                status = js_response.status
            except (platform_io.OriginTimeout, platform_io.OriginUnreachable) as error:
                failure = origin_failure(incoming, isinstance(error, platform_io.OriginTimeout), result.cors)
            except Exception as error:  # a bug in forwarding: answered and audited like one in the core
                platform_io.log(f"internal error (request {request_id}): {type(error).__name__}: {error}")
                failure = internal_error(incoming)
            if failure is not None:
                response, status = _response(failure), failure.status
        else:
            await platform_io.drain_body(js_request)
            response, status = _response(result), result.status
        line = _gateway.audit(incoming, result, status, (platform_io.clock() - started) * 1000, failure)
        if line:
            platform_io.emit(line)
        return response
