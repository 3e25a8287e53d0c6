"""Refusals as HTTP answers: RFC 9457 problem JSON, RFC 6750 WWW-Authenticate on 401."""

import json
from dataclasses import dataclass

from .errors import CredentialError, GatewayError, InvalidToken

REALM = "entragate"


@dataclass(frozen=True, slots=True)
class Deny:
    status: int
    code: str  # stable reason code, also in the audit line
    headers: tuple[tuple[str, str], ...]
    body: str


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _quoted(text: str) -> str:
    # RFC 6750 §3: error_description uses %x20-21 / %x23-5B / %x5D-7E only.
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')


def deny(status: int, code: str, detail: str, request_id: str, extra_headers=()) -> Deny:
    body = json.dumps({
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "error": code,
        "detail": detail,
        "request_id": request_id,
    })
    headers = (
        ("content-type", "application/problem+json"),
        ("cache-control", "no-store"),
        ("x-request-id", request_id),
        *extra_headers,
    )
    return Deny(status, code, headers, body)


def from_error(error: GatewayError, request_id: str) -> Deny:
    extra = ()
    if isinstance(error, CredentialError) and error.code == "missing_token":
        extra = (("www-authenticate", f'Bearer realm="{REALM}"'),)
    elif isinstance(error, (CredentialError, InvalidToken)):
        # A credential was presented: say it was not acceptable, and why, briefly.
        challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{_quoted(error.detail)}"'
        extra = (("www-authenticate", challenge),)
    return deny(error.status, error.code, error.detail, request_id, extra)
