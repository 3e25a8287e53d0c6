"""Check a deployment's configuration offline, the way the Worker will read it (issue #17).

Variables come from where wrangler takes them, in its order of precedence: `[vars]` of
wrangler.toml (or `[env.<name>.vars]` with --env), then `.dev.vars` beside it (local runs only),
then `--var NAME:VALUE` overrides. The Worker reads them with `entragate.config.Config.from_env`,
and so does this check: every problem at once, each naming its variable.

Secrets (`wrangler secret put`) are not in any file: a secret the deployment needs is named as a
reminder, never read, never printed.
"""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from entragate.config import Config, ConfigError

# Variables that belong in secrets, never in wrangler.toml [vars] (which is committed).
SECRETS = ("ASSERTION_SIGNING_KEY", "ENTRA_CLIENT_CERTIFICATE", "ENTRA_CLIENT_SECRET", "SESSION_KEYS")


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_dev_vars(path: Path) -> dict[str, str]:
    """`.dev.vars`: dotenv lines NAME=value (quotes optional), as wrangler reads them."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace("\\n", "\n") if value[0] == '"' else value[1:-1]
        found[name.strip().removeprefix("export ").strip()] = value
    return found


def read_variables(config: Path, *, env: str | None = None, dev_vars: bool = True,
                   overrides: dict | None = None) -> tuple[dict, list[str]]:
    """(variables, where each layer came from)."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    table = data.get("vars", {}) if env is None else data.get("env", {}).get(env, {}).get("vars", {})
    variables, sources = dict(table), [f"{config.name} [vars]" if env is None else f"{config.name} [env.{env}.vars]"]
    local = config.parent / ".dev.vars"
    if dev_vars and local.is_file():
        variables.update(read_dev_vars(local))
        sources.append(".dev.vars")
    if overrides:
        variables.update(overrides)
        sources.append("--var")
    return variables, sources


def check(variables: dict, *, committed: dict | None = None, login_routes: bool = False) -> Report:
    """`committed`: the wrangler.toml [vars] table (a secret there is a problem: it is in git)."""
    report = Report()
    try:
        loaded = Config.from_env(variables.get)
    except ConfigError as error:
        report.problems.extend(error.problems)
        loaded = None
    for name in SECRETS:
        if committed and name in committed:
            report.problems.append(f"{name} is in wrangler.toml [vars], which is committed: store it with "
                                   f"`npx wrangler secret put {name}` (and .dev.vars locally) instead")
    if login_routes and loaded is not None and (loaded.client is None or loaded.sessions is None):
        missing = [name for name in ("ENTRA_CLIENT_ID", "SESSION_KEYS") if name not in variables]
        if "ENTRA_CLIENT_CERTIFICATE" not in variables and "ENTRA_CLIENT_SECRET" not in variables:
            missing.append("ENTRA_CLIENT_CERTIFICATE (or ENTRA_CLIENT_SECRET)")
        report.warnings.append(f"policies have login = true routes, which need {', '.join(missing)}: not set here; "
                               "secrets are not in any file this check reads, so make sure they are set "
                               "(`npx wrangler secret put NAME`) or the gateway answers 500 gateway_misconfigured")
    return report
