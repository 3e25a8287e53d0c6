"""Spellings of one path: the folded index and what the compiler proves about it.

Origins serve `/Admin/x`, `/admin/x/` and `/admin/x.json` as one path (`entragate.paths.
fold_path` lists the classes and the origins). A policy that routes such spellings
differently, e.g. a deny-all `/reports/export/**` under an allow `/reports/**`, is bypassed
by `/reports/Export/all` at such an origin. Here the compiler

1. folds every pattern (`folded_patterns`) and indexes the folded forms (`build_folded_index`);
   two routes whose patterns fold to one pattern with a method in common are an error: no
   reading of the request could tell which of them the origin serves;
2. marks, in the index as written, every slot that decides some path whose folded form
   another route (or this route's refusal of the method) decides in the folded index
   (`mark_sensitive_slots`); the edge checks the spelling of requests at those slots only,
   so a policy without such overlaps costs nothing per request;
3. turns each overlap into a `check` warning naming both routes (`spelling_warnings`).

Why marking is sound: a pattern that matches a path has a folded entry that matches the
folded path (literals fold like path segments; a trailing `/` and the last literal's suffix
are dropped on both sides; `/a/b.json/**` also matches `/a/b.json`, whose folded form is
`/a/b`, hence its second entry). So the folded path is decided by one of the pattern's own
entries, or by a folded pattern that beats them on that path: in a host tier tried before
the pattern's own, or in the same tier and more specific at the first segment where the
two differ. `_rivals` enumerates exactly those candidates (or more, never fewer).
"""

from dataclasses import dataclass

from entragate.paths import canonical_path, fold_segment, strip_suffix
from entragate.policy import CHECK_SPELLING


def folded_patterns(pattern: str) -> list:
    """The folded entries of a route pattern (strings in pattern syntax); the first one is the
    pattern itself, folded."""
    segs = pattern[1:].split("/")
    if segs[-1] == "**":
        prefix = [s if s == "*" else fold_segment(s) for s in segs[:-1]]
        out = ["/" + "/".join(prefix + ["**"])]
        if prefix and prefix[-1] != "*" and strip_suffix(prefix[-1]) != prefix[-1]:
            out.append("/" + "/".join(prefix[:-1] + [strip_suffix(prefix[-1])]))
        return out
    folded = [s if s == "*" else fold_segment(s) for s in segs]
    if len(folded) > 1 and folded[-1] == "":
        folded.pop()
    if folded[-1] != "*":
        folded[-1] = strip_suffix(folded[-1])
    return ["/" + "/".join(folded)]


@dataclass(frozen=True)
class Entry:
    """Where a written (host, pattern) of a route sits in the folded index."""

    route: int
    host: str
    pattern: str  # as written


def build_folded_index(routes_json: list, ctxs: list, index_root, index_slot, host_text) -> tuple:
    """-> (folded index, {id(slot): [Entry, ...]}). Clashes between routes are errors on ctxs."""
    index: dict = {"exact": {}, "wild": {}, "any": None}
    entries: dict = {}
    for ri, item in enumerate(routes_json):
        seen = set()
        for host, pattern, methods in item["match"]:
            for folded in folded_patterns(pattern):
                if (host, folded) in seen:  # `/a` and `/A` in one route: one entry
                    continue
                seen.add((host, folded))
                slot = index_slot(index_root(index, host), folded)
                table = slot[0]
                clash = sorted(table) if "*" in methods else list(methods) if "*" in table else [m for m in methods if m in table]
                if clash:
                    other = table[clash[0]] if clash[0] in table else table["*"]
                    theirs = next(e.pattern for e in entries[id(slot)] if e.route == other)
                    if theirs != pattern:  # the same pattern twice is a duplicate route, reported already
                        octx = ctxs[other]
                        ctxs[ri].error(
                            ("paths",),
                            f"{host_text(host)}: paths {pattern} and {theirs} "
                            f"({routes_json[other]['name']!r}, {octx.src.label} routes[{octx.index}]) are "
                            f"spellings of one path ({folded}: letter case, a trailing slash or a format "
                            f"suffix) with methods {' '.join(clash)} in common; an origin that serves them as "
                            "one path could be reached through either route. Put them in one route, or "
                            "name paths that differ in more than spelling",
                        )
                    continue
                for method in methods:
                    table[method] = ri
                if slot[1] is None:
                    slot[1] = ri
                entries.setdefault(id(slot), []).append(Entry(ri, host, pattern))
    return index, entries


# ---------------------------------------------------------------- rivals in the folded index


def _add(out: dict, node: dict, key: str) -> None:
    slot = node.get(key)
    if slot is not None:
        out[id(slot)] = slot


