"""The host SignatureVerifier against RFC 7515 A.2 and Wycheproof RSA PKCS#1 v1.5 vectors."""

import asyncio

from fixtures.rsa_vectors import all_cases

from entragate_tools.host_crypto import HostVerifier


def test_host_verifier_matches_every_vector():
    verifier = HostVerifier()
    cases = all_cases()
    assert len(cases) > 700  # RFC example plus five Wycheproof files

    async def check():
        return [(name, expected, await verifier.verify(alg, jwk, msg, sig)) for name, alg, jwk, msg, sig, expected in cases]

    results = asyncio.run(check())
    wrong = [(name, expected, got) for name, expected, got in results if expected is not None and got != expected]
    assert wrong == []
    assert sum(1 for _, expected, got in results if expected and got) >= 20
