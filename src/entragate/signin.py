"""Browser sign-in: OIDC authorization code flow with PKCE, sealed sessions, logout.

Only routes with `login = true` use it; every other route keeps the bearer-only behaviour.

    anonymous navigation to a login route
      -> 302 to Entra's authorize endpoint (state, nonce, PKCE S256), a sealed flow cookie
         __Host-entragate-signin-<state prefix> remembering state, nonce, verifier, return path
    GET /.well-known/entragate/callback?code&state
      -> flow cookie for that state? code exchanged at the token endpoint (as the gateway's own
         confidential client, client_auth.py), ID token validated (id_tokens.py), session
         sealed into __Host-entragate-session, 302 back to the return path (same host only)
    a request with the session cookie
      -> the session's Identity (cached per cookie value; revocation re-checked in KV at
         least every REVOCATION_CHECK_SECONDS)
    /.well-known/entragate/logout         GET: a confirm page; POST (same origin, CSRF token):
                                          revoke in KV until the session's end, clear the
                                          cookie, 302 to Entra's end-session endpoint
    /.well-known/entragate/frontchannel-logout?sid&iss   Entra ends a session: revoke its sid
    /.well-known/entragate/signed-out    where Entra sends the browser back after logout

Everything else — fetch/XHR, JSON clients, gRPC, or a session that is invalid, expired or
revoked when the request is not a navigation — keeps getting a 401 in its own terms.
Sessions carry who signed in (oid, tid, sub, name, username), the groups the policy refers to
(or the overage flag) and the app roles: no scopes and never an app identity, so a condition
on `scopes` or `kind = "app"` is never met by a session.
"""

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from .bounded import BoundedMap, strings_bytes
from .entra import TokenRequestRefused
from .errors import GatewayError, InvalidToken
from .identity import USER, Identity
from .sessions import (
    MAX_COOKIE_VALUE_BYTES, Sealer, clear_cookie, cookies, set_cookie,
)

SESSION_COOKIE = "__Host-entragate-session"
FLOW_COOKIE_PREFIX = "__Host-entragate-signin-"
FLOW_COOKIE_STATE_CHARS = 16
FLOW_LIFETIME_SECONDS = 600  # from the redirect to Entra until the callback
SCOPE = "openid profile"
CALLBACK_PATH = "/.well-known/entragate/callback"
LOGOUT_PATH = "/.well-known/entragate/logout"
FRONTCHANNEL_LOGOUT_PATH = "/.well-known/entragate/frontchannel-logout"
SIGNED_OUT_PATH = "/.well-known/entragate/signed-out"
# How long a session found not revoked is trusted from memory before KV is asked again. KV
# itself takes up to 60 s to show a write everywhere, so this adds at most as much again.
REVOCATION_CHECK_SECONDS = 30
REVOKED_PREFIX = "entragate:revoked:"
SESSION_STORE_PREFIX = "entragate:session:"
KV_MIN_TTL_SECONDS = 60  # Workers KV refuses an expiration sooner than 60 s ahead
MAX_FORM_BYTES = 4096
RANDOM_BYTES = 32
MAX_RETURN_PATH_CHARS = 2048
SESSION_CACHE_ENTRIES = 4096
SESSION_CACHE_BYTES = 8 * 1024 * 1024
# What `random_token` makes: only such a state names a flow cookie (it goes into a cookie name).
_STATE = re.compile(r"[A-Za-z0-9_-]{43}")


class SignInFailed(GatewayError):
    """The sign-in cannot complete (a state nobody started, Entra said no, the ID token is
    not acceptable): an HTML page, never a session."""

    status = 400
    code = "signin_failed"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def random_token() -> str:
    return _b64url(os.urandom(RANDOM_BYTES))


