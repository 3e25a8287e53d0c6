"""Spelling equivalence (issue #13, item 2): letter case, a trailing slash, a format suffix.

Origins serve several spellings of a path as one resource (ASP.NET Core, IIS and Express
ignore case; Express, ASP.NET Core, Rails and Spring before 6 ignore a trailing slash; Rails
and Spring before 5.3 read `/users.json` as `/users`). A request whose spelling would be
decided by another route than its folded form is refused as ambiguous_path, unless the
policy says `spellings = "fold"` and is matched on the folded form.
"""

import json
import sys
import textwrap

import pytest

from entragate.errors import AmbiguousPath, AmbiguousSpelling
from entragate.paths import canonical_path, fold_path, fold_segment
from entragate.policy import CHECK_SPELLING, Policy
from entragate_tools.compiler import PolicyError, compile_policies
from entragate_tools.spellings import sample_host
from fixtures.host_gateway import gateway_answer

G_ADMIN = "11111111-1111-4111-8111-111111111111"


def write(tmp_path, text: str, name: str = "p.toml"):
    (tmp_path / name).write_text(textwrap.dedent(text).lstrip())


def build(tmp_path, text: str, settings: str = "") -> Policy:
    write(tmp_path, (f"[settings]\n{settings}\n" if settings else "") + textwrap.dedent(text))
    return Policy.from_json(json.loads(compile_policies(tmp_path).json_text))


def name(policy, method, host, path):
    route = policy.match(method, host, path)
    return None if route is None else route.name


def slots(index: dict) -> list:
    """Every slot of a compiled index."""
    out = []

    def walk(node):
        out.extend(node[key] for key in ("e", "d") if key in node)
        for child in (*node.get("l", {}).values(), *([node["s"]] if "s" in node else [])):
            walk(child)

    for root in (*index["exact"].values(), *index["wild"].values(), *([index["any"]] if index["any"] else [])):
        walk(root)
    return out


def refused(policy, method, host, path) -> AmbiguousSpelling:
    with pytest.raises(AmbiguousSpelling) as info:
        policy.match(method, host, path)
    return info.value


# ---------------------------------------------------------------- the fold


@pytest.mark.parametrize("path, folded", [
    ("/", "/"),
    ("/Admin/Users", "/admin/users"),
    ("/admin/users/", "/admin/users"),  # one trailing slash
    ("/admin/users.json", "/admin/users"),  # a format suffix, from the first dot
    ("/admin/users.tar.gz", "/admin/users"),
    ("/ADMIN/Users.JSON/", "/admin/users"),  # all three, slash first
    ("/admin.", "/admin"),  # Windows drops trailing dots
    ("/v1.0/items", "/v1.0/items"),  # only the last segment loses its suffix
    ("/.well-known/x", "/.well-known/x"),
    ("/a/.env", "/a/.env"),  # a leading dot is a name, not a suffix
    ("/a/.env.json", "/a/.env"),
    ("/\uff21dmin/x", "/admin/x"),  # full-width A (NFKC)
    ("/\u0130nbox", "/inbox"), ("/\u0131nbox", "/inbox"),  # Turkish dotted and dotless i
    ("/\u212aeys", "/keys"),  # Kelvin sign
    ("/stra\u00dfe", "/strasse"),
    ("/caf\u00c9/x", "/caf\u00e9/x"),
])
def test_fold_path(path, folded):
    assert fold_path(path) == folded
    assert fold_path(folded) == folded  # a folded path is its own class key


def test_fold_segment_agrees_with_every_simple_case_mapping():
    """Whatever an origin reads as the same letter (its upper- or lower-case form, as Java's
    equalsIgnoreCase, .NET's OrdinalIgnoreCase and JavaScript's /i compare) folds alike;
    folding never makes a delimiter or an empty segment."""
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        key = fold_segment(char)
        assert key, hex(code)
        for mapped in (char.upper(), char.lower()):
            if len(mapped) == 1:
                assert fold_segment(mapped) == key, (hex(code), mapped)
        if "/" in key and char != "/":  # such characters never pass canonical_path
            with pytest.raises(AmbiguousPath):
                canonical_path("/a" + char)


def test_a_pattern_literal_that_folds_to_a_wildcard_is_refused(tmp_path):
    write(tmp_path, '[[routes]]\npaths = ["/a/\uff0a"]\npublic = true\n')
    with pytest.raises(PolicyError) as info:
        compile_policies(tmp_path)
    assert "folds to a '*'" in str(info.value)


# ---------------------------------------------------------------- the three classes x three layouts

