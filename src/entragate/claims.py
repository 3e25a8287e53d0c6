"""Turn the payload of a token that has already been verified into an Identity.

Types are checked strictly: Entra never sends a string where a list belongs, so anything
else is an invalid token, never a crash and never a silently empty list.
"""

from itertools import repeat

from .errors import InvalidToken
from .identity import APP, USER, Identity


def _optional_str(claims: dict, name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidToken(f"claim {name} must be a string", "claim_type")
    return value


def _str_list(claims: dict, name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(map(isinstance, value, repeat(str))):
        raise InvalidToken(f"claim {name} must be a list of strings", "claim_type")
    return tuple(value)


def _has_groups_overage(claims: dict) -> bool:
    claim_names = claims.get("_claim_names")
    if claim_names is not None and not isinstance(claim_names, dict):
        raise InvalidToken("claim _claim_names must be an object", "claim_type")
    hasgroups = claims.get("hasgroups")
    if hasgroups is not None and not isinstance(hasgroups, bool):
        raise InvalidToken("claim hasgroups must be a boolean", "claim_type")
    return bool(claim_names and "groups" in claim_names) or hasgroups is True


def _token_kind(claims: dict, scopes: tuple[str, ...]) -> str:
    idtyp = _optional_str(claims, "idtyp")
    if idtyp is not None:
        if idtyp not in (APP, USER):
            raise InvalidToken("claim idtyp must be 'app' or 'user'", "claim_type")
        return idtyp
    # Without the optional idtyp claim, Microsoft's guidance: an app-only token has no scp
    # and its oid equals its sub (both are the service principal).
    oid, sub = claims.get("oid"), claims.get("sub")
    if not scopes and oid is not None and oid == sub:
        return APP
    return USER


def _numeric(value) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def identity_from_claims(claims: dict) -> Identity:
    scp = _optional_str(claims, "scp")
    # Scopes are separated by spaces and nothing else (RFC 6749 §3.3): str.split() would
    # also split on tabs, NBSP and other Unicode spaces, granting "b" for "a\u00a0b".
    scopes = tuple(scope for scope in scp.split(" ") if scope) if scp else ()
    # Every alternative is type-checked, not only the first one present (an `or` chain
    # would let "appid": [] through whenever azp is set).
    preferred_username = _optional_str(claims, "preferred_username")
    upn, unique_name = _optional_str(claims, "upn"), _optional_str(claims, "unique_name")
    azp, appid = _optional_str(claims, "azp"), _optional_str(claims, "appid")
    username = preferred_username or upn or unique_name
    version = _optional_str(claims, "ver") or ""
    # The client is named by the token's own version's claim (the one the validator requires).
    client_id = (appid or azp) if version == "1.0" else (azp or appid)
    aud = claims.get("aud")
    return Identity(
        oid=_optional_str(claims, "oid"),
        tid=_optional_str(claims, "tid"),
        sub=_optional_str(claims, "sub"),
        name=_optional_str(claims, "name"),
        username=username,
        groups=_str_list(claims, "groups"),
        groups_overage=_has_groups_overage(claims),
        roles=_str_list(claims, "roles"),
        scopes=scopes,
        client_id=client_id,
        kind=_token_kind(claims, scopes),
        version=version,
        issuer=_optional_str(claims, "iss") or "",
        audience=aud if isinstance(aud, str) else "",
        expires_at=_numeric(claims.get("exp")),
        not_before=max(_numeric(claims.get("nbf")), _numeric(claims.get("iat"))),
    )