def _every_slot_below(node: dict, out: dict) -> None:
    for child in (*node.get("l", {}).values(), *([node["s"]] if "s" in node else [])):
        _add(out, child, "e")
        _add(out, child, "d")
        _every_slot_below(child, out)


def _rivals(node: dict, segs: list, i: int, kind: str, won: bool, out: dict) -> None:
    """Folded slots below `node` that decide some folded path which the entry `segs` (kind
    "e": ends there; "d": `segs` + `/**`) also matches, where they beat the entry: `won` once
    the walk has taken a more specific branch than the entry (or started in a host tier tried
    before the entry's). Without `won`, the walk follows the entry's own pattern, whose slot
    is not a rival."""
    if i == len(segs):
        if kind == "e":
            if won:
                _add(out, node, "e")
                _add(out, node, "d")
            return
        _add(out, node, "e")  # a pattern ending here beats `**` on the path ending here
        if won:
            _add(out, node, "d")
        _every_slot_below(node, out)  # literal and `*` beat `**`
        return
    if won:
        _add(out, node, "d")
    seg = segs[i]
    literals = node.get("l", {})
    star = node.get("s")
    if seg == "*":
        for literal, child in literals.items():
            if literal:  # `*` never matches an empty segment
                _rivals(child, segs, i + 1, kind, True, out)
        if star is not None:
            _rivals(star, segs, i + 1, kind, won, out)
        return
    child = literals.get(seg)
    if child is not None:
        _rivals(child, segs, i + 1, kind, won, out)
    if won and seg and star is not None:
        _rivals(star, segs, i + 1, kind, True, out)


class _EarlierTiers:
    """Roots of the host tiers tried before a host's own (for some host it matches), by the
    literal their paths start with: with many hosts, an entry need only visit the roots that
    have its first segment (or a wildcard) at the top."""

    def __init__(self, index: dict, host: str):
        if host == "*":
            roots = [*index["exact"].values(), *index["wild"].values()]
        elif host.startswith("*."):
            below = host[1:]  # ".example.com"
            roots = [node for key, node in (*index["exact"].items(), *index["wild"].items()) if key.endswith(below)]
        else:
            roots = []
        self.roots = roots
        self.by_literal: dict = {}
        self.wild = []
        for root in roots:
            for literal in root.get("l", {}):
                self.by_literal.setdefault(literal, []).append(root)
            if "s" in root or "d" in root or "e" in root:
                self.wild.append(root)

    def for_entry(self, segs: list) -> list:
        if not segs or segs[0] == "*":
            return self.roots
        return self.by_literal.get(segs[0], []) + [r for r in self.wild if segs[0] not in r.get("l", {})]


def _root(index: dict, host: str):
    if host == "*":
        return index["any"]
    return (index["wild"] if host.startswith("*.") else index["exact"]).get(host.removeprefix("*."))


def _deciders(slot: list, route: int, methods: list) -> set:
    """Routes other than `route` that decide, at folded `slot`, a method `route` takes (the
    slot's owner when the slot refuses that method: method_not_allowed)."""
    table, owner = slot[0], slot[1]
    if "*" in methods:
        # `route` has "*" in every slot it is in: a slot without it holds other routes only,
        # and any method they do not list is refused there (by one of them, the owner).
        return {ri for ri in table.values() if ri != route}
    out = set()
    for method in methods:
        ri = table[method] if method in table else table.get("*", owner)
        if ri != route:
            out.add(ri)
    return out


@dataclass(frozen=True)
class Overlap:
    """Some spelling of a path that `narrow` decides in folded form is decided by `broad`
    (pattern `broad_pattern` on `host`) when matched as written."""

    broad: int
    host: str
    broad_pattern: str
    narrow: Entry


def mark_sensitive_slots(exact: dict, folded: dict, entries: dict, routes_json: list, index_root, index_slot,
                         skip=frozenset()) -> list:
    """Append CHECK_SPELLING to every slot of the written index `exact` that may decide a
    spelling whose folded form another route decides; -> the overlaps found. `skip`: (route,
    host, pattern) that can never match, so decide nothing."""
    overlaps = []
    earlier: dict = {}
    for ri, item in enumerate(routes_json):
        for host, pattern, methods in item["match"]:
            if (ri, host, pattern) in skip:
                continue
            rivals: dict = {}
            own = _root(folded, host)
            if host not in earlier:
                earlier[host] = _EarlierTiers(folded, host)
            for entry in folded_patterns(pattern):
                segs = entry[1:].split("/")
                kind = "d" if segs[-1] == "**" else "e"
                if kind == "d":
                    segs.pop()
                if own is not None:
                    _rivals(own, segs, 0, kind, False, rivals)
                for root in earlier[host].for_entry(segs):
                    _rivals(root, segs, 0, kind, True, rivals)
            found = False
            for slot in rivals.values():
                deciders = _deciders(slot, ri, methods)
                if not deciders:
                    continue
                found = True
                for entry in entries[id(slot)]:
                    if entry.route in deciders:
                        overlaps.append(Overlap(ri, host, pattern, entry))
            if found:
                slot = index_slot(index_root(exact, host), pattern)
                if len(slot) == 2:
                    slot.append(CHECK_SPELLING)
    return overlaps


