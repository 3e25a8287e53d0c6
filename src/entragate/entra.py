"""Calls the gateway makes to Entra as its own application: the token endpoint.

One place for the code exchange of a browser sign-in and for client-credentials tokens
(Microsoft Graph, Google workload identity federation): the client credential (client_auth.py),
the timeout, and how answers are read. The HTTP adapter (`http.post_form`) enforces the size
cap while reading and never follows redirects, like the key fetches.

Outcomes: the JSON answer; TokenRequestRefused for an OAuth error Entra gives on purpose
(`invalid_grant`, `invalid_client`, … with its AADSTS description); EntraUnavailable for
anything else (unreachable, slow, 5xx, not JSON), which callers answer as transient.
"""

from .errors import GatewayError

AUTHORIZATION_CODE = "authorization_code"
CLIENT_CREDENTIALS = "client_credentials"
MAX_DESCRIPTION_CHARS = 300


class EntraUnavailable(GatewayError):
    status = 502
    code = "entra_unavailable"


class TokenRequestRefused(Exception):
    def __init__(self, error: str, description: str):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class HttpFailure(Exception):
    """Raised by `http.post_form` when no usable answer arrived (network, timeout, size)."""


class TokenEndpoint:
    def __init__(self, http, credential, timeout: float):
        self._http = http
        self._credential = credential
        self._timeout = timeout

    async def exchange_code(self, url: str, *, code: str, redirect_uri: str, code_verifier: str) -> dict:
        return await self._request(url, {
            "grant_type": AUTHORIZATION_CODE, "code": code, "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        })

    async def client_credentials(self, url: str, scope: str) -> dict:
        return await self._request(url, {"grant_type": CLIENT_CREDENTIALS, "scope": scope})

    async def _request(self, url: str, fields: dict) -> dict:
        form = {**fields, **await self._credential.fields(url)}
        try:
            status, document = await self._http.post_form(url, form, self._timeout)
        except HttpFailure as error:
            raise EntraUnavailable(f"token endpoint: {error}") from None
        if status == 200 and isinstance(document, dict):
            return document
        if 400 <= status < 500 and isinstance(document, dict) and isinstance(document.get("error"), str):
            description = document.get("error_description")
            description = description if isinstance(description, str) else ""
            raise TokenRequestRefused(_printable(document["error"])[:64], _printable(description)[:MAX_DESCRIPTION_CHARS])
        raise EntraUnavailable(f"token endpoint answered HTTP {status}")


def _printable(text: str) -> str:
    return "".join(ch for ch in text if " " <= ch <= "~")
