"""Runs inside Pyodide: verify every case in the JSON file argv[1] (a path relative to the
project) with the edge's WebCryptoVerifier; print [[name, verified], ...] as JSON."""

import json
import sys

from platform_io import WebCryptoVerifier


async def main():
    with open(f"/app/{sys.argv[1]}") as file:
        cases = json.load(file)
    verifier = WebCryptoVerifier()
    results = []
    for case in cases:
        verified = await verifier.verify(case["alg"], case["jwk"], bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
        results.append([case["name"], verified])
    print(json.dumps(results))
