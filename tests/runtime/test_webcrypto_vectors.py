"""The edge SignatureVerifier (WebCrypto under Pyodide) against the same vectors as the host one."""

from fixtures.pyodide import PROJECT, last_json_line, run_in_pyodide
from fixtures.rsa_vectors import all_cases, to_json


def test_webcrypto_verifier_matches_every_vector(scratch_file):
    cases = all_cases()
    scratch_file.write_text(to_json(cases))
    result = run_in_pyodide("tests/runtime/pyodide/webcrypto_vectors.py", str(scratch_file.relative_to(PROJECT)))
    assert result.returncode == 0, result.stderr[-3000:]
    verified = dict(last_json_line(result.stdout))
    assert len(verified) == len(cases)
    wrong = [(name, expected, verified[name]) for name, _, _, _, _, expected in cases if expected is not None and verified[name] != expected]
    assert wrong == []
    assert sum(1 for name, *_, expected in cases if expected and verified[name]) == sum(1 for *_, e in cases if e)
