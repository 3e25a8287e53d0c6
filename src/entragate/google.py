"""Google-authenticated origins: a Google-signed ID token for a private Cloud Run service,
obtained with workload identity federation from the gateway's own Entra app (issue #18). No
Google key is stored anywhere: Google trusts the Entra tenant, and the gateway proves it is
its app registration with the credential it already has (client_auth.py).

The chain, each answer kept until shortly before it expires:
1. Entra, client credentials (the certificate assertion or the secret) for ENTRA_WIF_SCOPE,
   `<Application ID URI>/.default` of the gateway's own app: an app-only access token whose
   issuer and audience the workload identity pool provider trusts.
2. Google's Security Token Service, token exchange (RFC 8693): that token as the subject token,
   for a federated access token of the pool principal `…/subject/<the token's sub>`.
3. IAM Credentials `generateIdToken` for GOOGLE_SERVICE_ACCOUNT with the origin's audience
   (Cloud Run: the service URL): an OpenID Connect ID token signed by Google, valid one hour.
   The principal needs roles/iam.workloadIdentityUser on the service account, the service
   account roles/run.invoker on the service (docs/CLOUDRUN.md).

Caching (CachedCredential): in memory per isolate; the ID tokens also in KV, sealed (AES-GCM
under a key derived from the gateway's client credential, a Worker secret: whoever can read the
KV namespace must not get a working invoker credential out of it), so a fresh isolate skips
the three round trips. A credential is refreshed REFRESH_BEFORE_EXPIRY_SECONDS before it
expires, in the background while the held one is still good; concurrent requests share one
fetch (`share`, flights.py: required in workerd); after a failure no step is asked again for
FAILURE_COOLDOWN_SECONDS. Memory: one Entra token, one federated token and one ID token per
audience; audiences come from the compiled policy and ORIGIN_AUDIENCE, so their number is
fixed by the deployment, never by requests.

Failures, nothing forwarded: OriginAuthRefused (502 `origin_auth_refused`) when Entra or
Google answer on purpose that they will not (invalid_grant, PERMISSION_DENIED: a setup
problem a retry does not fix); OriginAuthUnavailable (503 `origin_auth_unavailable`) for
everything else (unreachable, slow, 5xx, 429, an answer that makes no sense).

Where the token goes (GoogleOrigins.headers): `Authorization: Bearer <ID token>`, which Cloud
Run checks; with FORWARD_AUTHORIZATION=true the client's Authorization goes on as it came and
the ID token rides in `X-Serverless-Authorization`, which Cloud Run checks instead when both
are present, so the service still reads its caller's token where it always did. A client's own
X-Serverless-Authorization is always removed: it would be checked in place of the gateway's.
"""

import asyncio
import base64
import binascii
import hashlib
import json
import re
from urllib.parse import quote

from .client_auth import ClientCredential
from .config import Config, ConfigError
from .entra import EntraUnavailable, HttpFailure, TokenEndpoint, TokenRequestRefused
from .errors import GatewayError
from .flights import share_locally
from .sessions import Sealer, SessionKey, key_id

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AUTHORIZATION = "authorization"
SERVERLESS_AUTHORIZATION = "x-serverless-authorization"

# A credential is renewed this long before it expires: well inside every lifetime involved
# (Entra ~60-90 min, STS and ID tokens 60 min) and wider than any clock difference between
# the edge and Google that still lets a token through.
REFRESH_BEFORE_EXPIRY_SECONDS = 300
# ...and used at most until this long before it expires, while a refresh fails: a request
# still on its way to Google's front end must not arrive with an expired token.
STOP_USING_BEFORE_EXPIRY_SECONDS = 60
# After a failed fetch, the same refusal for this long without asking again: a failing Entra
# or Google is not asked once per request (each isolate asks at most once per cooldown).
FAILURE_COOLDOWN_SECONDS = 5
# A refreshed credential is not refreshed again sooner than this (one that arrives already
# inside its refresh window would otherwise be fetched on every request).
MIN_REFRESH_INTERVAL_SECONDS = 5
# Google's tokens are a few hundred bytes to ~2 KB; anything longer is not one (and the
# caches hold at most one per audience of this size).
MAX_TOKEN_CHARS = 16 * 1024
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # a token goes into a header value as it is
MAX_DETAIL_CHARS = 200
KV_PREFIX = "entragate:google-id-token:v1:"
KV_SEAL_NAME = "entragate-google-id-token"
# KV drops an entry by itself at least this many seconds after writing (its minimum TTL).
KV_MIN_TTL_SECONDS = 60


