"""Validate the ID token of a browser sign-in (OIDC Core §3.1.3.7), as strictly as access tokens.

The token comes from Entra's token endpoint in exchange for the code, so OIDC would allow
trusting the TLS channel instead of the signature; it is checked in full all the same, with the
same parser, header rules and key cache as access tokens (tokens.py, keys.py):
- v2.0 only (sign-in uses the v2 endpoints), `tid` a GUID on the allow-list;
- `aud` exactly the gateway's client id (ENTRA_CLIENT_ID), `iss` the v2 issuer of `tid`;
- `nonce` exactly the one this sign-in sent (so an ID token can be used once, by the browser
  that started the flow; an access token, which never has a nonce, is refused here too);
- `exp`/`nbf`/`iat` with the configured skew; signature with a key of the v2 key set.
Claim types are read as strictly as for access tokens (claims.py).
"""

from .claims import identity_from_claims
from .config import GUID
from .credential import require_compact_jws
from .errors import InvalidToken
from .identity import Identity
from .keys import IssuerKeys
from .tokens import _check_header, _decode, verify_issuer_and_signature

VERSION = "2.0"


class IdTokenValidator:
    def __init__(self, config, keys: IssuerKeys, verifier, client_id: str):
        self._config = config
        self._keys = keys
        self._verifier = verifier
        self._client_id = client_id

    async def validate(self, token: str, nonce: str, defer) -> tuple[Identity, dict]:
        """(the Identity for the session, the claims) or InvalidToken naming the check."""
        require_compact_jws(token)
        config = self._config
        decoded = _decode(token, config.clock_skew)
        header, claims = decoded["header"], decoded["payload"]
        kid = _check_header(header, config.algorithms)
        if claims.get("ver") != VERSION:
            raise InvalidToken("ID token is not a v2.0 token", "version")
        tid = claims.get("tid")
        if not isinstance(tid, str) or not GUID.match(tid):
            raise InvalidToken("ID token has no valid tid", "tenant_id")
        if not config.tenant_allowed(tid):
            raise InvalidToken("tenant not allowed", "tenant_not_allowed")
        if claims.get("aud") != self._client_id:
            raise InvalidToken("ID token is not for this client", "audience")
        if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:
            raise InvalidToken("ID token nonce does not match this sign-in", "nonce")
        if "iat" not in claims:
            raise InvalidToken("ID token has no iat claim", "missing_claim")
        await verify_issuer_and_signature(token, decoded, kid, tid, self._keys, self._verifier, defer)
        identity = identity_from_claims(claims)
        if not identity.oid:
            raise InvalidToken("ID token has no oid", "missing_claim")
        return identity, claims
