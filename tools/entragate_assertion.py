"""Verify entragate's signed identity assertion in an origin. Copy this file; it needs only
`pyjwt[crypto]`.

    from entragate_assertion import AssertionVerifier

    verifier = AssertionVerifier(
        "https://gateway.example.com/.well-known/entragate/jwks.json",
        audience="https://origin.example.com",      # the gateway's ORIGIN_URL
        issuer="entragate",                          # the gateway's ASSERTION_ISSUER
    )
    claims = verifier.verify(request.headers["x-entragate-assertion"],
                             method=request.method, path=raw_request_path)

`verify` raises `jwt.InvalidTokenError` (or a subclass) for anything but a valid assertion
made for this origin, this method and this path (the raw, still percent-encoded path the
origin received, without the query), within its 60-second life. That includes an unknown
`kid`, an empty key set and an unreachable JWKS URL, which PyJWT reports as
PyJWKClientError / PyJWKSetError: here they are refusals too, so catching InvalidTokenError
is enough.
"""

from urllib.parse import urlsplit

import jwt

HEADER = "x-entragate-assertion"
ALGORITHMS = ["ES256"]
DEFAULT_LEEWAY_SECONDS = 5
JWKS_CACHE_SECONDS = 300


class AssertionVerifier:
    def __init__(self, jwks_url: str, *, audience: str, issuer: str = "entragate", leeway: float = DEFAULT_LEEWAY_SECONDS):
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS)
        self._audience = audience.rstrip("/")
        self._issuer = issuer
        self._leeway = leeway

    def verify(self, assertion: str, *, method: str | None = None, path: str | None = None) -> dict:
        try:
            key = self._keys.get_signing_key_from_jwt(assertion)
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as error:
            raise jwt.InvalidTokenError(f"no usable key for this assertion: {error}") from None
        claims = jwt.decode(
            assertion, key, algorithms=ALGORITHMS, audience=self._audience, issuer=self._issuer,
            leeway=self._leeway, options={"require": ["exp", "iat", "iss", "aud", "htm", "htu"]},
        )
        if method is not None and claims["htm"] != method.upper():
            raise jwt.InvalidTokenError("assertion was made for another method")
        if path is not None and urlsplit(claims["htu"]).path != path.partition("?")[0]:
            raise jwt.InvalidTokenError("assertion was made for another path")
        return claims
