"""Validate policies/*.toml and compile them into the JSON the edge loads with Policy.from_json.

Every problem is reported as a Diagnostic naming the file, the line when it can be found
cheaply, the location (`routes[2] "api-write" .allow.groups[0]`) and what is wrong. All files
are checked before giving up, so one run lists every error.
"""

import difflib
import gc
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from typing import get_args

from pydantic import BaseModel, ValidationError

from entragate.policy import FORMAT, Policy

from . import cors_check, google_check, sessions_check, spellings, tenants
from .schema import PolicyFile, is_guid

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
    """Cheap line lookup in TOML text: `[[routes]]` (any array of tables) headers, `[table]`
    headers, and `key =` lines inside them. Returns 1-based lines, or None."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self._arrays: dict = {}

    def _array(self, name: str) -> list:
        if name not in self._arrays:
            header = re.compile(rf"\s*\[\[\s*{re.escape(name)}\s*\]\]")
            self._arrays[name] = [i for i, line in enumerate(self.lines) if header.match(line)]
        return self._arrays[name]

    def _table(self, name: str) -> int | None:
        for i, line in enumerate(self.lines):
            if re.match(rf"\s*\[\s*{re.escape(name)}\s*\]", line):
                return i
        return None

    def _key(self, key: str, start: int, end: int, array: str) -> int | None:
        pattern = re.compile(
            rf"\s*(\"?{re.escape(key)}\"?\s*=|\[\s*{re.escape(array)}\s*\.\s*{re.escape(key)}\b)"
        )
        for i in range(start, min(end, len(self.lines))):
            if pattern.match(self.lines[i]):
                return i
        return None

    def find(self, loc: tuple) -> int | None:
        if not loc or not isinstance(loc[0], str):
            return None
        if len(loc) > 1 and isinstance(loc[1], int):
            starts = self._array(loc[0])
            if loc[1] >= len(starts):
                return None
            start = starts[loc[1]]
            end = starts[loc[1] + 1] if loc[1] + 1 < len(starts) else len(self.lines)
            keys = [p for p in loc[2:] if isinstance(p, str)]
            found = self._key(keys[0], start, end, loc[0]) if keys else None
            return (found if found is not None else start) + 1
        start = self._table(loc[0])
        if start is None:
            return None
        if len(loc) > 1 and isinstance(loc[1], str):
            found = self._key(loc[1], start + 1, len(self.lines), loc[0])
            if found is not None:
                return found + 1
        return start + 1


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


def _inner_model(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _keys(model) -> dict:
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _known_keys(model, loc: tuple) -> list:
    """The keys allowed at `loc` (the table that holds an unknown key)."""
    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = _keys(current).get(part)
        current = None if info is None else _inner_model(info.annotation)
        if current is None:
            return []
    return sorted(_keys(current))


def _message(err: dict, model) -> str:
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
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


def validation_diagnostics(file: str, text: str, raw: dict, exc: ValidationError, model=PolicyFile) -> list:
    finder = LineFinder(text)
    out = []
    for err in exc.errors():
        loc = err["loc"]
        out.append(Diagnostic("error", file, describe_loc(raw, loc), _message(err, model), finder.find(loc)))
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


def unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, for a one-line diagnostic."""
    if isinstance(exc, UnicodeDecodeError):
        line = exc.object.count(b"\n", 0, exc.start) + 1
        return (f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
                "save the file as UTF-8")
    return exc.strerror or str(exc)


def policy_files(directory: Path) -> list:
    return sorted(p for p in Path(directory).glob("*.toml") if p.is_file())


def load_files(paths: list, errors: list) -> list:
    sources = []
    for path in paths:
        label = _label(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(Diagnostic("error", label, "", f"cannot read: {unreadable(exc)}"))
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

    def diagnostic(self, severity: str, loc: tuple, message: str) -> Diagnostic:
        full = ("routes", self.index) + loc
        return Diagnostic(severity, self.src.label, describe_loc(self.src.raw, full), message, self.src.finder.find(full))

    def error(self, loc: tuple, message: str) -> None:
        self.errors.append(self.diagnostic("error", loc, message))

    def warn(self, loc: tuple, message: str) -> None:
        self.warnings.append(self.diagnostic("warning", loc, message))


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


def _collect_settings(sources: list, errors: list) -> dict:
    """Policy-wide settings: each may be set in one file only (file order must not matter)."""
    settings = {"spellings": "refuse"}
    where: dict = {}
    for src in sources:
        for key in sorted(src.model.settings.model_fields_set):
            if key in where:
                errors.append(Diagnostic(
                    "error", src.label, f"settings.{key}", f"setting {key!r} is already set in {where[key]}",
                    src.finder.find(("settings", key)),
                ))
                continue
            settings[key] = getattr(src.model.settings, key)
            where[key] = src.label
    return settings


def _host_text(host: str) -> str:
    return "any host" if host == "*" else f"host {host}"


def compile_sources(sources: list, errors: list, warnings: list):
    """-> (aliases, routes JSON, the _Ctx of each route)."""
    aliases = _collect_aliases(sources, errors)
    routes_json = []
    ctxs = []
    names: dict = {}
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
                **({"login": True} if route.login else {}),
                **({"cors": cors_check.cors_json(route.cors)} if route.cors is not None else {}),
                **google_check.origin_auth_json(route),
                "allow": None if route.allow is None else condition_json(route.allow, aliases, ctx, ("allow",)),
                "deny": None if route.deny is None else condition_json(route.deny, aliases, ctx, ("deny",)),
            }
            if route.allow is not None and item["deny"] == ["true"]:
                ctx.warn(("allow",), "allow can never apply: deny holds for every token")
            methods = sorted(set(route.methods or ["*"]))
            if "*" in methods:
                methods = ["*"]
            match = []
            for host in route.hosts or ["*"]:
                for pattern in route.paths:
                    if [host, pattern, methods] in match:
                        ctx.warn(("paths",), f"{_host_text(host)} path {pattern} is listed twice")
                        continue
                    match.append([host, pattern, methods])
            item["match"] = match
            routes_json.append(item)
            ctxs.append(ctx)
    return aliases, routes_json, ctxs