# (layout, routes TOML, host the request is sent to, narrow route, broad route)
LAYOUTS = {
    "deny under allow": ("""
        [[routes]]
        name = "broad"
        paths = ["/docs/**", "/docs/*"]
        allow = { authenticated = true }

        [[routes]]
        name = "narrow"
        paths = ["/docs/secret", "/docs/vault/**"]
        deny = { authenticated = true }
    """, "app.example.net"),
    "stricter route under looser": ("""
        [[routes]]
        name = "broad"
        paths = ["/docs/**", "/docs/*"]
        allow = { scopes = ["read"] }

        [[routes]]
        name = "narrow"
        paths = ["/docs/secret", "/docs/vault/**"]
        allow = { roles = ["Docs.Admin"], kind = "user" }
    """, "app.example.net"),
    "another host": ("""
        [[routes]]
        name = "broad"
        paths = ["/**"]
        public = true

        [[routes]]
        name = "narrow"
        hosts = ["admin.example.net"]
        paths = ["/docs/secret", "/docs/vault/**"]
        allow = { groups = ["%s"] }
    """ % G_ADMIN, "admin.example.net"),
}
# (spelling class, as written, another spelling of it)
SPELLINGS = {
    "case": ("/docs/vault/keys", "/docs/Vault/keys"),
    "trailing slash": ("/docs/secret", "/docs/secret/"),
    "suffix": ("/docs/secret", "/docs/secret.json"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_another_spelling_is_refused_or_folded(tmp_path, layout, spelling):
    routes, host = LAYOUTS[layout]
    written, respelt = SPELLINGS[spelling]
    policy = build(tmp_path, routes)
    assert name(policy, "GET", host, written) == "narrow"
    error = refused(policy, "GET", host, respelt)
    assert (error.route, error.folded_route, error.folded) == ("broad", "narrow", fold_path(respelt))
    assert (error.status, error.code) == (400, "ambiguous_path")
    assert "narrow" not in error.detail and "broad" not in error.detail  # clients learn no route names
    # Paths the narrow route has no say in keep their route in every spelling.
    for other in ("/docs/readme", "/docs/Readme", "/docs/readme/", "/docs/readme.json"):
        assert name(policy, "GET", host, other) == "broad", other
    # Declared: the origins serve spellings as one path. Then the folded form decides.
    folded = build(tmp_path, routes, 'spellings = "fold"')
    assert name(folded, "GET", host, respelt) == "narrow"
    assert name(folded, "GET", host, written) == "narrow"
    assert name(folded, "GET", host, "/DOCS/Readme.html") == "broad"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_check_warns_with_both_routes_and_a_refused_example(tmp_path, layout):
    routes, host = LAYOUTS[layout]
    write(tmp_path, routes)
    warnings = [str(w) for w in compile_policies(tmp_path).warnings]
    assert len(warnings) == 1, warnings
    warning = warnings[0]
    assert 'routes[1] "narrow" .paths' in warning and "fall to the broader route 'broad'" in warning
    assert "p.toml routes[0]" in warning and "400 ambiguous_path" in warning and 'spellings = "fold"' in warning
    # The example is a request the compiled policy really refuses.
    example = warning.split("e.g. ")[1].split(")")[0]
    method, url = example.split(" ")
    assert url.startswith("https://")
    assert gateway_answer(url, method, policies=tmp_path).code == "ambiguous_path"
    # Folding removes the overlap, and the warning with it.
    write(tmp_path, '[settings]\nspellings = "fold"\n' + textwrap.dedent(routes))
    assert compile_policies(tmp_path).warnings == []


@pytest.mark.parametrize("broad, narrow, narrow_host, written, respelt", [
    ("/docs/*", "/docs/a", None, "/docs/a", "/docs/A"),  # a literal beside `*`
    ("/docs/**", "/docs/a/b", None, "/docs/a/b", "/docs/A/b"),  # anything below `**`
    ("/docs/**", "/docs", None, "/docs", "/docs/"),  # the path `**` starts at
    ("/*/c", "/a/*", None, "/a/c", "/A/c"),  # won at a literal, then `*` against a literal
    ("/*/x", "/a/**", None, "/a/x", "/A/x"),  # won at a literal, then `**`
    ("/files/*", "/files/report.pdf/**", None, "/files/report.pdf", "/files/report.PDF"),  # `/files/report`
    ("/*", "/x", "*.example.com", "/x", "/X"),  # a host tier tried first
    ("/**", "/x/**", "api.example.com", "/x/y", "/X/y"),
])
def test_every_way_a_folded_pattern_can_win_is_checked(tmp_path, broad, narrow, narrow_host, written, respelt):
    """The compiler marks a slot for checking when another route's folded pattern can beat it
    on some path (spellings.py `_rivals`); each shape here is one branch of that walk."""
    hosts = f"hosts = [\"{narrow_host}\"]" if narrow_host else ""
    policy = build(tmp_path, f"""
        [[routes]]
        name = "broad"
        paths = ["{broad}"]
        public = true

        [[routes]]
        name = "narrow"
        {hosts}
        paths = ["{narrow}"]
        deny = {{ authenticated = true }}
    """)
    host = sample_host(narrow_host or "*")
    assert name(policy, "GET", host, written) == "narrow"
    error = refused(policy, "GET", host, respelt)
    assert (error.route, error.folded_route) == ("broad", "narrow")


def test_no_overlap_no_check_and_no_folded_index(tmp_path, monkeypatch):
    """The common case pays nothing: no slot is marked, no folded index ships, and matching
    never folds a path."""
    write(tmp_path, """
        [[routes]]
        paths = ["/api/**"]
        methods = ["GET"]
        allow = { scopes = ["read"] }

        [[routes]]
        paths = ["/api/**"]
        methods = ["POST"]
        allow = { roles = ["Write"] }

        [[routes]]
        paths = ["/admin/**", "/Reports/Q1"]
        allow = { roles = ["Admin"] }
    """)
    compiled = compile_policies(tmp_path)
    assert compiled.warnings == [] and compiled.data["folded"] is None
    assert not any(len(slot) > 2 for slot in slots(compiled.data["index"]))
    import entragate.policy

    monkeypatch.setattr(entragate.policy, "fold_path", lambda path: pytest.fail(f"folded {path}"))
    policy = Policy.from_json(json.loads(compiled.json_text))
    assert name(policy, "GET", "h", "/API/x") is None  # no route: refused without folding
    assert name(policy, "POST", "h", "/api/X.json") == "p.toml:routes[1]"
    assert name(policy, "GET", "h", "/reports/q1") is None


def test_refusals_are_never_folded(tmp_path):
    policy = build(tmp_path, """
        [[routes]]
        name = "broad"
        paths = ["/docs/**"]
        methods = ["GET"]
        public = true

        [[routes]]
        name = "narrow"
        paths = ["/docs/secret/**"]
        deny = { authenticated = true }
    """)
    # No route, or a method nobody allowed: a refusal however the path is spelt.
    assert name(policy, "GET", "h", "/DOCS/Secret") is None
    assert policy.decide("POST", "h", "/docs/Secret", None).reason == "method_not_allowed"


def test_one_route_in_several_spellings_is_not_ambiguous(tmp_path):
    policy = build(tmp_path, """
        [[routes]]
        name = "docs"
        paths = ["/docs/**", "/docs/Secret", "/docs/x.json"]
        public = true
    """)
    for path in ("/docs/secret", "/docs/SECRET/", "/docs/x", "/docs/X.xml"):
        assert name(policy, "GET", "h", path) == "docs"


# ---------------------------------------------------------------- methods


def test_method_ownership_is_not_escaped_by_spelling(tmp_path):
    """`/docs/**` owns its paths for every method (DELETE is method_not_allowed there, never
    the catch-all's); spelling it `/Docs` must not hand DELETE to the catch-all."""
    policy = build(tmp_path, """
        [[routes]]
        name = "catch-all"
        paths = ["/**"]
        public = true

        [[routes]]
        name = "docs-read"
        paths = ["/docs/**"]
        methods = ["GET"]
        allow = { scopes = ["read"] }
    """)
    assert policy.decide("DELETE", "h", "/docs/x", None).reason == "method_not_allowed"
    error = refused(policy, "DELETE", "h", "/Docs/x")
    assert (error.route, error.folded_route) == ("catch-all", "docs-read (method_not_allowed)")
    # HEAD is not implied by GET, in any spelling.
    assert policy.decide("HEAD", "h", "/docs/x", None).reason == "method_not_allowed"
    assert refused(policy, "HEAD", "h", "/docs.json").route == "catch-all"
    assert refused(policy, "GET", "h", "/DOCS/x").folded_route == "docs-read"
    assert name(policy, "DELETE", "h", "/other/X") == "catch-all"


def test_same_pattern_split_by_method_is_one_path(tmp_path):
    policy = build(tmp_path, """
        [[routes]]
        name = "read"
        paths = ["/api/**"]
        methods = ["GET", "HEAD"]
        allow = { scopes = ["read"] }

        [[routes]]
        name = "write"
        paths = ["/API/**"]
        methods = ["POST"]
        allow = { roles = ["Write"] }
    """)
    # Disjoint methods: one folded path, each method with its own route.
    assert name(policy, "GET", "h", "/api/x") == "read"
    assert name(policy, "POST", "h", "/API/x") == "write"
    # POST /api/x: as written only `read` owns `/api` (method_not_allowed): a refusal anyway.
    assert policy.decide("POST", "h", "/api/x", None).reason == "method_not_allowed"


# ---------------------------------------------------------------- routes that split one path


@pytest.mark.parametrize("first, second", [
    ("/a/B", "/a/b"), ("/a", "/a/"), ("/a", "/a.json"), ("/reports/**", "/Reports/**"),
    ("/a/b", "/a/b.json/**"),  # `/a/b.json` (matched by `/a/b.json/**`) is `/a/b`
])
def test_routes_that_split_spellings_of_one_path_are_an_error(tmp_path, first, second):
    write(tmp_path, f"""
        [[routes]]
        name = "one"
        paths = ["{first}"]
        public = true

        [[routes]]
        name = "two"
        paths = ["{second}"]
        allow = {{ authenticated = true }}
    """)
    with pytest.raises(PolicyError) as info:
        compile_policies(tmp_path)
    [error] = [str(e) for e in info.value.errors]
    assert 'routes[1] "two" .paths' in error and f"{second} and {first}" in error
    assert "'one'" in error and "spellings of one path" in error


def test_disjoint_methods_or_hosts_may_split_spellings(tmp_path):
    write(tmp_path, """
        [[routes]]
        paths = ["/a/B"]
        methods = ["GET"]
        public = true

        [[routes]]
        paths = ["/a/b"]
        methods = ["POST"]
        public = true

        [[routes]]
        hosts = ["x.example.com"]
        paths = ["/a/b/"]
        public = true
    """)
    compile_policies(tmp_path)


# ---------------------------------------------------------------- the setting


def test_spellings_setting_is_set_once_and_checked(tmp_path):
    write(tmp_path, '[settings]\nspellings = "fold"\n', "a.toml")
    write(tmp_path, '[settings]\nspellings = "fold"\n\n[[routes]]\npaths = ["/x"]\npublic = true\n', "b.toml")
    with pytest.raises(PolicyError) as info:
        compile_policies(tmp_path)
    assert "b.toml:2: error: settings.spellings: setting 'spellings' is already set in" in str(info.value)
    (tmp_path / "a.toml").unlink()
    write(tmp_path, '[settings]\nspellings = "ignore"\n\n[[routes]]\npaths = ["/x"]\npublic = true\n', "b.toml")
    with pytest.raises(PolicyError) as info:
        compile_policies(tmp_path)
    assert "settings.spellings" in str(info.value) and "'refuse' or 'fold'" in str(info.value)


def test_fold_mode_matches_every_path_on_its_folded_form(tmp_path):
    policy = build(tmp_path, """
        [[routes]]
        name = "admin"
        paths = ["/Admin/**"]
        allow = { authenticated = true }

        [[routes]]
        name = "health"
        paths = ["/healthz"]
        methods = ["GET"]
        public = true
    """, 'spellings = "fold"')
    for path in ("/admin", "/ADMIN/Users/", "/admin.json", "/Admin/x.json"):
        assert name(policy, "GET", "h", path) == "admin", path
    for path in ("/healthz", "/HealthZ/", "/healthz.json"):
        assert name(policy, "GET", "h", path) == "health", path
    assert policy.decide("POST", "h", "/Healthz", None).reason == "method_not_allowed"
    assert name(policy, "GET", "h", "/healthz/x") is None


def test_fold_mode_reports_patterns_shadowed_once_folded(tmp_path):
    write(tmp_path, """
        [settings]
        spellings = "fold"

        [[routes]]
        paths = ["/a/**"]
        public = true

        [[routes]]
        paths = ["/A", "/a/*/**", "/a/b.json/**"]
        public = true
    """)
    warnings = [str(w) for w in compile_policies(tmp_path).warnings]
    assert len(warnings) == 1 and "/a/** can never match" in warnings[0], warnings


# ---------------------------------------------------------------- the gateway


def test_gateway_refuses_with_400_before_any_token(tmp_path):
    write(tmp_path, LAYOUTS["deny under allow"][0])
    answer = gateway_answer("https://app.example.net/docs/Vault/keys", policies=tmp_path)
    assert (answer.status, answer.code, answer.rule) == (400, "ambiguous_path", None)
    assert json.loads(answer.body)["detail"].startswith("another spelling of this path")
    # The written spelling is the narrow route's to decide: a token is asked for.
    answer = gateway_answer("https://app.example.net/docs/vault/keys", policies=tmp_path)
    assert (answer.status, answer.code, answer.rule) == (401, "missing_token", "narrow")
