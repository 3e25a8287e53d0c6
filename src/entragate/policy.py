"""Compiled policy: route index and decision. Standard library only (runs in Pyodide).

The build-time compiler (`entragate_tools`) turns the TOML files in `policies/` into plain
JSON; the Worker and the CLI (`explain`, `test`) both load it with `Policy.from_json`, so the
CLI runs exactly the decision code the edge runs.

Compiled form (format 3)::

    {"format": 3, "version": "<12 hex>", "spellings": "refuse" | "fold",
     "routes": [{"name": str, "source": str, "public": bool, "origin": str | null,
                 "origin_auth": {"type": "google", "audience": str} (only when set),
                 "allow": COND | null, "deny": COND | null,
                 "match": [[HOST, PATTERN, [METHOD, ...]], ...],
                 "cors": CORS (optional: entragate/cors.py)}, ...],
     "index": INDEX, "folded": INDEX | null}

    INDEX   {"exact": {HOST: NODE}, "wild": {SUFFIX: NODE}, "any": NODE | null}

    HOST    "*" (any host) | "*.example.com" (any host below example.com) | "api.example.com"
    PATTERN "/a/b" | "/a/*/c" (`*` = exactly one non-empty segment) | "/a/**" (`/a` and
            everything below it; `**` only as the last segment)
    METHOD  upper-case method, or "*" for every method
    COND    ["true"] | ["groups"|"roles"|"scopes"|"clients"|"tenants"|"users", [str, ...]]
            | ["kind", "user"|"app"] | ["any", [COND, ...]] | ["all", [COND, ...]]
            | ["not", COND]
    SUFFIX  "example.com" for the wildcard host "*.example.com"
    NODE    {"l": {SEGMENT: NODE}, "s": NODE, "e": SLOT, "d": SLOT}, keys omitted when empty:
            literal children, the `*` child, routes whose pattern ends here, routes whose
            pattern ends with `**` here
    SLOT    [{METHOD: route index}, index of the route that owns the pattern]
            + [1] when another spelling of a path this slot decides may be routed elsewhere

`routes[i].match` is what the index was built from (the compiler builds and checks the
index; the edge only reads it).

Spellings (`paths.fold_path`: letter case, one trailing slash, a format suffix, NFKC). Many
origins serve `/Admin/x`, `/admin/x/` and `/admin/x.json` as `/admin/x`; a route written for
one spelling must not be escaped through another. The compiler also indexes every pattern
in its folded form ("folded": the same layout, literals folded). Then, with
- `"spellings": "refuse"` (the default): `index` holds the patterns as written and decides;
  a request that reaches a route through a slot marked as spelling-sensitive is refused as
  `AmbiguousSpelling` (400 ambiguous_path) unless its folded path, matched in `folded` with
  the same method, reaches that very route. So every spelling of a path that any route
  lets through is decided by one route: the one that decides its folded form. Slots the
  compiler proved insensitive (no other route's folded pattern can claim a path they
  decide) are not checked; a request no route takes is refused anyway and is never folded.
- `"spellings": "fold"` (the operator declares that the origins treat spellings as one
  path): `index` is built from the folded patterns and every path is folded before
  matching; `folded` is null.

Precedence (deterministic, independent of file order):
1. host: exact host, then wildcard hosts from the longest suffix to the shortest, then
   routes for any host. A tier in which no path pattern matches is skipped.
2. path, within the chosen host tier: patterns are compared segment by segment from the
   left; at the first segment where they differ, a literal beats `*`, which beats `**`
   (and a pattern that ends where the path ends beats a `**` that would match nothing).
3. method: the most specific (host, path) pattern owns the request. If none of the routes
   at that pattern lists the method the answer is `method_not_allowed`; a less specific
   pattern never picks up methods that a more specific one left out (so a catch-all cannot
   quietly open methods nobody wrote a rule for). Two routes with the same host and pattern
   and an overlapping method are a compile error.

Conditions are evaluated in three-valued logic: True, False, or unknown (None). A `groups`
test is unknown when the token reports group overage (too many groups to list) and none of
the wanted groups is among those it does list; `any`/`all`/`not` propagate unknown in the
usual (Kleene) way, so `any = [{roles = [...]}, {groups = [...]}]` still allows on the role.
An unknown `deny` or `allow` fails closed with reason `groups_overage`.

Decision reasons: allowed, public, no_route, method_not_allowed, token_required,
denied_by_rule, condition_not_met, insufficient_scope (the allow condition fails but would
hold if the token also had the scopes the route names), groups_overage; `match` raises
AmbiguousSpelling (ambiguous_path) as above.
"""