# ---------------------------------------------------------------- the index
#
# Built here, read by entragate.policy (see its docstring for the node layout). Building it
# is also where duplicate routes show up: two routes in one slot with an overlapping method.


def _index_root(index: dict, host: str) -> dict:
    if host == "*":
        if index["any"] is None:
            index["any"] = {}
        return index["any"]
    table, key = (index["wild"], host[2:]) if host.startswith("*.") else (index["exact"], host)
    return table.setdefault(key, {})


def _index_slot(root: dict, pattern: str) -> list:
    node = root
    segs = pattern[1:].split("/")
    for seg in segs[:-1] if segs[-1] == "**" else segs:
        if seg == "*":
            node = node.setdefault("s", {})
        else:
            node = node.setdefault("l", {}).setdefault(seg, {})
    key = "d" if segs[-1] == "**" else "e"
    if key not in node:
        node[key] = [{}, None]
    return node[key]


def build_index(routes_json: list, ctxs: list) -> dict:
    index: dict = {"exact": {}, "wild": {}, "any": None}
    for ri, item in enumerate(routes_json):
        for host, pattern, methods in item["match"]:
            slot = _index_slot(_index_root(index, host), pattern)
            table = slot[0]
            if "*" in methods:
                clash = sorted(table)
            elif "*" in table:
                clash = list(methods)
            else:
                clash = [m for m in methods if m in table]
            if clash:
                other = table[clash[0]] if clash[0] in table else table["*"]
                octx = ctxs[other]
                ctxs[ri].error(
                    ("paths",),
                    f"duplicate route: {_host_text(host)}, path {pattern}, methods {' '.join(clash)} "
                    f"are already routed by {routes_json[other]['name']!r} "
                    f"({octx.src.label} routes[{octx.index}]); equal specificity, so neither could win",
                )
                continue
            for method in methods:
                table[method] = ri
            if slot[1] is None:
                slot[1] = ri
    return index


def _finish(routes_json: list, index: dict, folded: dict | None, spelling: str) -> tuple:
    data = {"format": FORMAT, "index": index, "folded": folded, "routes": routes_json, "spellings": spelling}
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    version = hashlib.sha256(body.encode()).hexdigest()[:12]
    data["version"] = version
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return data, text, version


