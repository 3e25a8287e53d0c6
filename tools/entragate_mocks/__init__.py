"""Stand-ins for what the gateway talks to, served on 127.0.0.1: a mock Microsoft Entra ID tenant
(mock_entra, with browser sign-in in mock_entra_signin), an echo origin (echo_origin), Microsoft
Graph (mock_graph) and Google's STS / IAM Credentials with a Cloud Run front end (mock_google).

Used by `make demo`, `make token` and the tests; build-time and host-side only, like
entragate_tools: never imported by the edge (src/), never in the Worker's bundle. Each module
with a `main` also runs as a script: `uv run python tools/entragate_mocks/mock_entra.py --help`.
"""
