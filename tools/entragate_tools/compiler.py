"""Validate policies/*.toml and compile them into the JSON the edge loads with Policy.from_json.

Every problem is reported as a Diagnostic naming the file, the line when it can be found
cheaply, the location (`routes[2] "api-write" .allow.groups[0]`) and what is wrong. All files
are checked before giving up, so one run lists every error.
"""

import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from entragate.policy import FORMAT, Policy, split_pattern

from .schema import PolicyFile, Route, is_guid

ALIAS_KINDS = ("groups", "users", "clients", "tenants")
_VALUE_FIELDS = ("groups", "roles", "scopes", "clients", "tenants", "users")


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning"
    file: str
    where: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        where = f" {self.where}:" if self.where else ""
        return f"{place}: {self.severity}:{where} {self.message}"


class PolicyError(Exception):
    def __init__(self, errors: list, warnings: list | None = None):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
        self.warnings = warnings or []


@dataclass
class Compiled:
    data: dict
    json_text: str
    version: str
    policy: Policy
    files: list
    warnings: list = field(default_factory=list)
    aliases: dict = field(default_factory=dict)  # kind -> {alias: [guid, ...]}

    def alias_names(self) -> dict:
        """GUID -> alias name, for readable explanations."""
        names = {}
        for table in self.aliases.values():
            for alias, guids in table.items():
                for guid in guids:
                    names.setdefault(guid, alias)
        return names


# ---------------------------------------------------------------- locations and line numbers


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += ("." if out else "") + str(part)
    return out


