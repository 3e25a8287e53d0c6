"""One JSON line per decision, written to the Workers console (Workers Logs / Logpush).

Fields: time, request_id, method, host, path (without the query, which may carry secrets),
rule, decision (allow | deny | signin: the gateway's own sign-in and sign-out events), reason,
status (the HTTP status sent; gRPC denials are HTTP 200, so their line also has grpc_status),
oid, tid, client_id, token_kind, latency_ms; groups_source (token | graph | cache) when the
route's rule tests groups (graph.py); and `cause` when a credential was refused: which check
refused it, as a stable code (errors.CAUSES), never anything from the token.
Never a token, a signature or any other header value. Denials are always logged; allowed
requests are logged with probability AUDIT_ALLOW_SAMPLE_RATE.
"""

import json
import time

from .identity import Identity


def audit_line(*, now: float, request_id: str, method: str, host: str | None, path: str, rule: str | None,
               decision: str, reason: str, status: int, identity: Identity | None, latency_ms: float,
               grpc_status: int | None = None, groups_source: str | None = None, cause: str | None = None) -> str:
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
        "request_id": request_id,
        "method": method,
        "host": host,
        "path": path,
        "rule": rule,
        "decision": decision,
        "reason": reason,
        "status": status,
        "oid": identity.oid if identity else None,
        "tid": identity.tid if identity else None,
        "client_id": identity.client_id if identity else None,
        "token_kind": identity.kind if identity else None,
        "latency_ms": round(latency_ms, 3),
    }
    if grpc_status is not None:
        record["grpc_status"] = grpc_status
    if groups_source is not None:
        record["groups_source"] = groups_source
    if cause is not None:
        record["cause"] = cause
    return json.dumps(record, separators=(",", ":"))