import gc
import json
from dataclasses import dataclass, replace

from .cors import CorsPolicy
from .errors import AmbiguousSpelling
from .identity import Identity
from .paths import canonical_host, fold_path

FORMAT = 3
SPELLINGS = ("refuse", "fold")
CHECK_SPELLING = 1  # the flag on a slot that needs the spelling check


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    rule: str | None


NO_ROUTE = Decision(False, "no_route", None)



def _compile_cond(node):
    """COND (JSON) -> function(identity) -> True | False | None (unknown)."""
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise ValueError(f"bad condition {node!r}")
    op = node[0]
    if op == "true":
        return lambda identity: True
    if len(node) != 2:
        raise ValueError(f"bad condition {node!r}")
    arg = node[1]
    if op == "groups":
        wanted = frozenset(_str_list(arg))

        def groups(identity):
            if not wanted.isdisjoint(identity.groups):
                return True
            return None if identity.groups_overage else False

        return groups
    if op == "roles":
        wanted = frozenset(_str_list(arg))
        return lambda identity: not wanted.isdisjoint(identity.roles)
    if op == "scopes":
        wanted = frozenset(_str_list(arg))
        return lambda identity: not wanted.isdisjoint(identity.scopes)
    if op == "clients":
        wanted = frozenset(_str_list(arg))
        return lambda identity: identity.client_id in wanted
    if op == "tenants":
        wanted = frozenset(_str_list(arg))
        return lambda identity: identity.tid in wanted
    if op == "users":
        wanted = frozenset(_str_list(arg))
        return lambda identity: identity.oid in wanted
    if op == "kind":
        if arg not in ("user", "app"):
            raise ValueError(f"bad token kind {arg!r}")
        return lambda identity: identity.kind == arg
    if op == "not":
        inner = _compile_cond(arg)

        def negate(identity):
            result = inner(identity)
            return None if result is None else not result

        return negate
    if op in ("any", "all"):
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"{op} needs a non-empty list")
        parts = tuple(_compile_cond(item) for item in arg)
        if len(parts) == 1:
            return parts[0]
        if op == "any":

            def any_of(identity):
                unknown = False
                for part in parts:
                    result = part(identity)
                    if result:
                        return True
                    if result is None:
                        unknown = True
                return None if unknown else False

            return any_of

        def all_of(identity):
            unknown = False
            for part in parts:
                result = part(identity)
                if result is False:
                    return False
                if result is None:
                    unknown = True
            return None if unknown else True

        return all_of
    raise ValueError(f"unknown condition {op!r}")


def _str_list(value) -> list:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return value


def _scopes_named(node, out: set) -> None:
    if not isinstance(node, list) or not node:
        return
    if node[0] == "scopes":
        out.update(node[1])
    elif node[0] in ("any", "all"):
        for item in node[1]:
            _scopes_named(item, out)
    elif node[0] == "not":
        _scopes_named(node[1], out)


def _names_groups(node) -> bool:
    """Whether a COND tests groups anywhere (a malformed one is refused by _compile_cond)."""
    if not isinstance(node, list) or len(node) != 2:
        return False
    if node[0] == "groups":
        return True
    if node[0] in ("any", "all") and isinstance(node[1], list):
        return any(_names_groups(item) for item in node[1])
    return node[0] == "not" and _names_groups(node[1])


