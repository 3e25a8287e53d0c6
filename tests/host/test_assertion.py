"""The signed identity assertion: key parsing, signing (host signer), the published key set.
The origin-side verifier is tested in test_assertion_verifier.py."""

import asyncio
import json

import jwt
import pytest
from entragate_tools.host_crypto import HostSigner, HostVerifier, new_assertion_key

from entragate.assertion import AssertionKeyError, assertion_claims, parse_signing_key, sign_assertion, thumbprint
from entragate.config import Config
from entragate.gateway import assemble
from entragate.identity import USER, Identity

IDENTITY = Identity(
    oid="o", tid="t", sub="s", name="N", username="u@x", groups=("g",), groups_overage=False,
    roles=("R",), scopes=("access_as_user",), client_id="c", kind=USER, version="2.0", issuer="i",
    audience="a", expires_at=0,
)


@pytest.mark.parametrize("text", ["not json", "[]", '{"kty":"RSA"}', '{"kty":"EC","crv":"P-384","x":"a","y":"b","d":"c"}',
                                  '{"kty":"EC","crv":"P-256","x":"a","y":"b"}'])
def test_bad_signing_keys_are_config_errors(text):
    with pytest.raises(AssertionKeyError):
        parse_signing_key(text)


def test_public_half_has_a_thumbprint_kid_and_no_private_part():
    private, public = parse_signing_key(new_assertion_key())
    assert "d" in private and "d" not in public
    assert public["kid"] == thumbprint(public) and public["alg"] == "ES256"


def sign(private, claims):
    return asyncio.run(sign_assertion(HostSigner(private), parse_signing_key(json.dumps(private))[1]["kid"], claims))


def test_signed_assertion_verifies_with_pyjwt_and_carries_the_identity():
    private, public = parse_signing_key(new_assertion_key())
    claims = assertion_claims(IDENTITY, ["g"], issuer="gw", audience="https://o", now=1000, request_id="r1",
                              method="GET", url="https://o/p?q=1", rule="api")
    token = sign(private, claims)
    decoded = jwt.decode(token, jwt.PyJWK(public).key, algorithms=["ES256"], audience="https://o", issuer="gw",
                         options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert decoded["htu"] == "https://o/p" and decoded["htm"] == "GET" and decoded["exp"] == 1060
    assert decoded["oid"] == "o" and decoded["groups"] == ["g"] and decoded["rule"] == "api"
    assert "hasgroups" not in decoded


def test_jwks_serves_the_current_key_and_the_published_ones():
    current = new_assertion_key()
    _, next_public = parse_signing_key(new_assertion_key())
    env = {"ORIGIN_URL": "https://o", "ENTRA_TENANT_ID": "organizations", "ENTRA_ALLOWED_TENANTS": "*",
           "ENTRA_AUDIENCES": "api://a", "ASSERTION_SIGNING_KEY": current,
           "ASSERTION_PUBLISHED_KEYS": json.dumps([next_public])}
    config = Config.from_env(env.get)
    gateway = assemble(config, None, http=None, store=None, verifier=HostVerifier(), clock=lambda: 0,
                       log=print, signer=HostSigner(config.assertion_private_jwk))
    keys = json.loads(gateway.assertion_jwks().body)["keys"]
    assert [k["kid"] for k in keys] == [config.assertion_public_jwk["kid"], next_public["kid"]]
    assert all("d" not in k for k in keys)
