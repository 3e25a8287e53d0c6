"""Who made the request: the claims of a validated Entra access token that later steps use."""

from dataclasses import dataclass

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