class Route:
    """One compiled route. `evaluate` is called with the validated identity."""

    __slots__ = (
        "name", "source", "public", "origin", "origin_auth", "login", "fixed_decision", "match_spec", "cors",
        "_allow_json", "_deny_json", "_allow", "_deny", "_scopes", "_ready",
        "_allowed", "_denied", "_overage", "_not_met", "_scope", "uses_groups",
    )

    def __init__(self, name, source="", public=False, origin=None, allow=None, deny=None,
                 match_spec=(), fixed_decision=None, login=False, cors=None, origin_auth=None):
        self.name = name
        self.source = source
        self.public = public
        self.origin = origin
        # The route's own origin needs a Google ID token for this audience (google.py).
        self.origin_auth = origin_auth
        # Browsers may sign in (a session) here; without it only a bearer token counts.
        self.login = login
        # Set on the stand-in route returned for a method nobody allowed: the decision is
        # known without a token, so the gateway may answer it without validating one.
        self.fixed_decision = fixed_decision
        self.match_spec = match_spec
        # CORS answered at the edge (cors.CorsPolicy), or None: preflights are decided like any
        # OPTIONS request and responses carry no CORS headers of the gateway's.
        self.cors = cors
        self._allow_json = allow
        self._deny_json = deny
        # Whether group membership can take part in this route's decisions (the audit line
        # then says where the groups came from).
        self.uses_groups = _names_groups(allow) or _names_groups(deny)
        self._ready = False

    def _prepare(self) -> None:
        # Conditions are turned into closures on first use, so loading a large policy is cheap.
        self._allow = None if self._allow_json is None else _compile_cond(self._allow_json)
        self._deny = None if self._deny_json is None else _compile_cond(self._deny_json)
        scopes: set = set()
        _scopes_named(self._allow_json, scopes)
        self._scopes = tuple(sorted(scopes))
        name = self.name
        self._allowed = Decision(True, "allowed", name)
        self._denied = Decision(False, "denied_by_rule", name)
        self._overage = Decision(False, "groups_overage", name)
        self._not_met = Decision(False, "condition_not_met", name)
        self._scope = Decision(False, "insufficient_scope", name)
        self._ready = True

    def evaluate(self, identity: Identity) -> Decision:
        if self.fixed_decision is not None:
            return self.fixed_decision
        if self.public:
            return Decision(True, "public", self.name)
        if not self._ready:
            self._prepare()
        if self._deny is not None:
            result = self._deny(identity)
            if result:
                return self._denied
            if result is None:
                return self._overage
        if self._allow is None:
            return self._not_met
        result = self._allow(identity)
        if result:
            return self._allowed
        if result is None:
            return self._overage
        if self._scopes:
            more = replace(identity, scopes=identity.scopes + self._scopes)
            if self._allow(more) is True:
                return self._scope
        return self._not_met

    def __repr__(self) -> str:
        return f"Route({self.name!r})"


def _find(node: dict, segs: list, i: int):
    """Best slot for segs[i:] below node: literal child, then `*` child (non-empty segment
    only), then the node's `**`; backtracks when a more specific branch has no match."""
    if i == len(segs):
        return node.get("e") or node.get("d")
    seg = segs[i]
    lit = node.get("l")
    if lit is not None:
        child = lit.get(seg)
        if child is not None:
            found = _find(child, segs, i + 1)
            if found is not None:
                return found
    if seg:
        star = node.get("s")
        if star is not None:
            found = _find(star, segs, i + 1)
            if found is not None:
                return found
    return node.get("d")


def _lookup(index: tuple, host: str, segs: list):
    """The slot that decides `segs` on `host` (host tiers as in the module docstring), or None."""
    exact, wild, any_root = index
    if exact:
        root = exact.get(host)
        if root is not None:
            slot = _find(root, segs, 0)
            if slot is not None:
                return slot
    if wild:
        dot = host.find(".")
        while dot != -1:
            root = wild.get(host[dot + 1 :])
            if root is not None:
                slot = _find(root, segs, 0)
                if slot is not None:
                    return slot
            dot = host.find(".", dot + 1)
    if any_root is not None:
        return _find(any_root, segs, 0)
    return None


def _tiers(index: dict | None) -> tuple:
    if not index:
        return ({}, {}, None)
    return (index.get("exact") or {}, index.get("wild") or {}, index.get("any"))