# ---------------------------------------------------------------- warnings


def _respelt(segment: str) -> str | None:
    flipped = segment.upper() if segment != segment.upper() else segment.lower()
    return flipped if flipped != segment else None


def example_spellings(narrow: str, broad: str) -> list:
    """Spellings of paths the `narrow` pattern decides that the written `broad` pattern may
    take instead: broad's own spelling of the literals they share, then one literal respelt
    (case; on the last segment also a suffix or a trailing slash). Candidates only: the
    caller keeps one the compiled policy really refuses."""
    n = narrow[1:].split("/")
    b = broad[1:].split("/")
    bases = [n[:-1], n[:-1] + ["x"]] if n[-1] == "**" else [n]  # `**`: nothing, or one segment
    out = []
    for segs in bases:
        base = []
        for i, seg in enumerate(segs):
            if seg == "*":
                base.append("x")
            elif i < len(b) and b[i] not in ("*", "**", ""):
                base.append(b[i])
            else:
                base.append(seg)
        out.append("/" + "/".join(base))
        for i, seg in enumerate(base):
            if segs[i] == "*" or not seg:
                continue
            variants = [_respelt(seg), seg.capitalize()]
            if i == len(base) - 1:
                variants += [seg + ".json", seg + "/"]
            out += ["/" + "/".join(base[:i] + [v] + base[i + 1 :]) for v in variants if v and v != seg]
    return out


def sample_host(host: str) -> str:
    if host == "*":
        return "any.example"
    return "x." + host[2:] if host.startswith("*.") else host


def _example(policy, overlap: Overlap, broad: str, narrow: str, methods: list) -> str | None:
    """A request path the compiled policy refuses because `broad` takes it as written while
    `narrow` decides its folded form; None when the overlap is only a possibility."""
    from entragate.errors import AmbiguousPath, AmbiguousSpelling

    for candidate in dict.fromkeys(example_spellings(overlap.narrow.pattern, overlap.broad_pattern)):
        try:
            if canonical_path(candidate) != candidate:  # e.g. a space: not what a client sends
                continue
        except AmbiguousPath:
            continue
        for method in methods:
            try:
                policy.match(method, sample_host(overlap.narrow.host), candidate)
            except AmbiguousSpelling as exc:
                if exc.route == broad and exc.folded_route.partition(" (")[0] == narrow:
                    return f"{method} https://{sample_host(overlap.narrow.host)}{candidate}"
    return None


def spelling_warnings(overlaps: list, routes_json: list, ctxs: list, policy, host_text) -> list:
    """One warning per narrower and broader route whose overlap a concrete request shows (the
    edge checks every marked slot anyway; a warning without an example would be noise)."""
    named = sorted({m for item in routes_json for _, _, ms in item["match"] for m in ms if m != "*"} | {"GET"})
    grouped: dict = {}
    for overlap in overlaps:
        grouped.setdefault((overlap.narrow.route, overlap.broad), []).append(overlap)
    out = []
    for (narrow, broad), items in sorted(grouped.items()):
        methods = routes_json[broad]["match"][0][2]
        methods = named if "*" in methods else methods
        found = None
        for overlap in items:
            example = _example(policy, overlap, routes_json[broad]["name"], routes_json[narrow]["name"], methods)
            if example:
                found = (overlap, example)
                break
        if found is None:
            continue
        overlap, example = found
        bctx = ctxs[broad]
        out.append(ctxs[narrow].diagnostic(
            "warning", ("paths",),
            f"{host_text(overlap.narrow.host)} {overlap.narrow.pattern}: other spellings (letter case, a trailing "
            f"slash, a format suffix; e.g. {example}) fall to the broader "
            f"route {routes_json[broad]['name']!r} ({bctx.src.label} routes[{bctx.index}], {host_text(overlap.host)} "
            f"{overlap.broad_pattern}); the gateway refuses them with 400 ambiguous_path. Write an allow-list "
            "rather than a narrower route under a broader one, or set spellings = \"fold\" in [settings] if "
            "every origin serves these spellings as one path",
        ))
    return out
