"""Who made the request: the claims of a validated Entra access token that later steps use."""

from dataclasses import dataclass

from .bounded import strings_bytes

USER = "user"
APP = "app"


@dataclass(frozen=True, slots=True)
class Identity:
    oid: str | None
    tid: str | None
    sub: str | None
    name: str | None
    # preferred_username (v2), else upn / unique_name (v1)
    username: str | None
    groups: tuple[str, ...]
    # True when Entra left groups out because there were too many (_claim_names.groups / hasgroups).
    # Distinct from an empty `groups`, which means "member of none that are emitted".
    groups_overage: bool
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    # azp (v2) or appid (v1): the client application that asked for the token
    client_id: str | None
    # USER or APP (app-only tokens: idtyp=app, or no scp and oid == sub)
    kind: str
    version: str
    issuer: str
    audience: str
    expires_at: float  # exp
    not_before: float = 0.0  # the later of nbf and iat (0 if neither)
    # How the caller proved it: "bearer" (an access token) or "session" (browser sign-in).
    auth_method: str = "bearer"


# The Identity object itself (17 slots), its three tuples and two floats, beside its strings
# (bounded.py: CPython 64-bit sizes; tests/host/test_memory.py checks them with tracemalloc).
IDENTITY_OVERHEAD_BYTES = 400


def estimated_bytes(identity: Identity) -> int:
    """What holding this Identity costs, estimated from its strings (`kind` is a shared constant)."""
    scalars = tuple(value for value in (
        identity.oid, identity.tid, identity.sub, identity.name, identity.username, identity.client_id,
        identity.version, identity.issuer, identity.audience,
    ) if value)
    return (IDENTITY_OVERHEAD_BYTES + strings_bytes(scalars) + strings_bytes(identity.groups)
            + strings_bytes(identity.roles) + strings_bytes(identity.scopes))
