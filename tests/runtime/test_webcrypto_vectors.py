"""The edge SignatureVerifier (workerd's WebCrypto) against the same vectors as the host one."""

import json

from fixtures.rsa_vectors import all_cases, to_json


def test_webcrypto_verifier_matches_every_vector(edge_checks):
    cases = all_cases()
    verified = dict(edge_checks.run("webcrypto_vectors", json.loads(to_json(cases))))
    assert len(verified) == len(cases)
    wrong = [(name, expected, verified[name]) for name, _, _, _, _, expected in cases if expected is not None and verified[name] != expected]
    assert wrong == []
    assert sum(1 for name, *_, expected in cases if expected and verified[name]) == sum(1 for *_, e in cases if e)