class OriginAuthUnavailable(GatewayError):
    """The origin's credential cannot be obtained right now (transient): 503."""

    status = 503
    code = "origin_auth_unavailable"


class OriginAuthRefused(GatewayError):
    """Entra or Google refused the gateway's request for the origin's credential: 502."""

    status = 502
    code = "origin_auth_refused"


def _printable(text, limit: int = MAX_DETAIL_CHARS) -> str:
    return "".join(ch for ch in str(text) if " " <= ch <= "~")[:limit]


def _token(document, member: str, step: str) -> str:
    value = document.get(member) if isinstance(document, dict) else None
    if not isinstance(value, str) or len(value) > MAX_TOKEN_CHARS or not _HEADER_SAFE.fullmatch(value):
        raise OriginAuthUnavailable(f"{step}: the answer holds no usable {member}")
    return value


def _lifetime(document, step: str) -> int:
    value = document.get("expires_in")
    if isinstance(value, str) and value.isdigit():  # Entra's v1 endpoint sends a string
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise OriginAuthUnavailable(f"{step}: the answer has no expires_in")
    return value


def jwt_expiry(token: str) -> float | None:
    """The `exp` of a compact JWS, read without verifying it: Google's own answer over TLS,
    needed only to know when to ask again (Google verifies it, not the gateway)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


async def _settled(flight) -> None:
    try:
        await flight
    except Exception:
        pass  # its waiters see the outcome


class _Held:
    __slots__ = ("value", "expires_at", "fetched_at")

    def __init__(self, value: str, expires_at: float, fetched_at: float):
        self.value, self.expires_at, self.fetched_at = value, expires_at, fetched_at


class CachedCredential:
    """One credential (a token) and how to get it again.

    `fetch(defer)` -> (token, expires_at); raises OriginAuthRefused / OriginAuthUnavailable.
    `load()` -> (token, expires_at) | None and `save(token, expires_at)`: an optional store
    shared by isolates (read once per isolate, written after the response).
    - fresh (more than REFRESH_BEFORE_EXPIRY_SECONDS left): returned at once;
    - in its refresh window but still usable: returned at once, one refresh in the background;
    - unusable or none: every request waits for the one fetch in flight;
    - after a failure: the same refusal for FAILURE_COOLDOWN_SECONDS (a still usable one is
      served meanwhile)."""

    def __init__(self, name: str, fetch, *, clock, log, share=share_locally, load=None, save=None):
        self.name = name
        self._fetch = fetch
        self._clock = clock
        self._log = log
        self._share = share
        self._load = load
        self._save = save
        self._held: _Held | None = None
        self._loaded = load is None
        self._load_flight = None
        self._inflight = None
        self._failure: GatewayError | None = None
        self._failed_until = 0.0

    def discard(self) -> None:
        """Forget the held credential (Google said it is no longer valid)."""
        self._held = None

    async def get(self, defer) -> str:
        now = self._clock()
        held = self._held
        if held is not None and now < held.expires_at - REFRESH_BEFORE_EXPIRY_SECONDS:
            return held.value
        if not self._loaded:
            await self._read_store()
            held = self._held
            now = self._clock()
            if held is not None and now < held.expires_at - REFRESH_BEFORE_EXPIRY_SECONDS:
                return held.value
        usable = held is not None and now < held.expires_at - STOP_USING_BEFORE_EXPIRY_SECONDS
        if usable:
            if self._inflight is None and now >= self._failed_until \
                    and now - held.fetched_at >= MIN_REFRESH_INTERVAL_SECONDS:
                self._start(defer)  # refreshed in the background; this request goes on now
            return held.value
        if self._inflight is None:
            if now < self._failed_until and self._failure is not None:
                raise type(self._failure)(self._failure.detail)
            self._start(defer)
        flight = self._inflight
        await flight
        return self._held.value

    def _start(self, defer) -> None:
        flight = self._share(self._fetch_and_keep(defer))
        self._inflight = flight
        defer(_settled(flight))  # finishes for the others even if its request goes away

    async def _fetch_and_keep(self, defer) -> None:
        try:
            value, expires_at = await self._fetch(defer)
            now = self._clock()
            if expires_at - now <= STOP_USING_BEFORE_EXPIRY_SECONDS:
                raise OriginAuthUnavailable(f"{self.name}: the token expires too soon to be used")
        except GatewayError as error:
            self._failure = error
            self._failed_until = self._clock() + FAILURE_COOLDOWN_SECONDS
            self._log(f"origin credential: {self.name} failed ({error.code}): {error.detail}")
            raise
        finally:
            self._inflight = None
        self._held = _Held(value, expires_at, now)
        self._failure, self._failed_until = None, 0.0
        if self._save is not None:
            defer(self._save(value, expires_at))

    async def _read_store(self) -> None:
        if self._load_flight is None:
            self._load_flight = self._share(self._load())
        try:
            stored = await self._load_flight
        except Exception as error:  # a KV outage or a bad entry: fetch instead
            self._log(f"origin credential: ignoring the stored {self.name}: {type(error).__name__}")
            stored = None
        self._loaded = True
        if stored is not None and (self._held is None or stored[1] > self._held.expires_at):
            self._held = _Held(stored[0], stored[1], self._clock())


class GoogleChain:
    """Entra token -> federated token -> ID token per audience (module docstring)."""

    def __init__(self, settings, *, entra: TokenEndpoint, token_url: str, http, clock, log, timeout: float,
                 share=share_locally, store=None, sealer=None):
        self.settings = settings
        self._entra = entra
        self._token_url = token_url
        self._http = http
        self._clock = clock
        self._log = log
        self._timeout = timeout
        self._share = share
        self._store = store
        self._sealer = sealer
        self.entra_token = CachedCredential("Entra token", self._fetch_entra_token, clock=clock, log=log, share=share)
        self.federated_token = CachedCredential("STS token exchange", self._fetch_federated_token, clock=clock,
                                                log=log, share=share)
        self.id_tokens: dict[str, CachedCredential] = {}

    async def id_token(self, audience: str, defer) -> str:
        cache = self.id_tokens.get(audience)
        if cache is None:
            kept = self._store is not None and self._sealer is not None
            cache = self.id_tokens[audience] = CachedCredential(
                "generateIdToken", lambda defer: self._fetch_id_token(audience, defer), clock=self._clock, log=self._log,
                share=self._share, load=(lambda: self._load(audience)) if kept else None,
                save=(lambda token, expires_at: self._save(audience, token, expires_at)) if kept else None,
            )
        return await cache.get(defer)

    # 1. Entra

    async def _fetch_entra_token(self, defer):
        try:
            answer = await self._entra.client_credentials(self._token_url, self.settings.entra_scope)
        except TokenRequestRefused as refused:
            raise OriginAuthRefused(f"Entra refused the token for {self.settings.entra_scope}: "
                                    f"{_printable(refused.error)}: {_printable(refused.description)}") from None
        except EntraUnavailable as error:
            raise OriginAuthUnavailable(f"Entra: {error.detail}") from None
        step = "Entra token endpoint"
        return _token(answer, "access_token", step), self._clock() + _lifetime(answer, step)

    # 2. STS

    async def _fetch_federated_token(self, defer):
        subject_token = await self.entra_token.get(defer)
        fields = {
            "grant_type": TOKEN_EXCHANGE,
            "audience": self.settings.workload_provider,
            "scope": CLOUD_PLATFORM_SCOPE,
            "requested_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "subject_token_type": TOKEN_TYPE_JWT,
            "subject_token": subject_token,
        }
        step = "Google STS"
        try:
            status, document = await self._http.post_form(self.settings.sts_url, fields, self._timeout)
        except HttpFailure as error:
            raise OriginAuthUnavailable(f"{step}: {error}") from None
        if status == 200:
            return _token(document, "access_token", step), self._clock() + _lifetime(document, step)
        error = document.get("error") if isinstance(document, dict) else None
        if status in (400, 401, 403) and isinstance(error, str):
            # invalid_grant (issuer, audience, signature, attribute condition), invalid_target
            # (no such pool or provider, or disabled), invalid_scope, unauthorized_client.
            description = document.get("error_description", "")
            raise OriginAuthRefused(f"{step} refused the token exchange: {_printable(error, 64)}: "
                                    f"{_printable(description)}")
        raise OriginAuthUnavailable(f"{step} answered HTTP {status}")

    # 3. IAM Credentials

    def id_token_url(self) -> str:
        account = quote(self.settings.service_account, safe="@")
        return f"{self.settings.iam_credentials_url}/projects/-/serviceAccounts/{account}:generateIdToken"

    async def _fetch_id_token(self, audience: str, defer):
        federated = await self.federated_token.get(defer)
        step = "IAM Credentials generateIdToken"
        try:
            status, document, _ = await self._http.post_json(
                self.id_token_url(), {"audience": audience, "includeEmail": True},
                {"authorization": f"Bearer {federated}"}, self._timeout)
        except HttpFailure as error:
            raise OriginAuthUnavailable(f"{step}: {error}") from None
        if status == 200:
            token = _token(document, "token", step)
            expires_at = jwt_expiry(token)
            if expires_at is None:
                raise OriginAuthUnavailable(f"{step}: the ID token has no exp")
            return token, expires_at
        detail = _google_error(document)
        if status == 401:
            # The federated token is no longer accepted (expired or revoked early): a new one is
            # exchanged on the next attempt.
            self.federated_token.discard()
            raise OriginAuthUnavailable(f"{step}: the federated token was not accepted: {detail}")
        if status in (400, 403, 404):
            # PERMISSION_DENIED: no roles/iam.workloadIdentityUser for the principal on the
            # service account (or no such account); INVALID_ARGUMENT: a bad audience.
            raise OriginAuthRefused(f"{step} for {self.settings.service_account} refused: {detail}")
        raise OriginAuthUnavailable(f"{step} answered HTTP {status}: {detail}")

    # KV: the ID tokens, sealed

    def _store_key(self, audience: str) -> str:
        digest = hashlib.sha256(f"{self.settings.service_account}\n{audience}".encode()).hexdigest()
        return KV_PREFIX + digest[:40]

    async def _load(self, audience: str):
        text = await asyncio.wait_for(self._store.get(self._store_key(audience)), self._timeout)
        payload = await self._sealer.open(KV_SEAL_NAME, text, self._clock()) if isinstance(text, str) else None
        if not payload or payload.get("aud") != audience or payload.get("sa") != self.settings.service_account:
            return None
        token, expires_at = payload.get("token"), payload.get("token_exp")
        if not isinstance(token, str) or not _HEADER_SAFE.fullmatch(token) or len(token) > MAX_TOKEN_CHARS \
                or not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
            return None
        return token, float(expires_at)

    async def _save(self, audience: str, token: str, expires_at: float) -> None:
        try:
            sealed = await self._sealer.seal(KV_SEAL_NAME, {
                "aud": audience, "sa": self.settings.service_account, "token": token, "token_exp": expires_at,
                # the entry opens only while the token is still worth using
                "exp": expires_at - STOP_USING_BEFORE_EXPIRY_SECONDS})
            ttl = max(KV_MIN_TTL_SECONDS, int(expires_at - self._clock()))
            await self._store.put(self._store_key(audience), sealed, ttl)
        except Exception as error:
            self._log(f"origin credential: could not keep the ID token in KV: {type(error).__name__}")


def _google_error(document) -> str:
    """`{"error": {"code", "message", "status"}}`, Google's API error shape, in one line."""
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        return f"{_printable(error.get('status', ''), 40)}: {_printable(error.get('message', ''))}"
    return "no error detail"