def pkce_challenge(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def is_navigation(method: str, sec_fetch_mode: str | None, accept: str | None) -> bool:
    """A person loading a page, not a script or an API client: GET/HEAD, and the browser says
    it navigates (Sec-Fetch-Mode), or — from a browser too old to say — asks for HTML."""
    if method not in ("GET", "HEAD"):
        return False
    if sec_fetch_mode:
        return sec_fetch_mode.strip().lower() == "navigate"
    return bool(accept) and "text/html" in accept.lower()


def safe_return_path(path: str | None) -> str:
    """A path on this host, or "/": never a URL another site could be reached by (an
    absolute URL, `//host`, `/\\host`, a scheme, control characters, backslashes or their
    encodings that a browser would read as one)."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_RETURN_PATH_CHARS:
        return "/"
    lowered = path.lower()
    if (path.startswith(("//", "/\\")) or "\\" in path or "%5c" in lowered or lowered.startswith(("/%2f", "/%5c"))
            or any(ch < " " or ch == "\x7f" for ch in path) or not path.isascii()):
        return "/"
    return path


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorize: str
    token: str
    end_session: str


class _CachedSession:
    __slots__ = ("identity", "payload", "revocation_key", "checked_at", "size")

    def __init__(self, identity, payload, revocation_key, checked_at):
        self.identity = identity
        self.payload = payload
        self.revocation_key = revocation_key
        self.checked_at = checked_at
        self.size = 600 + strings_bytes(tuple(v for v in payload.values() if isinstance(v, str))) \
            + strings_bytes(tuple(payload.get("groups", ()))) + strings_bytes(tuple(payload.get("roles", ())))


class SignIn:
    def __init__(self, *, client_id: str, session_lifetime: int, endpoints, entra, id_tokens, sealer: Sealer, store,
                 clock, log, policy_groups: frozenset[str], issuers):
        """`entra.exchange_code(...)`: the token response;
        `issuers(tid, defer)`: the v2 issuer the tenant's tokens carry (None if not allowed);
        `endpoints(defer)`: Entra's authorize, token and end-session endpoints."""
        self.client_id = client_id
        self.session_lifetime = session_lifetime
        self._endpoints = endpoints
        self._entra = entra
        self._id_tokens = id_tokens
        self._sealer = sealer
        self._store = store
        self._clock = clock
        self._log = log
        self._policy_groups = policy_groups
        self._issuers = issuers
        self._cache = BoundedMap(SESSION_CACHE_ENTRIES, SESSION_CACHE_BYTES)
        self._revoked: dict[str, float] = {}  # revocation keys this isolate wrote, until

    # --- who is signed in -------------------------------------------------------------------

    async def identity(self, request) -> Identity | None:
        """The session's Identity, or None: no cookie, or one that does not open, has expired
        or was revoked."""
        value = cookies(request.cookie).get(SESSION_COOKIE)
        if not value:
            return None
        now = self._clock()
        cached = self._cache.get(value)
        if cached is None:
            payload = await self._sealer.open(SESSION_COOKIE, value, now)
            if payload is None:
                return None
            if payload.get("kv"):
                stored = await self._store.get(SESSION_STORE_PREFIX + str(payload.get("sid")))
                payload = _stored_payload(stored, payload, now)
                if payload is None:
                    return None
            identity = self._session_identity(payload)
            if identity is None:
                return None
            cached = _CachedSession(identity, payload, _revocation_key(payload), 0.0)
            self._cache.put(value, cached)
        elif now >= cached.payload["exp"]:
            return None
        if self._revoked.get(cached.revocation_key, 0) > now:
            return None
        if now - cached.checked_at >= REVOCATION_CHECK_SECONDS:
            if await self._store.get(REVOKED_PREFIX + cached.revocation_key) is not None:
                self._revoked[cached.revocation_key] = cached.payload["exp"]
                return None
            cached.checked_at = now
        return cached.identity

    def _session_identity(self, payload: dict) -> Identity | None:
        try:
            return Identity(
                oid=payload["oid"], tid=payload["tid"], sub=payload.get("sub"), name=payload.get("name"),
                username=payload.get("username"), groups=tuple(payload.get("groups", ())),
                groups_overage=bool(payload.get("overage")), roles=tuple(payload.get("roles", ())), scopes=(),
                client_id=self.client_id, kind=USER, version="2.0", issuer=payload.get("iss", ""),
                audience=self.client_id, expires_at=float(payload["exp"]), not_before=float(payload["iat"]),
                auth_method="session",
            )
        except (KeyError, TypeError, ValueError):
            return None

    def session_csrf(self, request) -> str | None:
        """The CSRF token of the session `identity()` found for this request."""
        value = cookies(request.cookie).get(SESSION_COOKIE)
        cached = self._cache.get(value) if value else None
        return cached.payload.get("csrf") if cached else None

    @staticmethod
    def flow_cookie_for(query: str) -> str | None:
        state = dict(parse_qsl(query)).get("state", "")
        return FLOW_COOKIE_PREFIX + state[:FLOW_COOKIE_STATE_CHARS] if _STATE.fullmatch(state) else None

    # --- starting a sign-in -----------------------------------------------------------------

    async def begin(self, request, origin: str, return_path: str, defer, headers=()) -> tuple[int, tuple, str | None]:
        """302 to Entra, with the flow remembered in its own sealed cookie."""
        endpoints = await self._endpoints(defer)
        state, nonce, verifier = random_token(), random_token(), random_token()
        flow = {"state": state, "nonce": nonce, "verifier": verifier, "return": safe_return_path(return_path),
                "exp": int(self._clock()) + FLOW_LIFETIME_SECONDS}
        sealed = await self._sealer.seal(FLOW_COOKIE_PREFIX, flow)
        query = urlencode({
            "client_id": self.client_id, "response_type": "code", "redirect_uri": origin + CALLBACK_PATH,
            "response_mode": "query", "scope": SCOPE, "state": state, "nonce": nonce,
            "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256",
        })
        name = FLOW_COOKIE_PREFIX + state[:FLOW_COOKIE_STATE_CHARS]
        return 302, (("location", f"{endpoints.authorize}?{query}"),
                     ("set-cookie", set_cookie(name, sealed, FLOW_LIFETIME_SECONDS)), *headers), None

    # --- the callback -----------------------------------------------------------------------

    async def complete(self, request, origin: str, query: str, defer) -> tuple[str, list[str], Identity]:
        """(return path, Set-Cookie values, who signed in) for a successful callback;
        SignInFailed or EntraUnavailable otherwise (the caller clears the flow cookie)."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        state = params.get("state", "")
        if not _STATE.fullmatch(state):
            raise SignInFailed("the sign-in response names no sign-in started here")
        name = FLOW_COOKIE_PREFIX + state[:FLOW_COOKIE_STATE_CHARS]
        now = self._clock()
        flow = await self._sealer.open(FLOW_COOKIE_PREFIX, cookies(request.cookie).get(name), now)
        if flow is None or not _same(str(flow.get("state", "")), state):
            raise SignInFailed("this sign-in was not started in this browser, or it took too long")
        if "error" in params:
            raise SignInFailed(f"Entra refused the sign-in: {_printable(params['error'])}"
                               f" {_printable(params.get('error_description', ''))[:200]}".strip())
        code = params.get("code")
        if not code:
            raise SignInFailed("the sign-in response carries no code")
        endpoints = await self._endpoints(defer)
        try:
            answer = await self._entra.exchange_code(
                endpoints.token, code=code, redirect_uri=origin + CALLBACK_PATH, code_verifier=flow["verifier"])
        except TokenRequestRefused as refused:
            raise SignInFailed(f"Entra did not accept the sign-in: {refused.error} {refused.description}") from None
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str):
            raise SignInFailed("Entra's token response has no ID token")
        try:
            identity, claims = await self._id_tokens.validate(id_token, flow["nonce"], defer)
        except InvalidToken as error:
            raise SignInFailed(f"the ID token is not acceptable: {error.detail}") from None
        payload = self._session_payload(identity, claims, now)
        sealed = await self._sealer.seal(SESSION_COOKIE, payload)
        if len(sealed) > MAX_COOKIE_VALUE_BYTES:  # too much to carry: keep it in KV, the key in the cookie
            ttl = max(KV_MIN_TTL_SECONDS, payload["exp"] - int(now))
            await self._store.put(SESSION_STORE_PREFIX + payload["sid"], json.dumps(payload), ttl=ttl)
            sealed = await self._sealer.seal(SESSION_COOKIE, {"sid": payload["sid"], "exp": payload["exp"], "kv": 1})
        cookie = set_cookie(SESSION_COOKIE, sealed, payload["exp"] - int(now))
        return safe_return_path(flow.get("return")), [cookie, clear_cookie(name)], self._session_identity(payload)

    def _session_payload(self, identity: Identity, claims: dict, now: float) -> dict:
        issued = int(now)
        payload = {
            "sid": random_token(), "csrf": random_token(), "iat": issued,
            "exp": issued + self.session_lifetime, "iss": identity.issuer,
            "oid": identity.oid, "tid": identity.tid, "sub": identity.sub, "name": identity.name,
            "username": identity.username,
            # Only the groups some rule names: a session must stay small, and nothing else about
            # the user's memberships is the gateway's business.
            "groups": [group for group in identity.groups if group in self._policy_groups],
            "overage": identity.groups_overage, "roles": list(identity.roles),
        }
        idp_sid = claims.get("sid")
        if isinstance(idp_sid, str) and idp_sid:
            payload["idp_sid"] = idp_sid
        return {name: value for name, value in payload.items() if value not in (None, "", [])}

    # --- logout -----------------------------------------------------------------------------

    async def logout(self, request, origin: str, form: dict, defer) -> tuple[tuple, str | None]:
        """Revoke the session (if the CSRF token is the session's own) and send the browser to
        Entra's end-session endpoint. Raises SignInFailed for a request that is not the
        session's own form post."""
        value = cookies(request.cookie).get(SESSION_COOKIE)
        payload = await self._sealer.open(SESSION_COOKIE, value, self._clock()) if value else None
        if payload is None:
            return ((("location", origin + SIGNED_OUT_PATH),), None)
        if payload.get("kv"):
            payload = _stored_payload(await self._store.get(SESSION_STORE_PREFIX + str(payload.get("sid"))),
                                      payload, self._clock()) or payload
        if not _same(str(form.get("csrf", "")), str(payload.get("csrf", "-"))):
            raise SignInFailed("the sign-out form did not come from this session")
        await self.revoke(_revocation_key(payload), payload["exp"])
        endpoints = await self._endpoints(defer)
        query = urlencode({"post_logout_redirect_uri": origin + SIGNED_OUT_PATH, "client_id": self.client_id})
        return (("location", f"{endpoints.end_session}?{query}"), ("set-cookie", clear_cookie(SESSION_COOKIE))), None

    async def frontchannel_logout(self, query: str, defer) -> bool:
        """Entra ends a sign-in session (OIDC Front-Channel Logout 1.0): revoke every gateway
        session of that Entra session id. True when the request named an issuer we accept."""
        params = dict(parse_qsl(query))
        sid, issuer = params.get("sid", ""), params.get("iss", "")
        tid = issuer.rstrip("/").removesuffix("/v2.0").rpartition("/")[2]
        if not sid or len(sid) > 256 or not issuer or await self._issuers(tid, defer) != issuer:
            return False
        await self.revoke("idp:" + sid, int(self._clock()) + self.session_lifetime)
        return True

    async def revoke(self, key: str, until: float) -> None:
        self._revoked[key] = until
        ttl = max(KV_MIN_TTL_SECONDS, int(until - self._clock()))
        await self._store.put(REVOKED_PREFIX + key, "1", ttl=ttl)


def _same(a: str, b: str) -> bool:
    """Constant-time comparison; `hmac` is imported here, on sign-in events only, because the
    Worker's import must stay light (`secrets` would pull it in for every cold start)."""
    from hmac import compare_digest

    return compare_digest(a.encode(), b.encode())


def _revocation_key(payload: dict) -> str:
    """One key per session: the Entra session it came from, when Entra said (so Entra's
    front-channel logout reaches it), else the gateway's own session id."""
    idp_sid = payload.get("idp_sid")
    return f"idp:{idp_sid}" if idp_sid else f"sid:{payload.get('sid')}"


def _stored_payload(stored: str | None, cookie_payload: dict, now: float) -> dict | None:
    try:
        payload = json.loads(stored) if stored else None
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("sid") != cookie_payload.get("sid"):
        return None
    expires = payload.get("exp")
    return payload if isinstance(expires, (int, float)) and now < expires else None


def _printable(text: str) -> str:
    return "".join(ch for ch in str(text) if " " <= ch <= "~")


def read_form(body: bytes | None) -> dict:
    if not body or len(body) > MAX_FORM_BYTES:
        return {}
    try:
        return dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}
