"""Schema validation and compiler diagnostics: file, location, line, message."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from entragate_tools.compiler import PolicyError, compile_policies, module_text
from entragate_tools.schema import PolicyFile
from fixtures.examples import EXAMPLE_POLICIES

REPO = Path(__file__).resolve().parents[2]
G1 = "11111111-1111-4111-8111-111111111111"


def write(tmp_path, name, text):
    (tmp_path / name).write_text(textwrap.dedent(text).lstrip())


def errors_of(tmp_path) -> list:
    with pytest.raises(PolicyError) as info:
        compile_policies(tmp_path)
    return [str(e) for e in info.value.errors]


def never_matches(tmp_path) -> list:
    """The "can never match" warnings (a policy may also draw spelling warnings)."""
    return [str(w) for w in compile_policies(tmp_path).warnings if "can never match" in w.message]


def one_error(tmp_path) -> str:
    errors = errors_of(tmp_path)
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------- schema


def test_unknown_key_names_file_route_line_and_suggests(tmp_path):
    write(tmp_path, "api.toml", """
        [[routes]]
        name = "ok"
        paths = ["/a"]
        public = true

        [[routes]]
        name = "typo"
        paths = ["/b"]
        method = ["GET"]
        public = true
    """)
    error = one_error(tmp_path)
    assert "api.toml:9: error:" in error
    assert 'routes[1] "typo" .method' in error
    assert "unknown key 'method'" in error and "did you mean 'methods'?" in error


def test_bad_type_is_not_coerced(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        public = "true"
    """)
    error = one_error(tmp_path)
    assert "routes[0] .public" in error and "valid boolean" in error and "'true'" in error
    assert ":3: error:" in error


def test_bad_nested_condition_location(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        name = "deep"
        paths = ["/a"]
        allow = { any = [{ roles = ["R"] }, { groups = "not-a-list" }] }
    """)
    error = one_error(tmp_path)
    assert 'routes[0] "deep" .allow.any[1].groups' in error and "valid list" in error
    assert ":4: error:" in error


def test_unknown_condition_key(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        allow = { group = ["x"] }
    """)
    error = one_error(tmp_path)
    assert ".allow.group" in error and "did you mean 'groups'?" in error


def test_unknown_top_level_key(tmp_path):
    write(tmp_path, "p.toml", """
        [route]
        paths = ["/a"]
    """)
    error = one_error(tmp_path)
    assert "unknown key 'route'" in error and "did you mean 'routes'?" in error


def test_toml_syntax_error_has_line(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"
        public = yes
    """)
    error = one_error(tmp_path)
    assert "TOML syntax" in error and "p.toml:" in error


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("paths", '["api"]', "must start with '/'"),
        ("paths", '["/a/**/b"]', "'**' is allowed only as the last segment"),
        ("paths", '["/a*"]', "'*' must be a whole segment"),
        ("paths", '["/a/../b"]', "can never match a request: dot segment"),
        ("paths", '["/a//b"]', "empty path segment"),
        ("paths", '["/a%20b"]', "write paths decoded"),
        ("paths", '["/a;b"]', "path parameter"),
        ("paths", "[]", "at least 1 item"),
        ("hosts", '["Api.example.com"]', "must be lower-case"),
        ("hosts", '["api.example.com."]', "trailing dot"),
        ("hosts", '["api.example.com:443"]', "without a port"),
        ("hosts", '["a.*.example.com"]', "whole first label"),
        ("hosts", '["*.com"]', "at least two labels"),
        ("hosts", '["bad host"]', "not a valid host name"),
        ("methods", '["get"]', "upper-case HTTP method"),
        ("origin", '"ftp://x"', "should match pattern"),
    ],
)
def test_route_field_validation(tmp_path, field, value, message):
    lines = ["[[routes]]", 'paths = ["/ok"]', "public = true"]
    if field == "paths":
        lines[1] = f"paths = {value}"
    else:
        lines.append(f"{field} = {value}")
    (tmp_path / "p.toml").write_text("\n".join(lines) + "\n")
    error = one_error(tmp_path)
    assert f"routes[0] .{field}" in error and message in error, error


def test_public_route_takes_no_conditions(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        public = true
        allow = { authenticated = true }
    """)
    assert "public route takes no allow/deny" in one_error(tmp_path)