def kv_sealing_key(credential_material: bytes) -> bytes:
    """The AES-256 key the stored ID tokens are sealed with: derived from the gateway's client
    credential (a Worker secret), so the KV namespace alone yields nothing usable, and a new
    credential leaves old entries unreadable (they are fetched again)."""
    return hashlib.sha256(b"entragate/google-id-token-cache/v1\0" + credential_material).digest()


class GoogleOrigins:
    """What the gateway asks: does this route's origin need a Google ID token, and which
    headers carry it."""

    STRIP = (SERVERLESS_AUTHORIZATION,)  # a client's own is never passed on

    def __init__(self, chain: GoogleChain, *, forward_authorization: bool, default_audience: str | None):
        self.chain = chain
        self._header = SERVERLESS_AUTHORIZATION if forward_authorization else AUTHORIZATION
        self._default_audience = default_audience

    def audience_for(self, route) -> str | None:
        """The audience of the route's origin, or None when it needs no Google token. A route
        naming its own origin decides for itself: the default origin's token never goes to it."""
        if route.origin:
            spec = route.origin_auth
            return spec["audience"] if spec else None
        return self._default_audience

    async def headers(self, audience: str, defer) -> tuple[tuple[str, str], ...]:
        token = await self.chain.id_token(audience, defer)
        return ((self._header, f"Bearer {token}"),)


