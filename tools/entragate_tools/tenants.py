"""Multi-tenant deployments and the grants each tenant controls (issue #13, item 12).

With `ENTRA_TENANT_ID = "organizations"` (or `"common"`) the gateway accepts tokens from every
tenant on `ENTRA_ALLOWED_TENANTS`. App roles and delegated scopes are not granted by the API's
owner there: each tenant's own administrators assign the app's roles to their users and apps
and consent to its scopes. A route that allows on `roles` or `scopes` without also requiring
one of `tenants` is therefore open to whoever an administrator of any accepted tenant
chooses. (`groups` and `users` name object ids, which exist in one tenant only.)

`check` learns whether the deployment is multi-tenant from wrangler.toml: `[vars]` and every
`[env.<name>.vars]` (a value set only as a secret or with --var is not seen).
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

MULTI_TENANT_IDS = frozenset({"organizations", "common"})
GRANTED_BY_TENANTS = ("roles", "scopes")


class DeploymentError(Exception):
    pass


@dataclass(frozen=True)
class Deployment:
    where: str  # "wrangler.toml [vars]", "wrangler.toml [env.production.vars]"
    tenant: str  # ENTRA_TENANT_ID as written, "" when not set there
    allowed: tuple  # ENTRA_ALLOWED_TENANTS, lower-cased
    variables: frozenset = frozenset()  # every variable set there (google_check.py reads it)

    @property
    def multi_tenant(self) -> bool:
        """Tokens from more than one tenant can pass (one allowed tenant is a single tenant)."""
        if self.tenant.strip().lower() not in MULTI_TENANT_IDS:
            return False
        return len(self.allowed) != 1 or self.allowed[0] == "*"

    def describe(self) -> str:
        allowed = ",".join(self.allowed) or "(not set)"
        return f'{self.where} accepts several tenants (ENTRA_TENANT_ID = "{self.tenant}", ENTRA_ALLOWED_TENANTS = "{allowed}")'


def _deployment(where: str, table) -> Deployment | None:
    if not isinstance(table, dict) or "ENTRA_TENANT_ID" not in table:
        return None
    allowed = table.get("ENTRA_ALLOWED_TENANTS", "")
    items = tuple(item.strip().lower() for item in str(allowed).split(",") if item.strip())
    return Deployment(where, str(table["ENTRA_TENANT_ID"]), items, frozenset(table))


def read_deployments(path: Path) -> list:
    """The deployments a wrangler.toml describes: its [vars], then each [env.<name>.vars]."""
    label = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentError(f"{path}: TOML syntax: {exc}") from None
    found = [_deployment(f"{label} [vars]", data.get("vars"))]
    envs = data.get("env")
    if isinstance(envs, dict):
        found += [_deployment(f"{label} [env.{name}.vars]", env.get("vars")) for name, env in sorted(envs.items())
                  if isinstance(env, dict)]
    return [d for d in found if d is not None]


def pins_tenants(cond) -> bool:
    """Does every way `cond` (compiled COND) can hold require a `tenants` test to hold?"""
    op = cond[0]
    if op == "tenants":
        return True
    if op == "all":
        return any(pins_tenants(part) for part in cond[1])
    if op == "any":
        return all(pins_tenants(part) for part in cond[1])
    return False


def refuses_other_tenants(cond) -> bool:
    """Does a deny `cond` hold for every token whose tenant is outside some list?"""
    op = cond[0]
    if op == "not":
        return pins_tenants(cond[1])
    if op == "any":
        return any(refuses_other_tenants(part) for part in cond[1])
    if op == "all":
        return all(refuses_other_tenants(part) for part in cond[1])
    return False


def _grants(cond, out: set) -> set:
    op = cond[0]
    if op in GRANTED_BY_TENANTS:
        out.add(op)
    elif op in ("any", "all"):
        for part in cond[1]:
            _grants(part, out)
    elif op == "not":
        _grants(cond[1], out)
    return out


def grant_warnings(routes_json: list, ctxs: list, deployments: list) -> list:
    multi = [d for d in deployments if d.multi_tenant]
    if not multi:
        return []
    out = []
    for item, ctx in zip(routes_json, ctxs):
        allow = item["allow"]
        if allow is None or pins_tenants(allow) or (item["deny"] is not None and refuses_other_tenants(item["deny"])):
            continue
        grants = sorted(_grants(allow, set()))
        if not grants:
            continue
        out.append(ctx.diagnostic(
            "warning", ("allow",),
            f"allows on {' and '.join(grants)} without pinning tenants, and {multi[0].describe()}: each "
            f"tenant's own administrators assign app roles and consent to scopes, so an administrator of any "
            f"accepted tenant can open this route. Require your tenant next to the grant, e.g. "
            f"allow = {{ tenants = [\"home\"], {grants[0]} = [...] }}",
        ))
    return out