class Policy:
    """The route index, as compiled: exact hosts (dict), wildcard hosts (dict by suffix), any
    host; each a trie over path segments (see `_find`). A match costs a few dict lookups per
    path segment however many routes there are. The index arrives ready-made in the compiled
    JSON, so loading is `json.loads` plus a few attribute stores; Route objects (and their
    condition closures) are built on first use."""

    __slots__ = ("version", "spellings", "has_login_routes", "has_google_origins", "_data", "_routes", "_refusals", "_index", "_folded",
                 "_fold")

    def __init__(self, data: dict):
        self.version = str(data.get("version", ""))
        self.spellings = data.get("spellings", "refuse")
        self._data = data["routes"]
        self.has_login_routes = any(item.get("login") for item in self._data)
        self.has_google_origins = any(item.get("origin_auth") for item in self._data)
        self._routes: list = [None] * len(self._data)
        self._refusals: dict = {}
        self._index = _tiers(data["index"])
        self._folded = _tiers(data.get("folded"))
        self._fold = self.spellings == "fold"

    @classmethod
    def from_json(cls, data: dict) -> "Policy":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"compiled policy: expected format {FORMAT}; recompile the policies")
        if not isinstance(data.get("routes"), list) or not isinstance(data.get("index"), dict):
            raise ValueError("compiled policy: routes and index are required")
        if data.get("spellings") not in SPELLINGS:
            raise ValueError(f"compiled policy: spellings must be one of {SPELLINGS}")
        return cls(data)

    @classmethod
    def loads(cls, text: str) -> "Policy":
        """`from_json(json.loads(text))`, with the cyclic garbage collector paused while the
        (acyclic) JSON is parsed: a large policy allocates many small containers, and letting
        the collector rescan them over and over costs more than the parse itself."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            data = json.loads(text)
        finally:
            if enabled:
                gc.enable()
        return cls.from_json(data)

    @property
    def routes(self) -> tuple:
        return tuple(self.route(i) for i in range(len(self._routes)))

    def route(self, index: int) -> Route:
        route = self._routes[index]
        if route is None:
            item = self._data[index]
            route = Route(
                item["name"], item.get("source", ""), bool(item.get("public", False)),
                item.get("origin"), item.get("allow"), item.get("deny"), item.get("match", ()),
                login=bool(item.get("login", False)), origin_auth=item.get("origin_auth"),
                cors=CorsPolicy(item["cors"]) if item.get("cors") else None,
            )
            if not route.public and route._allow_json is None and route._deny_json is None:
                raise ValueError(f"compiled policy: route {route.name} has no condition")
            self._routes[index] = route
        return route

    def _pick(self, slot: list, method: str) -> Route:
        methods = slot[0]
        index = methods.get(method)
        if index is None:
            index = methods.get("*")
        if index is not None:
            return self.route(index)
        # The most specific pattern owns the path, and none of its routes takes this method.
        refusal = self._refusals.get(slot[1])
        if refusal is None:
            owner = self.route(slot[1])
            refusal = self._refusals[slot[1]] = Route(
                owner.name, owner.source, match_spec=owner.match_spec,
                fixed_decision=Decision(False, "method_not_allowed", owner.name), cors=owner.cors,
            )
        return refusal

    def match(self, method: str, host: str, path: str) -> Route | None:
        """`path` is the output of `paths.canonical_path`; `method` upper-case. Returns the
        route that decides, None when no route matches (default deny). Raises
        AmbiguousSpelling when another spelling of the path is routed elsewhere."""
        host = canonical_host(host)
        if self._fold:
            path = fold_path(path)
        slot = _lookup(self._index, host, path[1:].split("/"))
        if slot is None:
            return None
        route = self._pick(slot, method)
        # Only a route that may let the request through needs its spelling checked: a refusal
        # is a refusal however the path is spelt.
        if len(slot) > 2 and route.fixed_decision is None:
            self._check_spelling(method, host, path, route)
        return route

    def _check_spelling(self, method: str, host: str, path: str, route: Route) -> None:
        folded = fold_path(path)
        slot = _lookup(self._folded, host, folded[1:].split("/"))
        # The folded path always matches the folded form of the pattern that matched, so a
        # missing slot would be a compiler bug: refuse rather than guess.
        other = None if slot is None else self._pick(slot, method)
        if other is not route:
            if other is None:
                decides = "no route"
            elif other.fixed_decision is not None:
                decides = f"{other.name} ({other.fixed_decision.reason})"
            else:
                decides = other.name
            raise AmbiguousSpelling(path, folded, route.name, decides)

    def verdict(self, route: Route | None, identity: Identity | None) -> Decision:
        """The decision of `route` (from `match`) for `identity` (None: no token)."""
        if route is None:
            return NO_ROUTE
        if route.fixed_decision is not None:
            return route.fixed_decision
        if route.public:
            return Decision(True, "public", route.name)
        if identity is None:
            return Decision(False, "token_required", route.name)
        return route.evaluate(identity)

    def decide(self, method: str, host: str, path: str, identity: Identity | None) -> Decision:
        """`verdict(match(...))`; raises AmbiguousSpelling as `match` does."""
        return self.verdict(self.match(method, host, path), identity)