class LineFinder:
    """Cheap line lookup in TOML text: `[[routes]]` headers, alias tables, `key =` lines."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.route_starts = [
            i for i, line in enumerate(self.lines) if re.match(r"\s*\[\[\s*routes\s*\]\]", line)
        ]

    def _table(self, name: str) -> int | None:
        for i, line in enumerate(self.lines):
            if re.match(rf"\s*\[\s*{re.escape(name)}\s*\]", line):
                return i
        return None

    def _key(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(
            rf"\s*(\"?{re.escape(key)}\"?\s*=|\[\s*routes\s*\.\s*{re.escape(key)}\b)"
        )
        for i in range(start, min(end, len(self.lines))):
            if pattern.match(self.lines[i]):
                return i
        return None

    def find(self, loc: tuple) -> int | None:
        if not loc:
            return None
        if loc[0] == "routes" and len(loc) > 1 and isinstance(loc[1], int):
            if loc[1] >= len(self.route_starts):
                return None
            start = self.route_starts[loc[1]]
            end = self.route_starts[loc[1] + 1] if loc[1] + 1 < len(self.route_starts) else len(self.lines)
            keys = [p for p in loc[2:] if isinstance(p, str)]
            found = self._key(keys[0], start, end) if keys else None
            return (found if found is not None else start) + 1
        if loc[0] in ALIAS_KINDS:
            start = self._table(loc[0])
            if start is None:
                return None
            if len(loc) > 1 and isinstance(loc[1], str):
                found = self._key(loc[1], start + 1, len(self.lines))
                if found is not None:
                    return found + 1
            return start + 1
        return None


def _route_label(raw: dict, index: int) -> str:
    routes = raw.get("routes") if isinstance(raw, dict) else None
    name = None
    if isinstance(routes, list) and index < len(routes) and isinstance(routes[index], dict):
        name = routes[index].get("name")
    return f'routes[{index}] "{name}"' if isinstance(name, str) else f"routes[{index}]"


def describe_loc(raw: dict, loc: tuple) -> str:
    """routes[2] "api-write" .allow.groups[0]"""
    if len(loc) > 1 and loc[0] == "routes" and isinstance(loc[1], int):
        rest = format_loc(loc[2:])
        return _route_label(raw, loc[1]) + (f" .{rest}" if rest else "")
    return format_loc(loc)


_KNOWN_KEYS = {
    "routes": set(Route.model_fields),
    "cond": {"authenticated", "groups", "roles", "scopes", "clients", "tenants", "users", "kind", "any", "all", "not"},
    "file": {"groups", "users", "clients", "tenants", "routes"},
}


def _message(err: dict) -> str:
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        if len(loc) == 1:
            known = _KNOWN_KEYS["file"]
        elif len(loc) == 3 and loc[0] == "routes":
            known = _KNOWN_KEYS["routes"]
        else:
            known = _KNOWN_KEYS["cond"]
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
        return f"unknown key {key!r}{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        return f"missing required key {loc[-1]!r}" if loc else msg
    value = err.get("input")
    if err["type"].endswith("_type") and not isinstance(value, (dict, list)):
        msg += f" (got {type(value).__name__} {value!r})"
    return msg


def validation_diagnostics(file: str, text: str, raw: dict, exc: ValidationError) -> list:
    finder = LineFinder(text)
    out = []
    for err in exc.errors():
        loc = err["loc"]
        out.append(Diagnostic("error", file, describe_loc(raw, loc), _message(err), finder.find(loc)))
    return out


def _toml_error(file: str, exc: tomllib.TOMLDecodeError) -> Diagnostic:
    match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    return Diagnostic("error", file, "", f"TOML syntax: {exc}", int(match.group(1)) if match else None)


# ---------------------------------------------------------------- loading


@dataclass
class SourceFile:
    path: Path
    label: str  # how diagnostics name it
    text: str
    raw: dict
    model: PolicyFile
    _finder: "LineFinder | None" = None

    @property
    def finder(self) -> LineFinder:
        if self._finder is None:
            self._finder = LineFinder(self.text)
        return self._finder


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def policy_files(directory: Path) -> list:
    return sorted(p for p in Path(directory).glob("*.toml") if p.is_file())


def load_files(paths: list, errors: list) -> list:
    sources = []
    for path in paths:
        label = _label(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(Diagnostic("error", label, "", f"cannot read: {exc}"))
            continue
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            errors.append(_toml_error(label, exc))
            continue
        try:
            model = PolicyFile.model_validate(raw)
        except ValidationError as exc:
            errors.extend(validation_diagnostics(label, text, raw, exc))
            continue
        sources.append(SourceFile(path, label, text, raw, model))
    return sources


# ---------------------------------------------------------------- compiling


class _Ctx:
    def __init__(self, src: SourceFile, index: int, errors: list, warnings: list):
        self.src = src
        self.index = index
        self.errors = errors
        self.warnings = warnings

    def _diag(self, severity: str, loc: tuple, message: str) -> Diagnostic:
        full = ("routes", self.index) + loc
        return Diagnostic(severity, self.src.label, describe_loc(self.src.raw, full), message, self.src.finder.find(full))

    def error(self, loc: tuple, message: str) -> None:
        self.errors.append(self._diag("error", loc, message))

    def warn(self, loc: tuple, message: str) -> None:
        self.warnings.append(self._diag("warning", loc, message))


def _resolve(kind: str, values: list, aliases: dict, ctx: _Ctx, loc: tuple) -> list:
    out = set()
    table = aliases.get(kind, {})
    for i, value in enumerate(values):
        if is_guid(value):
            out.add(value.lower())
        elif value in table:
            out.update(table[value])
        else:
            known = ", ".join(sorted(table)) or f"none defined; add a [{kind}] table"
            close = difflib.get_close_matches(value, sorted(table), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            ctx.error(loc + (kind, i), f"unknown {kind} alias {value!r} ({hint}known: {known})")
    return sorted(out)


def condition_json(cond, aliases: dict, ctx: _Ctx, loc: tuple) -> list:
    parts = []
    if cond.authenticated:
        parts.append(["true"])
    for name in _VALUE_FIELDS:
        values = getattr(cond, name)
        if values is None:
            continue
        if name in ALIAS_KINDS:
            values = _resolve(name, values, aliases, ctx, loc)
        else:
            values = sorted(set(values))
        parts.append([name, values])
    if cond.kind is not None:
        parts.append(["kind", cond.kind])
    if cond.any is not None:
        parts.append(["any", [condition_json(c, aliases, ctx, loc + ("any", i)) for i, c in enumerate(cond.any)]])
    if cond.all is not None:
        parts.append(["all", [condition_json(c, aliases, ctx, loc + ("all", i)) for i, c in enumerate(cond.all)]])
    if cond.not_ is not None:
        parts.append(["not", condition_json(cond.not_, aliases, ctx, loc + ("not",))])
    return parts[0] if len(parts) == 1 else ["all", parts]


def _collect_aliases(sources: list, errors: list) -> dict:
    aliases = {kind: {} for kind in ALIAS_KINDS}
    where = {}
    for src in sources:
        for kind in ALIAS_KINDS:
            for name, guids in getattr(src.model, kind).items():
                if name in aliases[kind]:
                    other = where[(kind, name)]
                    errors.append(Diagnostic(
                        "error", src.label, f"{kind}.{name}",
                        f"{kind} alias {name!r} is already defined in {other}", src.finder.find((kind, name)),
                    ))
                    continue
                aliases[kind][name] = sorted(set(guids))
                where[(kind, name)] = src.label
    return aliases


def _host_text(host: str) -> str:
    return "any host" if host == "*" else f"host {host}"


def compile_sources(sources: list, errors: list, warnings: list):
    aliases = _collect_aliases(sources, errors)
    routes_json = []
    names: dict = {}
    slots: dict = {}  # (host, pattern) -> [(methods set, ctx, route name)]
    for src in sources:
        stem = src.path.name
        for index, route in enumerate(src.model.routes):
            ctx = _Ctx(src, index, errors, warnings)
            name = route.name or f"{stem}:routes[{index}]"
            if name in names:
                ctx.error(("name",), f"route name {name!r} is already used by {names[name]}")
            names[name] = f"{src.label} routes[{index}]"
            item = {
                "name": name,
                "source": f"{stem}:routes[{index}]",
                "public": route.public,
                "origin": route.origin,
                "allow": None if route.allow is None else condition_json(route.allow, aliases, ctx, ("allow",)),
                "deny": None if route.deny is None else condition_json(route.deny, aliases, ctx, ("deny",)),
            }
            if route.allow is not None and item["deny"] == ["true"]:
                ctx.warn(("allow",), "allow can never apply: deny holds for every token")
            hosts = route.hosts or ["*"]
            methods = sorted(set(route.methods or ["*"]))
            if "*" in methods:
                methods = ["*"]
            match = []
            seen = set()
            for host in hosts:
                for pattern in route.paths:
                    if (host, pattern) in seen:
                        ctx.warn(("paths",), f"{_host_text(host)} path {pattern} is listed twice")
                        continue
                    seen.add((host, pattern))
                    _check_duplicate(slots, host, pattern, set(methods), ctx, name)
                    match.append([host, pattern, methods])
            item["match"] = match
            routes_json.append(item)
    return aliases, routes_json


def _check_duplicate(slots: dict, host: str, pattern: str, methods: set, ctx: _Ctx, name: str) -> None:
    entries = slots.setdefault((host, pattern), [])
    for other_methods, other_ctx, other_name in entries:
        if "*" in methods:
            overlap = other_methods
        elif "*" in other_methods:
            overlap = methods
        else:
            overlap = methods & other_methods
        if overlap:
            overlap = sorted(overlap)
            ctx.error(
                ("paths",),
                f"duplicate route: {_host_text(host)}, path {pattern}, methods {' '.join(overlap)} "
                f"are already routed by {other_name!r} ({other_ctx.src.label} routes[{other_ctx.index}]); "
                "equal specificity, so neither could win",
            )
            return
    entries.append((methods, ctx, name))


def _finish(routes_json: list) -> tuple:
    data = {"format": FORMAT, "routes": routes_json}
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    version = hashlib.sha256(body.encode()).hexdigest()[:12]
    data = {"format": FORMAT, "version": version, "routes": routes_json}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return data, text, version


def compile_policies(directory=None, files=None) -> Compiled:
    """Validate and compile. Raises PolicyError listing every error found."""
    errors: list = []
    warnings: list = []
    paths = [Path(p) for p in files] if files is not None else policy_files(Path(directory))
    if not paths:
        raise PolicyError([Diagnostic("error", str(directory), "", "no *.toml policy files found")])
    sources = load_files(paths, errors)
    aliases, routes_json = compile_sources(sources, errors, warnings)
    if errors:
        raise PolicyError(errors, warnings)
    data, text, version = _finish(routes_json)
    policy = Policy.from_json(json.loads(text))
    warnings.extend(shadow_warnings(policy, sources))
    return Compiled(data, text, version, policy, sources, warnings, aliases)


# ---------------------------------------------------------------- shadowed routes
#
# With most-specific-wins, a (host, pattern) can never be chosen only when every path it
# matches is also matched by strictly more specific patterns on the same host key (other host
# keys never cover all hosts a key matches). `_covered` decides that exactly on the trie:
# each frontier entry is a trie node plus whether the patterns below it are already strictly
# more specific than the pattern under test.


def _covered(pattern: list, i: int, frontier: list) -> bool:
    frontier = [(n, strict) for n, strict in frontier if n is not None]
    if not frontier:
        return False
    if any(strict and n.dstar is not None for n, strict in frontier):
        return True
    if i == len(pattern):
        return any(strict and n.end is not None for n, strict in frontier)
    seg = pattern[i]
    if seg == "**":
        return _covered_subtree(frontier)
    if seg == "*":
        # A segment no literal names is covered only by `*` children; literals add nothing.
        return _covered(pattern, i + 1, [(n.star, strict) for n, strict in frontier])
    nxt = [(n.lit.get(seg), strict) for n, strict in frontier]
    if seg:
        nxt += [(n.star, True) for n, strict in frontier if strict]
    return _covered(pattern, i + 1, nxt)


def _covered_subtree(frontier: list) -> bool:
    """Is every continuation (nothing, '', or any segments) covered? '**' ranks last, so any
    pattern ending here, or continuing with '' or '*', is more specific."""
    frontier = [(n, strict) for n, strict in frontier if n is not None]
    if not frontier:
        return False
    if any(strict and n.dstar is not None for n, strict in frontier):
        return True
    if not any(n.end is not None for n, _ in frontier):
        return False
    empty = [n.lit.get("") for n, _ in frontier]
    if not any(m is not None and (m.end is not None or m.dstar is not None) for m in empty):
        return False
    return _covered_subtree([(n.star, True) for n, _ in frontier])


def _host_root(policy: Policy, host: str):
    if host == "*":
        return policy._any
    if host.startswith("*."):
        return policy._wild.get(host[2:])
    return policy._exact.get(host)


def shadow_warnings(policy: Policy, sources: list) -> list:
    by_stem = {src.path.name: src for src in sources}
    out = []
    for route in policy.routes:
        for host, pattern, _methods in route.match_spec:
            root = _host_root(policy, host)
            if not _covered(split_pattern(pattern), 0, [(root, False)]):
                continue
            stem, _, rest = route.source.partition(":")
            src = by_stem.get(stem)
            index = int(rest[len("routes["):-1]) if rest.startswith("routes[") else 0
            loc = ("routes", index, "paths")
            out.append(Diagnostic(
                "warning",
                src.label if src else stem,
                describe_loc(src.raw, loc) if src else rest,
                f"{_host_text(host)} path {pattern} can never match: every path it covers is "
                "claimed by more specific patterns",
                src.finder.find(loc) if src else None,
            ))
    return out


def module_text(compiled: Compiled) -> str:
    return (
        "# Generated by `python -m entragate_tools compile` from policies/*.toml. Do not edit.\n"
        f'POLICY_VERSION = "{compiled.version}"\n'
        f"POLICY_JSON = {compiled.json_text!r}\n"
    )
