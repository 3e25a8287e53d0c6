"""Answers the gateway gives itself (denials, errors, its own endpoints), in the client's terms.

- RPC clients get the status in their protocol's own form (`rpc_kind` tells them apart). The
  code is the gRPC code for the HTTP status (16 UNAUTHENTICATED, 7 PERMISSION_DENIED, 14
  UNAVAILABLE, …; Connect shares the codes, by name); the message names the reason and the
  request id.
  - gRPC (`application/grpc…`) and gRPC-Web (`application/grpc-web…`, binary and text): a
    trailers-only response, HTTP 200, `grpc-status` and a percent-encoded `grpc-message` as
    headers, no body (gRPC over HTTP/2 and PROTOCOL-WEB.md; what Connect's and grpc-web's
    clients read).
  - Connect unary (a `connect-protocol-version` header, or GET with `connect=v1`): the HTTP
    status the Connect spec gives the code (unauthenticated 401, permission_denied 403,
    unavailable 503, …) and a JSON error body `{"code": …, "message": …}`.
  - Connect streaming (`application/connect+…`): HTTP 200 and one end-of-stream message
    (flags 0x02) holding `{"error": {"code": …, "message": …}}`.
- Browsers (`Accept` naming text/html) get a short HTML page.
- Everyone else gets RFC 9457 problem JSON.
401s carry an RFC 6750 `WWW-Authenticate: Bearer` challenge (`error="invalid_token"` when a
credential was presented); a 403 caused by a missing scope carries `error="insufficient_scope"`.
Every answer carries the request id. Nothing from the request (least of all a token) is echoed.
"""

import json
from dataclasses import dataclass
from urllib.parse import quote

from . import pages
from .errors import CredentialError, GatewayError, InvalidToken
from .identity import Identity

REALM = "entragate"
JSON, HTML, GRPC = "json", "html", "grpc"
# gRPC-Web (binary proto, binary JSON, text), Connect unary, Connect streaming (proto, JSON).
GRPC_WEB, GRPC_WEB_JSON, GRPC_WEB_TEXT = "grpc-web", "grpc-web+json", "grpc-web-text"
CONNECT_UNARY, CONNECT_STREAM, CONNECT_STREAM_JSON = "connect", "connect-stream", "connect-stream+json"
# Kinds whose refusal is trailers-only (status in headers, no body).
_TRAILERS_ONLY = {
    GRPC: "application/grpc",
    GRPC_WEB: "application/grpc-web+proto",
    GRPC_WEB_JSON: "application/grpc-web+json",
    GRPC_WEB_TEXT: "application/grpc-web-text+proto",
}
_CONNECT_STREAM_TYPES = {CONNECT_STREAM: "application/connect+proto", CONNECT_STREAM_JSON: "application/connect+json"}
RPC_KINDS = frozenset({*_TRAILERS_ONLY, CONNECT_UNARY, *_CONNECT_STREAM_TYPES})

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    411: "Length Required", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# https://grpc.github.io/grpc/core/md_doc_http-grpc-status-mapping.html, read in reverse (404 and
# 501: 12 UNIMPLEMENTED)
_GRPC_STATUS = {400: 3, 401: 16, 403: 7, 404: 12, 500: 13, 501: 12, 502: 14, 503: 14, 504: 4}
# https://connectrpc.com/docs/protocol/#error-codes: the code's name, and the HTTP status a
# Connect unary error carries.
_CONNECT_CODES = {
    1: ("canceled", 499), 2: ("unknown", 500), 3: ("invalid_argument", 400), 4: ("deadline_exceeded", 504),
    5: ("not_found", 404), 6: ("already_exists", 409), 7: ("permission_denied", 403), 8: ("resource_exhausted", 429),
    9: ("failed_precondition", 400), 10: ("aborted", 409), 11: ("out_of_range", 400), 12: ("unimplemented", 501),
    13: ("internal", 500), 14: ("unavailable", 503), 15: ("data_loss", 500), 16: ("unauthenticated", 401),
}
_MESSAGES = {
    "missing_token": "A bearer token is required.",
    "invalid_token": "The bearer token is not valid.",
    "malformed_credential": "The Authorization header is not a single bearer token.",
    "keys_unavailable": "The gateway cannot check tokens right now.",
    "ambiguous_path": "The request path is ambiguous.",
    "length_required": "A GET or HEAD request's body needs a Content-Length.",
    "origin_unreachable": "The service behind the gateway could not be reached.",
    "origin_timeout": "The service behind the gateway did not answer in time.",
    "gateway_misconfigured": "The gateway is misconfigured.",
    "groups_unavailable": "Group membership cannot be checked right now; try again shortly.",
    "graph_not_consented": "The organisation has not allowed the gateway to check group membership.",
    "grpc_unsupported": "Native gRPC cannot pass through this gateway: a Cloudflare Worker cannot send the HTTP "
                        "trailers that carry every gRPC call's status. Call it with gRPC-Web or Connect.",
    "origin_auth_unavailable": "The gateway cannot authenticate to the service behind it right now.",
    "origin_auth_refused": "The service behind the gateway does not accept the gateway's credentials.",
}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str  # stable reason code, also in the audit line
    headers: tuple[tuple[str, str], ...]
    body: str | bytes | None  # None: no body at all (trailers-only); bytes: a Connect end-of-stream message
    # For the audit line of a policy denial: who was refused, by which rule.
    rule: str | None = None
    identity: Identity | None = None
    # RPC answers (gRPC, gRPC-Web, Connect): the status code they were refused with, for the
    # audit line (gRPC and Connect streaming answers are HTTP 200).
    grpc_status: int | None = None
    # Where the groups that decided came from (graph.py: token | graph | cache), for the audit line.
    groups_source: str | None = None
    # Which check refused a credential (GatewayError.cause: audience, expired, signature, ...).
    cause: str | None = None


