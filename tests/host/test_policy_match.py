"""Route index: host tiers, path precedence, methods, default deny (edge code, via the compiler)."""

import json
import textwrap

import pytest

from entragate.policy import Policy
from entragate_tools.compiler import compile_policies


def build(tmp_path, text: str) -> Policy:
    (tmp_path / "p.toml").write_text(textwrap.dedent(text))
    compiled = compile_policies(tmp_path)
    # The edge loads exactly the JSON text the compiler emits.
    return Policy.from_json(json.loads(compiled.json_text))


def route_name(policy, method, host, path):
    route = policy.match(method, host, path)
    return None if route is None else route.name


def public_routes(*specs) -> str:
    """specs: (name, hosts or None, path, methods or None) -> TOML of public routes."""
    out = []
    for name, hosts, path, methods in specs:
        out.append("[[routes]]")
        out.append(f'name = "{name}"')
        if hosts is not None:
            out.append("hosts = " + json.dumps(hosts))
        out.append(f'paths = ["{path}"]')
        if methods is not None:
            out.append("methods = " + json.dumps(methods))
        out.append("public = true\n")
    return "\n".join(out)


def test_path_precedence_literal_beats_star_beats_subtree(tmp_path):
    policy = build(tmp_path, public_routes(
        ("subtree", None, "/a/**", None),
        ("star", None, "/a/*", None),
        ("literal", None, "/a/b", None),
        ("deep-star", None, "/a/*/c", None),
        ("deep-literal", None, "/a/b/**", None),
        ("root", None, "/", None),
        ("all", None, "/**", None),
    ))
    assert route_name(policy, "GET", "h", "/a/b") == "literal"
    assert route_name(policy, "GET", "h", "/a/x") == "star"
    assert route_name(policy, "GET", "h", "/a") == "subtree"  # ** matches zero segments
    assert route_name(policy, "GET", "h", "/a/") == "subtree"  # '*' needs a non-empty segment
    assert route_name(policy, "GET", "h", "/a/x/y") == "subtree"
    assert route_name(policy, "GET", "h", "/a/x/c") == "deep-star"
    # Left to right: at the second segment the literal 'b' beats '*'.
    assert route_name(policy, "GET", "h", "/a/b/c") == "deep-literal"
    assert route_name(policy, "GET", "h", "/") == "root"
    assert route_name(policy, "GET", "h", "/zzz/q") == "all"


def test_backtracks_when_the_literal_branch_has_no_match(tmp_path):
    policy = build(tmp_path, public_routes(
        ("lit", None, "/a/b/c", None),
        ("star", None, "/a/*/d", None),
    ))
    assert route_name(policy, "GET", "h", "/a/b/d") == "star"
    assert route_name(policy, "GET", "h", "/a/b/c") == "lit"
    assert route_name(policy, "GET", "h", "/a/b/e") is None


def test_file_order_does_not_matter(tmp_path):
    a = build(tmp_path, public_routes(("sub", None, "/a/**", None), ("lit", None, "/a/b", None)))
    b = build(tmp_path, public_routes(("lit", None, "/a/b", None), ("sub", None, "/a/**", None)))
    for path in ("/a/b", "/a/c", "/a"):
        assert route_name(a, "GET", "h", path) == route_name(b, "GET", "h", path)


def test_host_precedence_exact_then_longest_wildcard_then_any(tmp_path):
    policy = build(tmp_path, public_routes(
        ("any", None, "/**", None),
        ("wild", ["*.example.com"], "/**", None),
        ("wild-deep", ["*.eu.example.com"], "/**", None),
        ("exact", ["api.eu.example.com"], "/**", None),
    ))
    assert route_name(policy, "GET", "api.eu.example.com", "/x") == "exact"
    assert route_name(policy, "GET", "web.eu.example.com", "/x") == "wild-deep"
    assert route_name(policy, "GET", "eu.example.com", "/x") == "wild"
    assert route_name(policy, "GET", "a.b.c.example.com", "/x") == "wild"
    assert route_name(policy, "GET", "example.com", "/x") == "any"  # wildcard needs a label
    assert route_name(policy, "GET", "example.org", "/x") == "any"
    assert route_name(policy, "GET", "notexample.com", "/x") == "any"


def test_host_tier_without_matching_path_falls_through(tmp_path):
    policy = build(tmp_path, public_routes(
        ("health", None, "/healthz", ["GET"]),
        ("exact", ["api.example.com"], "/v1/**", None),
    ))
    assert route_name(policy, "GET", "api.example.com", "/healthz") == "health"
    assert route_name(policy, "GET", "api.example.com", "/v1/x") == "exact"
    assert route_name(policy, "GET", "other.example.com", "/v1/x") is None


def test_host_normalisation(tmp_path):
    policy = build(tmp_path, public_routes(("exact", ["api.example.com"], "/**", None)))
    for host in ("api.example.com", "API.Example.Com", "api.example.com:8443", "api.example.com."):
        assert route_name(policy, "GET", host, "/x") == "exact", host
    assert route_name(policy, "GET", "api.example.com.evil.net", "/x") is None
    assert route_name(policy, "GET", "xapi.example.com", "/x") is None


def test_default_deny_no_route(tmp_path):
    policy = build(tmp_path, public_routes(("api", None, "/api/**", None)))
    assert policy.match("GET", "h", "/apix") is None
    assert policy.match("GET", "h", "/") is None
    decision = policy.decide("GET", "h", "/other", None)
    assert (decision.allowed, decision.reason, decision.rule) == (False, "no_route", None)