def google_origins(config: Config, policy, *, http, store, clock, log, share=share_locally,
                   platform=None) -> GoogleOrigins | None:
    """The gateway's GoogleOrigins, or None when no origin needs Google. `platform`: the RSA
    signer for a certificate credential, the cipher and random bytes that seal KV entries."""
    needed = config.origin_auth == "google" or (policy is not None and policy.has_google_origins)
    if not needed:
        return None
    settings, client = config.google, config.client
    if settings is None or client is None:
        raise ConfigError('routes with origin_auth = "google" need GOOGLE_WORKLOAD_PROVIDER, GOOGLE_SERVICE_ACCOUNT '
                          "and the gateway's Entra app (ENTRA_CLIENT_ID, ENTRA_CLIENT_CERTIFICATE or ENTRA_CLIENT_SECRET)")
    signer = getattr(platform, "rsa_signer", None)
    if client.certificate is not None and signer is None:
        raise ConfigError("a Google-authenticated origin with ENTRA_CLIENT_CERTIFICATE needs the platform's RSA signer")
    credential = ClientCredential(client.client_id, certificate=client.certificate, secret=client.secret,
                                  signer=signer, clock=clock)
    sealer = None
    if store is not None and platform is not None:
        material = client.certificate.private_key_der if client.certificate else client.secret.encode()
        secret = kv_sealing_key(material)
        sealer = Sealer(platform.cipher, (SessionKey(key_id(secret), secret),), platform.random_bytes)
    chain = GoogleChain(
        settings, entra=TokenEndpoint(http, credential, config.fetch_timeout),
        token_url=f"{config.authority}/{settings.entra_tenant}/oauth2/v2.0/token", http=http, clock=clock, log=log,
        timeout=config.fetch_timeout, share=share, store=store, sealer=sealer,
    )
    default_audience = config.origin_audience if config.origin_auth == "google" else None
    return GoogleOrigins(chain, forward_authorization=config.forward_authorization, default_audience=default_audience)