def client_kind(accept: str | None, content_type: str | None, connect_version: str | None = None,
                method: str | None = None, url: str | None = None) -> str:
    """How to answer this client: an RPC kind (`rpc_kind`), HTML for browsers, else JSON."""
    kind = rpc_kind(content_type, connect_version, method, url)
    if kind is not None:
        return kind
    if accept and "text/html" in accept.lower():
        return HTML
    return JSON


def rpc_kind(content_type: str | None, connect_version: str | None = None, method: str | None = None,
             url: str | None = None) -> str | None:
    """The RPC protocol a request speaks, from the headers its clients always send: the
    content-type (gRPC, gRPC-Web, Connect streaming), or Connect unary's
    `connect-protocol-version` header (its content-type, application/json or /proto, is
    anyone's), or a Connect GET (`?connect=v1`). None: not an RPC call."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if media.startswith("application/grpc"):
        if media.startswith("application/grpc-web-text"):
            return GRPC_WEB_TEXT
        if media.startswith("application/grpc-web"):
            return GRPC_WEB_JSON if media.endswith("+json") else GRPC_WEB
        return GRPC
    if media.startswith("application/connect+"):
        return CONNECT_STREAM_JSON if media.endswith("+json") else CONNECT_STREAM
    if connect_version is not None and (not media or media.startswith("application/")):
        return CONNECT_UNARY
    if method == "GET" and url and "connect=v1" in url:
        query = url.partition("?")[2].partition("#")[0]
        if "connect=v1" in query.split("&"):
            return CONNECT_UNARY
    return None


def is_native_grpc(content_type: str | None) -> bool:
    """gRPC proper (HTTP/2, status in trailers), not gRPC-Web."""
    return rpc_kind(content_type) == GRPC


def _quoted(text: str) -> str:
    # RFC 6750 §3: error_description uses %x20-21 / %x23-5B / %x5D-7E only.
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')


def _challenge(error: GatewayError) -> str | None:
    if isinstance(error, CredentialError) and error.code == "missing_token":
        return f'Bearer realm="{REALM}"'
    if isinstance(error, (CredentialError, InvalidToken)):
        return f'Bearer realm="{REALM}", error="invalid_token", error_description="{_quoted(error.detail)}"'
    return None


def deny(status: int, code: str, detail: str, request_id: str, kind: str = JSON, challenge: str | None = None,
         *, rule: str | None = None, identity: Identity | None = None, retry_after: int | None = None,
         groups_source: str | None = None, cause: str | None = None) -> Answer:
    """`rule` / `identity` / `groups_source`: for the audit line (passed in rather than added
    with dataclasses.replace, which costs more than building the answer). `retry_after`:
    seconds, for a transient refusal (RFC 9110 Retry-After)."""
    headers = [("cache-control", "no-store"), ("x-request-id", request_id)]
    if challenge:
        headers.append(("www-authenticate", challenge))
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    message = _MESSAGES.get(code, "The request is not allowed." if status == 403 else detail)
    if kind in RPC_KINDS:
        return _rpc_answer(kind, status, code, f"{message} ({code}, request {request_id})", headers, rule, identity,
                           groups_source, cause)
    title = _TITLES.get(status, "Error")
    if kind == HTML:
        page = _page(status, title, code, message, detail, request_id, rule, identity)
        return Answer(status, code, tuple(headers + [("content-type", "text/html; charset=utf-8")]), page, rule, identity,
                      groups_source=groups_source, cause=cause)
    body = json.dumps({
        "type": "about:blank", "title": title, "status": status,
        "error": code, "detail": detail, "request_id": request_id,
    })
    return Answer(status, code, tuple(headers + [("content-type", "application/problem+json")]), body, rule, identity,
                  groups_source=groups_source, cause=cause)


def _rpc_answer(kind: str, status: int, code: str, message: str, headers: list, rule, identity, groups_source,
                cause) -> Answer:
    grpc_status = _GRPC_STATUS.get(status, 2)
    content_type = _TRAILERS_ONLY.get(kind)
    if content_type is not None:  # trailers-only: no body
        headers += [("content-type", content_type), ("grpc-status", str(grpc_status)),
                    ("grpc-message", quote(message, safe=" "))]
        return Answer(200, code, tuple(headers), None, rule, identity, grpc_status, groups_source, cause)
    name, connect_status = _CONNECT_CODES[grpc_status]
    error = {"code": name, "message": message}
    if kind == CONNECT_UNARY:
        headers.append(("content-type", "application/json"))
        return Answer(connect_status, code, tuple(headers), json.dumps(error), rule, identity, grpc_status,
                      groups_source, cause)
    headers.append(("content-type", _CONNECT_STREAM_TYPES[kind]))
    return Answer(200, code, tuple(headers), end_stream_message(error), rule, identity, grpc_status,
                  groups_source, cause)


def end_stream_message(error: dict) -> bytes:
    """A Connect streaming response's last message: flags 0x02 (end of stream), a 32-bit
    big-endian length, and JSON (whatever the codec) holding the error."""
    payload = json.dumps({"error": error}).encode()
    return b"\x02" + len(payload).to_bytes(4, "big") + payload


# What a person is told about a refusal, in their terms (the reason code is shown beside it).
_PAGE_MESSAGES = {
    "condition_not_met": "Your account does not have access to this page.",
    "denied_by_rule": "Your account is not allowed to open this page.",
    "groups_overage": "Your account is in more groups than the sign-in could list, so access could not be decided.",
    "groups_unavailable": "Your group memberships could not be checked just now. Please try again in a minute.",
    "graph_not_consented": "Your organisation has not allowed this gateway to check group memberships. "
                           "An administrator of your organisation has to grant it consent.",
    "insufficient_scope": "The sign-in does not grant the permission this page needs.",
    "no_route": "There is nothing here for this request.",
    "method_not_allowed": "This kind of request is not allowed here.",
    "signin_failed": "Signing in did not work.",
    "entra_unavailable": "Microsoft Entra could not be reached to finish signing in. Please try again in a minute.",
    "cross_site_logout": "Sign-out has to start from this site.",
}
# Details worth showing a person: what went wrong with their sign-in, in the gateway's words.
_PAGE_DETAILS = frozenset({"signin_failed"})


def _page(status, title, code, message, detail, request_id, rule, identity) -> str:
    who = pages.signed_in_as(identity.name, identity.username) if identity is not None and identity.auth_method == "session" else None
    text = _PAGE_MESSAGES.get(code, message)
    details = f"<p>{pages.escape(detail)}</p>" if code in _PAGE_DETAILS and detail else ""
    details += f"<p>Reason: <code>{pages.escape(code)}</code></p>"
    if rule and pages.show_rules():
        details += f"<p>Rule: <code>{pages.escape(rule)}</code></p>"
    actions = ""
    if who:
        actions = pages.link("/.well-known/entragate/logout", "Sign in as someone else", secondary=True)
    elif status == 401 or code in ("signin_failed",):
        actions = pages.link("/", "Go to the start page")
    return pages.render(status=status, title=f"{status} {title}", message=text, request_id=request_id, who=who,
                        actions=actions, details=details)


def from_error(error: GatewayError, request_id: str, kind: str = JSON, *, rule: str | None = None,
               identity: Identity | None = None, groups_source: str | None = None) -> Answer:
    return deny(error.status, error.code, error.detail, request_id, kind, _challenge(error), rule=rule, identity=identity,
                retry_after=getattr(error, "retry_after", None), groups_source=groups_source, cause=error.cause)


def insufficient_scope_challenge() -> str:
    return f'Bearer realm="{REALM}", error="insufficient_scope"'