def test_method_owned_by_most_specific_pattern(tmp_path):
    policy = build(tmp_path, public_routes(
        ("catch-all", None, "/**", None),
        ("read", None, "/docs/**", ["GET", "HEAD"]),
        ("write", None, "/docs/**", ["POST"]),
    ))
    assert route_name(policy, "GET", "h", "/docs/a") == "read"
    assert route_name(policy, "HEAD", "h", "/docs/a") == "read"
    assert route_name(policy, "POST", "h", "/docs/a") == "write"
    # DELETE is not picked up by the catch-all: the /docs/** pattern owns the path.
    decision = policy.decide("DELETE", "h", "/docs/a", None)
    assert (decision.allowed, decision.reason, decision.rule) == (False, "method_not_allowed", "read")
    route = policy.match("DELETE", "h", "/docs/a")
    assert route.fixed_decision == decision and route.evaluate(None) == decision
    assert route_name(policy, "DELETE", "h", "/other") == "catch-all"


def test_head_is_not_implied_by_get(tmp_path):
    policy = build(tmp_path, public_routes(("get", None, "/x", ["GET"])))
    assert policy.decide("HEAD", "h", "/x", None).reason == "method_not_allowed"


def test_multiple_hosts_and_paths_in_one_route(tmp_path):
    policy = build(tmp_path, public_routes(("multi", ["a.example.com", "*.b.example.com"], "/x", None)))
    assert route_name(policy, "GET", "a.example.com", "/x") == "multi"
    assert route_name(policy, "GET", "q.b.example.com", "/x") == "multi"
    assert route_name(policy, "GET", "c.example.com", "/x") is None


def test_trailing_slash_is_matched_as_written_by_one_route(tmp_path):
    # `/a/` is matched as its own path, but two routes cannot split `/a` and `/a/` between
    # them: most origins serve both as one path (a compile error, test_spellings.py).
    policy = build(tmp_path, public_routes(("noslash", None, "/a", None), ("sub", None, "/b/**", None)))
    assert route_name(policy, "GET", "h", "/a") == "noslash"
    assert route_name(policy, "GET", "h", "/a/") is None
    assert route_name(policy, "GET", "h", "/b/") == "sub"


def test_decoded_literals_match_decoded_paths(tmp_path):
    policy = build(tmp_path, public_routes(("space", None, "/my docs/**", None)))
    from entragate.paths import canonical_path

    assert route_name(policy, "GET", "h", canonical_path("/my%20docs/x")) == "space"


def test_edge_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="format"):
        Policy.from_json({"format": 1, "routes": [], "index": {}})
    with pytest.raises(ValueError, match="required"):
        Policy.from_json({"format": 3, "routes": [], "spellings": "refuse"})
    with pytest.raises(ValueError, match="spellings"):
        Policy.from_json({"format": 3, "routes": [], "index": {}, "spellings": "ignore"})
    no_condition = {
        "format": 3, "version": "x", "spellings": "refuse",
        "routes": [{"name": "c", "match": [["*", "/y", ["*"]]]}],
        "index": {"any": {"l": {"y": {"e": [{"*": 0}, 0]}}}},
    }
    policy = Policy.from_json(no_condition)
    with pytest.raises(ValueError, match="no condition"):
        policy.match("GET", "h", "/y")


def test_index_is_in_the_compiled_json(tmp_path):
    (tmp_path / "p.toml").write_text(public_routes(("a", ["x.example.com"], "/a/*/b", ["GET"]), ("w", ["*.example.com"], "/**", None)))
    data = json.loads(compile_policies(tmp_path).json_text)
    assert data["index"]["exact"]["x.example.com"] == {"l": {"a": {"s": {"l": {"b": {"e": [{"GET": 0}, 0]}}}}}}
    # `/A/x/b` on x.example.com falls from the exact host to `*.example.com`, while its folded
    # form belongs to route a: that slot carries the spelling check (1), so the folded index ships.
    assert data["index"]["wild"]["example.com"] == {"d": [{"*": 1}, 1, 1]}
    assert data["index"]["any"] is None
    assert data["spellings"] == "refuse" and data["folded"]["exact"] == data["index"]["exact"]
    (tmp_path / "p.toml").write_text(public_routes(("a", ["x.example.com"], "/a/*/b", ["GET"])))
    data = json.loads(compile_policies(tmp_path).json_text)
    assert data["folded"] is None  # no slot to check: nothing more to load at the edge


def test_route_attributes(tmp_path):
    (tmp_path / "p.toml").write_text(textwrap.dedent("""
        [[routes]]
        paths = ["/a"]
        public = true
        origin = "https://origin.internal.example/base"

        [[routes]]
        name = "named"
        paths = ["/b"]
        allow = { authenticated = true }
    """))
    compiled = compile_policies(tmp_path)
    policy = Policy.from_json(json.loads(compiled.json_text))
    first = policy.match("GET", "h", "/a")
    assert (first.name, first.public, first.origin) == ("p.toml:routes[0]", True, "https://origin.internal.example/base")
    second = policy.match("GET", "h", "/b")
    assert (second.name, second.public, second.origin) == ("named", False, None)
    assert policy.version == compiled.version and len(policy.version) == 12