def compile_policies(directory=None, files=None, deployments=()) -> Compiled:
    """Validate and compile. Raises PolicyError listing every error found. `deployments`
    (tenants.read_deployments): warn about grants any accepted tenant controls.

    The cyclic garbage collector is paused meanwhile (as `Policy.loads` does): compiling
    allocates many small, mostly acyclic objects (models, index nodes, both indexes), and
    letting the collector rescan them over and over took two thirds of the time at 10,000
    routes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile_policies(directory, files, deployments)
    finally:
        if enabled:
            gc.enable()


def _compile_policies(directory, files, deployments) -> Compiled:
    errors: list = []
    warnings: list = []
    if files is None and not Path(directory).is_dir():
        raise PolicyError([Diagnostic("error", str(directory), "", "no such policy directory")])
    paths = [Path(p) for p in files] if files is not None else policy_files(Path(directory))
    if not paths:
        # A folder with no policy yet (a fork that removed the examples): no routes, so every
        # request is refused. Fails closed; said once, as a warning (`check --strict` fails on it).
        warnings.append(Diagnostic("warning", str(directory), "", "no *.toml policy files found: the policy has "
                                   "no routes, so the gateway refuses every request (403 no_route)"))
    sources = load_files(paths, errors)
    if errors:  # aliases and routes of a broken file are unknown: stop before cross-file checks
        raise PolicyError(errors, warnings)
    aliases, routes_json, ctxs = compile_sources(sources, errors, warnings)
    settings = _collect_settings(sources, errors)
    index = build_index(routes_json, ctxs)
    folded, entries = spellings.build_folded_index(routes_json, ctxs, _index_root, _index_slot, _host_text)
    if errors:
        raise PolicyError(errors, warnings)
    fold = settings["spellings"] == "fold"
    never, shadowed = shadow_warnings(folded if fold else index, routes_json, ctxs, fold)
    warnings.extend(shadowed)
    overlaps = []
    if fold:  # the origins serve every spelling as one path: match on the folded form
        index, folded = folded, None
    else:
        overlaps = spellings.mark_sensitive_slots(index, folded, entries, routes_json, _index_root, _index_slot, never)
        if not overlaps:  # nothing to check at the edge: do not ship the folded index
            folded = None
    data, text, version = _finish(routes_json, index, folded, settings["spellings"])
    policy = Policy.from_json(json.loads(text))
    for route in policy.routes:  # the edge compiles conditions lazily; prove now they load
        route._prepare()
    warnings.extend(spellings.spelling_warnings(overlaps, routes_json, ctxs, policy, _host_text))
    warnings.extend(tenants.grant_warnings(routes_json, ctxs, deployments))
    warnings.extend(sessions_check.session_warnings(routes_json, ctxs))
    warnings.extend(cors_check.cors_warnings(routes_json, ctxs))
    warnings.extend(google_check.deployment_warnings(routes_json, ctxs, deployments))
    return Compiled(data, text, version, policy, sources, warnings, aliases)


# ---------------------------------------------------------------- shadowed routes
#
# With most-specific-wins, a (host, pattern) can never be chosen only when every path it
# matches is also matched by strictly more specific patterns on the same host key (other host
# keys never cover all hosts a key matches). `_covered` decides that exactly on the index:
# each frontier entry is a trie node plus whether the patterns below it are already strictly
# more specific than the pattern under test.


def _covered(pattern: list, i: int, frontier: list, folded: bool = False) -> bool:
    frontier = [(n, strict) for n, strict in frontier if n is not None]
    if not frontier:
        return False
    if any(strict and "d" in n for n, strict in frontier):
        return True
    if i == len(pattern):
        return any(strict and "e" in n for n, strict in frontier)
    seg = pattern[i]
    if seg == "**":
        return _covered_subtree(frontier, folded)
    if seg == "*":
        # A segment no literal names is covered only by `*` children; literals add nothing.
        return _covered(pattern, i + 1, [(n.get("s"), strict) for n, strict in frontier], folded)
    nxt = [(n.get("l", {}).get(seg), strict) for n, strict in frontier]
    if seg:
        nxt += [(n.get("s"), True) for n, strict in frontier if strict]
    return _covered(pattern, i + 1, nxt, folded)


def _covered_subtree(frontier: list, folded: bool = False) -> bool:
    """Is every continuation (nothing, '', or any segments) covered? '**' ranks last, so any
    pattern ending here, or continuing with '' or '*', is more specific. A folded path never
    ends with '' (its trailing slash is folded away), so in the folded index '' needs no cover."""
    frontier = [(n, strict) for n, strict in frontier if n is not None]
    if not frontier:
        return False
    if any(strict and "d" in n for n, strict in frontier):
        return True
    if not any("e" in n for n, _ in frontier):
        return False
    empty = [n.get("l", {}).get("") for n, _ in frontier]
    if not folded and not any(m is not None and ("e" in m or "d" in m) for m in empty):
        return False
    return _covered_subtree([(n.get("s"), True) for n, _ in frontier], folded)


def shadow_warnings(index: dict, routes_json: list, ctxs: list, fold: bool = False) -> tuple:
    """-> ({(route, host, pattern) that can never match}, warnings). With `fold`, `index` is
    the folded one and patterns are judged in their folded form."""
    never: set = set()
    out: list = []
    for ri, (item, ctx) in enumerate(zip(routes_json, ctxs)):
        for host, pattern, _methods in item["match"]:
            root = index["any"] if host == "*" else _index_root(index, host)
            judged = spellings.folded_patterns(pattern)[0] if fold else pattern
            if _covered(judged[1:].split("/"), 0, [(root, False)], fold):
                never.add((ri, host, pattern))
                folded = f" (folded: {judged})" if judged != pattern else ""
                out.append(ctx.diagnostic(
                    "warning", ("paths",),
                    f"{_host_text(host)} path {pattern}{folded} can never match: every path it covers is "
                    "claimed by more specific patterns",
                ))
    return never, out


def module_text(compiled: Compiled) -> str:
    return (
        "# Generated by `tools/entragate.py compile` from policies/*.toml. Do not edit.\n"
        f'POLICY_VERSION = "{compiled.version}"\n'
        f"POLICY_JSON = {compiled.json_text!r}\n"
    )
