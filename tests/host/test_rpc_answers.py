"""Refusals in each RPC protocol's own form (denials.py), and native gRPC that policy allows
(answered 12 UNIMPLEMENTED: a Worker cannot relay it). The same answers reach real clients in
tests/runtime/test_grpc.py."""

import json

import pytest
from fixtures.host_gateway import gateway_answer

from entragate.denials import (
    CONNECT_STREAM, CONNECT_STREAM_JSON, CONNECT_UNARY, GRPC, GRPC_WEB, GRPC_WEB_JSON, GRPC_WEB_TEXT, HTML, JSON,
    client_kind, deny, is_native_grpc,
)
from entragate.gateway import Forward


@pytest.mark.parametrize("content_type, connect, method, url, kind", [
    ("application/grpc", None, "POST", "", GRPC),
    ("application/grpc+proto", None, "POST", "", GRPC),
    ("Application/GRPC+json; charset=utf-8", None, "POST", "", GRPC),
    ("application/grpc-web", None, "POST", "", GRPC_WEB),
    ("application/grpc-web+proto", None, "POST", "", GRPC_WEB),
    ("application/grpc-web+json", None, "POST", "", GRPC_WEB_JSON),
    ("application/grpc-web-text", None, "POST", "", GRPC_WEB_TEXT),
    ("application/grpc-web-text+proto", None, "POST", "", GRPC_WEB_TEXT),
    ("application/connect+proto", None, "POST", "", CONNECT_STREAM),
    ("application/connect+json", "1", "POST", "", CONNECT_STREAM_JSON),
    ("application/json", "1", "POST", "", CONNECT_UNARY),
    ("application/proto", "1", "POST", "", CONNECT_UNARY),
    (None, None, "GET", "https://h/x.Y/Z?connect=v1&encoding=json&message=%7B%7D", CONNECT_UNARY),
    (None, None, "GET", "https://h/x.Y/Z?encoding=json&connect=v1", CONNECT_UNARY),
    (None, None, "GET", "https://h/x.Y/Z?connect=v10", JSON),
    (None, None, "POST", "https://h/x.Y/Z?connect=v1", JSON),
    ("application/json", None, "POST", "", JSON),  # a JSON API call, not Connect
    ("text/plain", "1", "POST", "", JSON),
])
def test_protocols_are_told_apart_by_the_headers_their_clients_always_send(content_type, connect, method, url, kind):
    assert client_kind(None, content_type, connect, method, url) == kind
    assert is_native_grpc(content_type) is (kind == GRPC)


def test_browsers_and_json_clients_are_unchanged():
    assert client_kind("text/html", None) == HTML and client_kind(None, None) == JSON


@pytest.mark.parametrize("status, grpc_status, connect_code, connect_status", [
    (400, 3, "invalid_argument", 400), (401, 16, "unauthenticated", 401), (403, 7, "permission_denied", 403),
    (500, 13, "internal", 500), (502, 14, "unavailable", 503), (503, 14, "unavailable", 503),
    (504, 4, "deadline_exceeded", 504), (501, 12, "unimplemented", 501), (418, 2, "unknown", 500),
])
def test_each_protocol_gets_the_code_in_its_own_form(status, grpc_status, connect_code, connect_status):
    for kind, content_type in ((GRPC, "application/grpc"), (GRPC_WEB, "application/grpc-web+proto"),
                               (GRPC_WEB_JSON, "application/grpc-web+json"),
                               (GRPC_WEB_TEXT, "application/grpc-web-text+proto")):
        answer = deny(status, "some_reason", "detail", "req-1", kind)
        headers = dict(answer.headers)
        assert (answer.status, answer.body, answer.grpc_status) == (200, None, grpc_status)
        assert (headers["content-type"], headers["grpc-status"]) == (content_type, str(grpc_status))
        assert "some_reason" in headers["grpc-message"] and "req-1" in headers["grpc-message"]
    unary = deny(status, "some_reason", "detail", "req-1", CONNECT_UNARY)
    error = json.loads(unary.body)
    assert (unary.status, dict(unary.headers)["content-type"], unary.grpc_status) == (connect_status, "application/json",
                                                                                     grpc_status)
    assert error["code"] == connect_code and "(some_reason, request req-1)" in error["message"]
    for kind, content_type in ((CONNECT_STREAM, "application/connect+proto"),
                               (CONNECT_STREAM_JSON, "application/connect+json")):
        stream = deny(status, "some_reason", "detail", "req-1", kind)
        body = stream.body
        assert (stream.status, dict(stream.headers)["content-type"]) == (200, content_type)
        assert body[0] == 0x02 and int.from_bytes(body[1:5], "big") == len(body) - 5
        assert json.loads(body[5:])["error"]["code"] == connect_code


def test_the_challenge_and_request_id_stay_on_every_protocols_answer():
    answer = deny(401, "missing_token", "no bearer token", "req-9", CONNECT_UNARY, 'Bearer realm="entragate"')
    headers = dict(answer.headers)
    assert headers["www-authenticate"] == 'Bearer realm="entragate"' and headers["x-request-id"] == "req-9"
    assert headers["cache-control"] == "no-store"


def test_allowed_native_grpc_is_answered_unimplemented(tmp_path):
    (tmp_path / "p.toml").write_text('[[routes]]\nname = "open"\npaths = ["/**"]\npublic = true\n')
    from entragate.gateway import IncomingRequest
    from fixtures.host_gateway import host_gateway
    import asyncio

    gateway = host_gateway(tmp_path)
    for content_type, forwarded in (("application/grpc+proto", False), ("application/grpc-web+proto", True),
                                    ("application/connect+json", True), (None, True)):
        request = IncomingRequest(method="POST", url="https://h.example/pkg.Svc/Call", request_id="r",
                                  header_names=(), content_type=content_type)
        result = asyncio.run(gateway.handle(request, lambda coroutine: coroutine.close()))
        assert isinstance(result, Forward) is forwarded, content_type
        if not forwarded:
            headers = dict(result.headers)
            assert (result.status, result.code, result.grpc_status, result.rule) == (200, "grpc_unsupported", 12, "open")
            assert headers["grpc-status"] == "12" and "gRPC-Web%20or%20Connect" not in headers["grpc-message"]
            assert "gRPC-Web or Connect" in headers["grpc-message"]


def test_refused_native_grpc_keeps_its_code():
    answer = gateway_answer("https://app.example.net/shop.v1.Orders/GetOrder", method="POST")
    assert (answer.status, answer.code) == (401, "missing_token")  # no content-type here: problem JSON
