"""Answers the gateway gives itself (denials, errors, its own endpoints), in the client's terms.

- gRPC clients (`content-type: application/grpc…`) get a trailers-only response: HTTP 200,
  `grpc-status` (16 UNAUTHENTICATED, 7 PERMISSION_DENIED, …) and a percent-encoded
  `grpc-message`, no body, as the gRPC-over-HTTP/2 spec requires.
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

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    411: "Length Required", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# https://grpc.github.io/grpc/core/md_doc_http-grpc-status-mapping.html, read in reverse
_GRPC_STATUS = {400: 3, 401: 16, 403: 7, 500: 13, 502: 14, 503: 14, 504: 4}
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
    "origin_auth_unavailable": "The gateway cannot authenticate to the service behind it right now.",
    "origin_auth_refused": "The service behind the gateway does not accept the gateway's credentials.",
}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str  # stable reason code, also in the audit line
    headers: tuple[tuple[str, str], ...]
    body: str | None  # None: no body at all (gRPC trailers-only)
    # For the audit line of a policy denial: who was refused, by which rule.
    rule: str | None = None
    identity: Identity | None = None
    # gRPC answers are HTTP 200; the audit line carries the gRPC status that was refused with.
    grpc_status: int | None = None


def client_kind(accept: str | None, content_type: str | None) -> str:
    if content_type and content_type.lower().startswith("application/grpc"):
        return GRPC
    if accept and "text/html" in accept.lower():
        return HTML
    return JSON


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
         *, rule: str | None = None, identity: Identity | None = None) -> Answer:
    """`rule` / `identity`: for the audit line (passed in rather than added with
    dataclasses.replace, which costs more than building the answer)."""
    headers = [("cache-control", "no-store"), ("x-request-id", request_id)]
    if challenge:
        headers.append(("www-authenticate", challenge))
    message = _MESSAGES.get(code, "The request is not allowed." if status == 403 else detail)
    if kind == GRPC:
        grpc_message = quote(f"{message} ({code}, request {request_id})", safe=" ")
        grpc_status = _GRPC_STATUS.get(status, 2)
        headers += [
            ("content-type", "application/grpc"),
            ("grpc-status", str(grpc_status)),
            ("grpc-message", grpc_message),
        ]
        return Answer(200, code, tuple(headers), None, rule, identity, grpc_status)  # trailers-only: no body
    title = _TITLES.get(status, "Error")
    if kind == HTML:
        page = _page(status, title, code, message, detail, request_id, rule, identity)
        return Answer(status, code, tuple(headers + [("content-type", "text/html; charset=utf-8")]), page, rule, identity)
    body = json.dumps({
        "type": "about:blank", "title": title, "status": status,
        "error": code, "detail": detail, "request_id": request_id,
    })
    return Answer(status, code, tuple(headers + [("content-type", "application/problem+json")]), body, rule, identity)


# What a person is told about a refusal, in their terms (the reason code is shown beside it).
_PAGE_MESSAGES = {
    "condition_not_met": "Your account does not have access to this page.",
    "denied_by_rule": "Your account is not allowed to open this page.",
    "groups_overage": "Your account is in more groups than the sign-in could list, so access could not be decided.",
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


def from_error(error: GatewayError, request_id: str, kind: str = JSON, *, rule: str | None = None) -> Answer:
    return deny(error.status, error.code, error.detail, request_id, kind, _challenge(error), rule=rule)


def insufficient_scope_challenge() -> str:
    return f'Bearer realm="{REALM}", error="insufficient_scope"'
