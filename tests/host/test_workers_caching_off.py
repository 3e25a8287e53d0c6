"""The project's wrangler.toml never turns on Workers Caching for the gateway (issue #13 item 10).

With `cache.enabled` (wrangler's `[cache]`, per environment, per entrypoint in `[exports]`, or
for previews), Cloudflare answers a GET or HEAD from its cache *before* invoking the Worker,
keyed on the path and query: a response the origin marked cacheable for one user would be
served to anyone, with no token checked at all (docs/ORIGIN.md, "Caching"). The gateway's own answers
are the origin's, so it cannot make that safe; the setting must stay off.
"""

import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def caching_switches(config: dict, where: str = "") -> list[tuple[str, object]]:
    """Every `cache.enabled` in a wrangler config, wherever wrangler reads one: top level,
    [env.*], [exports.*], [previews], and their combinations."""
    found = []
    cache = config.get("cache")
    if isinstance(cache, dict) and "enabled" in cache:
        found.append((f"{where}cache.enabled", cache["enabled"]))
    for table in ("env", "exports"):
        for name, value in (config.get(table) or {}).items():
            if isinstance(value, dict):
                found += caching_switches(value, f"{where}{table}.{name}.")
    if isinstance(config.get("previews"), dict):
        found += caching_switches(config["previews"], f"{where}previews.")
    return found


def test_the_project_config_leaves_workers_caching_off():
    config = tomllib.loads((PROJECT / "wrangler.toml").read_text())
    assert [where for where, enabled in caching_switches(config) if enabled is not False] == []


def test_every_place_wrangler_reads_it_from_is_looked_at():
    config = tomllib.loads("""
[cache]
enabled = true
[exports.default.cache]
enabled = true
[previews.cache]
enabled = true
[env.production.cache]
enabled = true
[env.production.exports.Admin.cache]
enabled = true
[env.staging.cache]
enabled = false
""")
    assert caching_switches(config) == [
        ("cache.enabled", True), ("env.production.cache.enabled", True),
        ("env.production.exports.Admin.cache.enabled", True), ("env.staging.cache.enabled", False),
        ("exports.default.cache.enabled", True), ("previews.cache.enabled", True),
    ]