def test_route_without_access_rule(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
    """)
    assert "route needs `allow`, `deny`, or `public = true`" in one_error(tmp_path)


def test_empty_condition_is_an_error(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        allow = {}
    """)
    assert "empty condition" in one_error(tmp_path)


def test_bad_alias_table(tmp_path):
    write(tmp_path, "p.toml", """
        [groups]
        admins = "not-a-guid"
    """)
    error = one_error(tmp_path)
    assert "groups.admins" in error and "not a GUID" in error and ":2: error:" in error


def test_every_file_is_checked(tmp_path):
    write(tmp_path, "a.toml", '[[routes]]\npaths = ["x"]\npublic = true\n')
    write(tmp_path, "b.toml", '[[routes]]\npaths = ["/y"]\npublic = 1\n')
    errors = errors_of(tmp_path)
    assert len(errors) == 2
    assert "a.toml" in errors[0] and "b.toml" in errors[1]


# ---------------------------------------------------------------- compiler


def test_unknown_alias(tmp_path):
    write(tmp_path, "p.toml", f"""
        [groups]
        api-writers = "{G1}"

        [[routes]]
        name = "w"
        paths = ["/a"]
        allow = {{ any = [{{ roles = ["R"] }}, {{ groups = ["api-writer"] }}] }}
    """)
    error = one_error(tmp_path)
    assert 'routes[0] "w" .allow.any[1].groups[0]' in error
    assert "unknown groups alias 'api-writer'" in error and "did you mean 'api-writers'?" in error
    assert ":7: error:" in error


def test_unknown_user_alias_without_table(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        deny = { users = ["blocked"] }
    """)
    assert "unknown users alias 'blocked'" in one_error(tmp_path)


def test_aliases_are_shared_across_files_and_not_redefined(tmp_path):
    write(tmp_path, "a.toml", f'[groups]\nadmins = "{G1}"\n')
    write(tmp_path, "b.toml", '[[routes]]\npaths = ["/a"]\nallow = { groups = ["admins"] }\n')
    compile_policies(tmp_path)
    write(tmp_path, "c.toml", f'[groups]\nadmins = "{G1}"\n')
    error = one_error(tmp_path)
    assert "c.toml" in error and "already defined in" in error and "a.toml" in error


def test_duplicate_route(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        name = "one"
        paths = ["/api/**"]
        methods = ["GET", "POST"]
        public = true

        [[routes]]
        name = "two"
        paths = ["/api/**"]
        methods = ["POST", "PUT"]
        allow = { authenticated = true }
    """)
    error = one_error(tmp_path)
    assert 'routes[1] "two" .paths' in error and "duplicate route" in error
    assert "methods POST" in error and "'one'" in error


def test_duplicate_route_across_files_and_all_methods(tmp_path):
    write(tmp_path, "a.toml", '[[routes]]\nhosts = ["x.example.com"]\npaths = ["/a"]\npublic = true\n')
    write(tmp_path, "b.toml", '[[routes]]\nhosts = ["x.example.com"]\npaths = ["/a"]\nmethods = ["GET"]\npublic = true\n')
    error = one_error(tmp_path)
    assert "b.toml" in error and "duplicate route" in error and "a.toml routes[0]" in error


def test_same_pattern_disjoint_methods_or_hosts_is_fine(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        methods = ["GET"]
        public = true

        [[routes]]
        paths = ["/a"]
        methods = ["POST"]
        public = true

        [[routes]]
        hosts = ["x.example.com"]
        paths = ["/a"]
        public = true
    """)
    assert compile_policies(tmp_path).warnings == []


def test_duplicate_route_name(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        name = "same"
        paths = ["/a"]
        public = true

        [[routes]]
        name = "same"
        paths = ["/b"]
        public = true
    """)
    assert "route name 'same' is already used" in one_error(tmp_path)


