"""Compiled policy: route index and decision. Standard library only (runs in Pyodide).

The build-time compiler (`entragate_tools`) turns the TOML files in `policies/` into plain
JSON; the Worker and the CLI (`explain`, `test`) both load it with `Policy.from_json`, so the
CLI runs exactly the decision code the edge runs.

Compiled form (format 1)::

    {"format": 1, "version": "<12 hex>",
     "routes": [{"name": str, "source": str, "public": bool, "origin": str | null,
                 "allow": COND | null, "deny": COND | null,
                 "match": [[HOST, PATTERN, [METHOD, ...]], ...]}, ...]}

    HOST    "*" (any host) | "*.example.com" (any host below example.com) | "api.example.com"
    PATTERN "/a/b" | "/a/*/c" (`*` = exactly one non-empty segment) | "/a/**" (`/a` and
            everything below it; `**` only as the last segment)
    METHOD  upper-case method, or "*" for every method
    COND    ["true"] | ["groups"|"roles"|"scopes"|"clients"|"tenants"|"users", [str, ...]]
            | ["kind", "user"|"app"] | ["any", [COND, ...]] | ["all", [COND, ...]]
            | ["not", COND]

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
hold if the token also had the scopes the route names), groups_overage.
"""

from dataclasses import dataclass, replace

from .identity import Identity
from .paths import canonical_host

FORMAT = 1


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


class Route:
    """One compiled route. `evaluate` is called with the validated identity."""

    __slots__ = (
        "name", "source", "public", "origin", "fixed_decision", "match_spec",
        "_allow_json", "_deny_json", "_allow", "_deny", "_scopes", "_ready",
        "_allowed", "_denied", "_overage", "_not_met", "_scope",
    )

    def __init__(self, name, source="", public=False, origin=None, allow=None, deny=None,
                 match_spec=(), fixed_decision=None):
        self.name = name
        self.source = source
        self.public = public
        self.origin = origin
        # Set on the stand-in route returned for a method nobody allowed: the decision is
        # known without a token, so the gateway may answer it without validating one.
        self.fixed_decision = fixed_decision
        self.match_spec = match_spec
        self._allow_json = allow
        self._deny_json = deny
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


class _Slot:
    """The routes that share one (host, pattern): a method table."""

    __slots__ = ("methods", "any_route", "refusal", "first")

    def __init__(self):
        self.methods: dict = {}
        self.any_route = None
        self.refusal = None
        self.first = None

    def add(self, methods, route: Route) -> None:
        if self.first is None:
            self.first = route
        for method in methods:
            if method == "*":
                if self.any_route is not None or self.methods:
                    raise ValueError(f"duplicate route: {route.name}")
                self.any_route = route
            else:
                if self.any_route is not None or method in self.methods:
                    raise ValueError(f"duplicate route: {route.name} ({method})")
                self.methods[method] = route

    def pick(self, method: str) -> Route:
        route = self.methods.get(method)
        if route is not None:
            return route
        if self.any_route is not None:
            return self.any_route
        if self.refusal is None:
            first = self.first
            self.refusal = Route(
                first.name, first.source, match_spec=first.match_spec,
                fixed_decision=Decision(False, "method_not_allowed", first.name),
            )
        return self.refusal


class _Node:
    __slots__ = ("lit", "star", "end", "dstar")

    def __init__(self):
        self.lit: dict = {}
        self.star = None
        self.end = None
        self.dstar = None


def split_pattern(pattern: str) -> list:
    return pattern[1:].split("/")


def _insert(root: _Node, pattern: str) -> _Slot:
    node = root
    segs = split_pattern(pattern)
    for i, seg in enumerate(segs):
        if seg == "**":
            if i != len(segs) - 1:
                raise ValueError(f"'**' must be the last segment: {pattern}")
            if node.dstar is None:
                node.dstar = _Slot()
            return node.dstar
        if seg == "*":
            if node.star is None:
                node.star = _Node()
            node = node.star
        else:
            child = node.lit.get(seg)
            if child is None:
                child = node.lit[seg] = _Node()
            node = child
    if node.end is None:
        node.end = _Slot()
    return node.end


def _find(node: _Node, segs: list, i: int):
    if i == len(segs):
        return node.end or node.dstar
    seg = segs[i]
    child = node.lit.get(seg)
    if child is not None:
        found = _find(child, segs, i + 1)
        if found is not None:
            return found
    if node.star is not None and seg:
        found = _find(node.star, segs, i + 1)
        if found is not None:
            return found
    return node.dstar


class Policy:
    """The route index: exact hosts (dict), wildcard hosts (dict by suffix), any host; each
    a trie over path segments. A match costs a few dict lookups per path segment, however
    many routes there are."""

    __slots__ = ("version", "routes", "_exact", "_wild", "_any")

    def __init__(self, version: str, routes: tuple):
        self.version = version
        self.routes = routes
        self._exact: dict = {}
        self._wild: dict = {}
        self._any = None

    @classmethod
    def from_json(cls, data: dict) -> "Policy":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"compiled policy: expected format {FORMAT}")
        routes = []
        policy = cls(str(data.get("version", "")), ())
        for item in data["routes"]:
            route = Route(
                item["name"], item.get("source", ""), bool(item.get("public", False)),
                item.get("origin"), item.get("allow"), item.get("deny"),
                tuple(tuple(m) for m in item["match"]),
            )
            if not route.public and route._allow_json is None and route._deny_json is None:
                raise ValueError(f"route {route.name} has no condition")
            routes.append(route)
            for host, pattern, methods in item["match"]:
                _insert(policy._root(host), pattern).add(methods, route)
        policy.routes = tuple(routes)
        return policy

    def _root(self, host: str) -> _Node:
        if host == "*":
            if self._any is None:
                self._any = _Node()
            return self._any
        table, key = (self._wild, host[2:]) if host.startswith("*.") else (self._exact, host)
        root = table.get(key)
        if root is None:
            root = table[key] = _Node()
        return root

    def match(self, method: str, host: str, path: str) -> Route | None:
        """`path` is the output of `paths.canonical_path`; `method` upper-case."""
        segs = path[1:].split("/")
        host = canonical_host(host)
        if self._exact:
            root = self._exact.get(host)
            if root is not None:
                slot = _find(root, segs, 0)
                if slot is not None:
                    return slot.pick(method)
        if self._wild:
            dot = host.find(".")
            while dot != -1:
                root = self._wild.get(host[dot + 1 :])
                if root is not None:
                    slot = _find(root, segs, 0)
                    if slot is not None:
                        return slot.pick(method)
                dot = host.find(".", dot + 1)
        if self._any is not None:
            slot = _find(self._any, segs, 0)
            if slot is not None:
                return slot.pick(method)
        return None

    def decide(self, method: str, host: str, path: str, identity: Identity | None) -> Decision:
        route = self.match(method, host, path)
        if route is None:
            return NO_ROUTE
        if route.fixed_decision is not None:
            return route.fixed_decision
        if route.public:
            return Decision(True, "public", route.name)
        if identity is None:
            return Decision(False, "token_required", route.name)
        return route.evaluate(identity)