def test_shadowed_route_warning(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        name = "broad"
        paths = ["/a/**"]
        public = true

        [[routes]]
        name = "exact"
        paths = ["/a", "/a/"]
        public = true

        [[routes]]
        name = "below"
        paths = ["/a/*/**"]
        allow = { authenticated = true }
    """)
    warnings = [str(w) for w in compile_policies(tmp_path).warnings]
    assert len(warnings) == 1, warnings
    assert 'routes[0] "broad" .paths' in warnings[0] and "/a/** can never match" in warnings[0]
    assert ":3: warning:" in warnings[0]


@pytest.mark.parametrize(
    "paths",
    [
        ["/a/*"],  # /a, /a/ and /a/x/y stay with /a/**
        ["/a", "/a/*/**"],  # /a/ is left
        ["/a/b/**", "/a", "/a/"],  # /a/c is left
    ],
)
def test_partial_cover_is_not_reported(tmp_path, paths):
    write(tmp_path, "p.toml", f"""
        [[routes]]
        paths = ["/a/**"]
        public = true

        [[routes]]
        paths = {json.dumps(paths)}
        public = true
    """)
    assert never_matches(tmp_path) == []


def test_star_shadowed_by_star_subtrees(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/x/*/y"]
        public = true

        [[routes]]
        paths = ["/x/*/y/**"]
        methods = ["GET"]
        public = true
    """)
    # '/x/*/y' vs '/x/*/y/**': the exact one wins on '/x/q/y', so neither is shadowed.
    assert never_matches(tmp_path) == []


def test_deny_all_makes_allow_unreachable_warning(tmp_path):
    write(tmp_path, "p.toml", """
        [[routes]]
        paths = ["/a"]
        allow = { roles = ["R"] }
        deny = { authenticated = true }
    """)
    warnings = [str(w) for w in compile_policies(tmp_path).warnings]
    assert any("allow can never apply" in w for w in warnings)


def test_output_is_deterministic_and_versioned(tmp_path):
    write(tmp_path, "p.toml", f"""
        [groups]
        b = "{G1}"
        a = "22222222-2222-4222-8222-222222222222"

        [[routes]]
        paths = ["/a"]
        allow = {{ groups = ["b", "a"], roles = ["Z", "A"] }}
    """)
    first = compile_policies(tmp_path)
    second = compile_policies(tmp_path)
    assert first.json_text == second.json_text and first.version == second.version
    data = json.loads(first.json_text)
    body = {k: v for k, v in data.items() if k != "version"}
    import hashlib

    expected = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    ).hexdigest()[:12]
    assert data["version"] == first.version == expected
    write(tmp_path, "p.toml", '[[routes]]\npaths = ["/b"]\npublic = true\n')
    assert compile_policies(tmp_path).version != first.version


def test_module_is_importable_without_pydantic(tmp_path):
    compiled = compile_policies(EXAMPLE_POLICIES)
    (tmp_path / "compiled_policy.py").write_text(module_text(compiled))
    script = (
        "import sys, json\n"
        "sys.modules['pydantic'] = None\n"  # any import of pydantic now fails
        "import compiled_policy\n"
        "from entragate.policy import Policy\n"
        "p = Policy.from_json(json.loads(compiled_policy.POLICY_JSON))\n"
        "assert p.version == compiled_policy.POLICY_VERSION\n"
        "print(p.decide('GET', 'h', '/healthz', None))\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None]\n"
        "assert not any(m.startswith(('pydantic', 'entragate_tools', 'yaml', 'cryptography')) for m in loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        env={"PYTHONPATH": f"{tmp_path}:{REPO / 'src'}"},
    )
    assert result.returncode == 0, result.stderr
    assert "Decision(allowed=True, reason='public', rule='healthz')" in result.stdout


def test_edge_package_imports_nothing_outside_stdlib_and_jwt():
    import ast

    allowed = set(sys.stdlib_module_names) | {"jwt", "entragate"}
    for name in ("policy.py", "paths.py"):
        tree = ast.parse((REPO / "src" / "entragate" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]} if node.level == 0 else set()
            else:
                continue
            assert roots <= allowed, (name, roots)


def test_example_policies_compile_cleanly():
    compiled = compile_policies(EXAMPLE_POLICIES)
    assert compiled.warnings == []
    names = {r.name for r in compiled.policy.routes}
    assert {"healthz", "api-read", "api-write", "admin", "internal", "reports", "app"} <= names
    assert [r.name for r in compiled.policy.routes if r.login] == ["app"]  # make demo's browser sign-in


def test_json_schema_covers_the_format():
    schema = PolicyFile.model_json_schema()
    route = schema["$defs"]["Route"]
    assert route["additionalProperties"] is False
    assert {"hosts", "paths", "methods", "public", "allow", "deny", "origin", "name"} <= set(route["properties"])
    assert "not" in schema["$defs"]["Condition"]["properties"]
