"""The policy CLI: commands, output and exit codes (0 ok, 1 policy/test failure, 2 usage)."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jwt
import pytest

from entragate_tools.cli import main
from fixtures.examples import EXAMPLE_POLICIES
from fixtures.host_gateway import IPV6_POLICY, gateway_answer

REPO = Path(__file__).resolve().parents[2]
POLICIES = EXAMPLE_POLICIES
ADMIN_CLAIMS = {
    "oid": "aaaaaaaa-0000-4000-8000-000000000005",
    "idtyp": "user",
    "groups": ["11111111-1111-4111-8111-111111111111"],
}


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def run_module(*argv, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}:{REPO / 'tools'}")
    return subprocess.run(
        [sys.executable, "-m", "entragate_tools", *argv], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture
def policies(tmp_path):
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


# ---------------------------------------------------------------- check / compile


def test_check_ok():
    code, out, _ = run("check", "--policies", str(POLICIES))
    assert code == 0
    files = len(list(POLICIES.glob("*.toml")))
    assert out.startswith("ok: ") and f"routes from {files} files" in out and "0 warnings" in out


def test_check_reports_errors_with_exit_1(policies):
    (policies / "bad.toml").write_text('[[routes]]\npaths = ["/x"]\nallow = { groups = ["nope"] }\n')
    code, _, err = run("check", "--policies", str(policies))
    assert code == 1
    assert "bad.toml:3: error: routes[0] .allow.groups[0]: unknown groups alias 'nope'" in err
    assert "1 error in" in err


def test_check_strict_fails_on_warnings(policies):
    (policies / "shadow.toml").write_text(
        '[[routes]]\npaths = ["/s/**"]\npublic = true\n\n'
        '[[routes]]\npaths = ["/s", "/s/", "/s/*/**"]\npublic = true\n'
    )
    code, out, err = run("check", "--policies", str(policies))
    assert code == 0 and "1 warning" in out and "can never match" in err
    code, _, err = run("check", "--strict", "--policies", str(policies))
    assert code == 1 and "--strict" in err


def test_compile_writes_deterministic_module(tmp_path):
    out_file = tmp_path / "out" / "compiled_policy.py"
    code, out, _ = run("compile", "--policies", str(POLICIES), "--out", str(out_file))
    assert code == 0 and "version" in out
    first = out_file.read_text()
    out_file.unlink()
    assert run("compile", "--policies", str(POLICIES), "--out", str(out_file))[0] == 0
    assert out_file.read_text() == first
    namespace: dict = {}
    exec(first, namespace)
    data = json.loads(namespace["POLICY_JSON"])
    assert data["version"] == namespace["POLICY_VERSION"] and data["format"] == 3
    assert "POLICY_JSON = '" in first


def test_compile_does_not_write_on_error(tmp_path, policies):
    (policies / "bad.toml").write_text("not toml [")
    out_file = tmp_path / "compiled_policy.py"
    code, _, err = run("compile", "--policies", str(policies), "--out", str(out_file))
    assert code == 1 and "TOML syntax" in err and not out_file.exists()


def test_missing_policy_dir(tmp_path):
    """A directory that is not there is a mistake (a typo in --policies), not an empty policy."""
    for command in ("check", "compile", "test"):
        code, _, err = run(command, "--policies", str(tmp_path / "none"), "--out", str(tmp_path / "out.py")) \
            if command == "compile" else run(command, "--policies", str(tmp_path / "none"))
        assert code == 1 and f"{tmp_path / 'none'}: error: no such policy directory" in err, command
    assert not (tmp_path / "out.py").exists()


def test_a_policy_directory_without_files_compiles_to_deny_all(tmp_path):
    """A fork that removed every example and has not written its own yet: no routes, so every
    request is refused, said as a warning (which `check --strict` fails on); `test` passes with
    a note that there is nothing to test."""
    empty = tmp_path / "policies"
    empty.mkdir()
    out_file = tmp_path / "compiled_policy.py"
    code, out, err = run("compile", "--policies", str(empty), "--out", str(out_file))
    assert code == 0 and "compiled 0 routes" in out
    assert "warning: no *.toml policy files found" in err and "refuses every request (403 no_route)" in err
    namespace = {}
    exec(out_file.read_text(), namespace)
    data = json.loads(namespace["POLICY_JSON"])
    assert data["routes"] == [] and data["version"] == namespace["POLICY_VERSION"]
    assert gateway_answer("https://h/", policies=empty).code == "no_route"
    assert gateway_answer("https://h/api/items", "POST", policies=empty).code == "no_route"
    assert gateway_answer("https://h/.well-known/entragate/health", policies=empty).code == "health"

    code, out, err = run("test", "--policies", str(empty))
    assert code == 0 and "no policy tests" in out and "0 passed, 0 failed" in out
    assert run("check", "--policies", str(empty))[0] == 0
    assert run("check", "--strict", "--policies", str(empty))[0] == 1
    # Cases without routes still run (and can fail): a case expecting an allow is wrong.
    (empty / "tests").mkdir()
    (empty / "tests" / "t.toml").write_text(
        '[[cases]]\nname = "x"\nmethod = "GET"\nurl = "https://h/a"\nexpect = "allow"\n')
    code, out, _ = run("test", "--policies", str(empty))
    assert code == 1 and "0 passed, 1 failed" in out


# ---------------------------------------------------------------- explain


def test_explain_allow_with_claims():
    code, out, _ = run("explain", "--policies", str(POLICIES), "-X", "DELETE",
                       "https://app.example.net/admin/users/7", "--claims", json.dumps(ADMIN_CLAIMS))
    assert code == 0
    assert "decision  ALLOW" in out and "reason    allowed" in out and "rule      admin" in out
    assert "platform-admins (11111111-1111-4111-8111-111111111111)" in out  # alias shown by name
    assert "deny    users any of [blocked-users" in out


def test_explain_claims_from_file(tmp_path):
    claims_file = tmp_path / "claims.json"
    claims_file.write_text(json.dumps({**ADMIN_CLAIMS, "oid": "99999999-9999-4999-8999-999999999999"}))
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", f"@{claims_file}")
    assert code == 0 and "decision  DENY" in out and "reason    denied_by_rule" in out


def test_explain_token_is_decoded_without_verification():
    token = jwt.encode({"oid": "x", "idtyp": "app", "roles": ["Gateway.Invoke"]}, "not-the-real-key-and-never-checked-by-explain", algorithm="HS256")
    code, out, _ = run("explain", "--policies", str(POLICIES), "-X", "POST", "https://h/internal/run", "--token", token)
    assert code == 0
    assert "WITHOUT verifying its signature" in out
    assert "decision  ALLOW" in out and "rule      internal" in out


def test_explain_no_token_no_route_and_ambiguous():
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/api/items")
    assert code == 0 and "identity  none" in out and "reason    token_required" in out
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/nowhere")
    assert code == 0 and "default deny" in out and "reason    no_route" in out and "rule      -" in out
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/api/%2e%2e/admin")
    assert code == 0 and "refused   400 ambiguous_path: dot segment" in out and "reason    ambiguous_path" in out


def test_explain_overage_reason():
    claims = {"oid": "o", "idtyp": "user", "hasgroups": True}
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", json.dumps(claims))
    assert code == 0 and "overage" in out and "reason    groups_overage" in out


OVERAGE_CLAIMS = {"oid": "o", "idtyp": "user", "_claim_names": {"groups": "src1"}}


def test_explain_shows_which_groups_graph_would_be_asked_for():
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", json.dumps(OVERAGE_CLAIMS))
    line = next(line for line in out.splitlines() if line.startswith("overage "))
    # Every group the policy names (the gateway asks one question per user, for all routes), and nothing else.
    assert line == ("overage   would ask Graph for: platform-admins (11111111-1111-4111-8111-111111111111), "
                    "api-writers (22222222-2222-4222-8222-222222222222), report-readers (33333333-3333-4333-8333-333333333333)")
    assert "reason    groups_overage" in out


@pytest.mark.parametrize("answer, reason", [
    ("platform-admins", "allowed"), ("11111111-1111-4111-8111-111111111111", "allowed"),
    ("api-writers", "condition_not_met"), ("", "condition_not_met"),
    ("44444444-4444-4444-8444-444444444444", "condition_not_met"),  # a group the policy never asks about
])
def test_explain_with_graphs_answer(answer, reason):
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", json.dumps(OVERAGE_CLAIMS),
                       "--graph-groups", answer)
    assert code == 0 and f"reason    {reason}" in out and "graph     answers: member of [" in out


def test_explain_graph_groups_without_overage_asks_nothing():
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", json.dumps(ADMIN_CLAIMS),
                       "--graph-groups", "api-writers")
    assert code == 0 and "graph     not asked" in out and "\noverage " not in out and "reason    allowed" in out


def test_explain_an_app_with_overage_is_not_asked_about():
    claims = {"oid": "o", "sub": "o", "idtyp": "app", "roles": ["x"], "hasgroups": True}
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", json.dumps(claims))
    assert code == 0 and "\noverage " not in out


def test_explain_unknown_graph_group_is_a_usage_error():
    code, _, err = run("explain", "--policies", str(POLICIES), "https://h/admin", "--claims", json.dumps(OVERAGE_CLAIMS),
                       "--graph-groups", "no-such-alias")
    assert code == 2 and "neither a group alias" in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--claims", "{not json"],
        ["--claims", "[1]"],
        ["--claims", '{"groups": "x"}'],  # not a valid token payload
        ["--token", "abc"],
        ["--claims", "{}", "--token", "abc"],
        ["--claims", "@/nonexistent/file.json"],
    ],
)
def test_explain_usage_errors(extra):
    code, _, err = run("explain", "--policies", str(POLICIES), "https://h/api", *extra)
    assert code == 2 and err.startswith("error: ")


@pytest.mark.parametrize("claims", ['{"oid": "\\ud800"}', '{"groups": ["\\udfff"]}', '{"\\udbff": 1}'])
def test_explain_refuses_claims_that_are_not_unicode_as_a_usage_error(claims):
    """A lone surrogate (JSON "\\ud800") is what the gateway refuses as an invalid token; the
    CLI says so instead of failing to print it."""
    code, out, err = run("explain", "--policies", str(POLICIES), "https://h/api/items", "--claims", claims)
    assert code == 2 and "lone surrogate" in err and out == ""
    token = jwt.encode(json.loads(claims), "not-the-real-key-and-never-checked-by-explain", algorithm="HS256")
    code, out, err = run("explain", "--policies", str(POLICIES), "https://h/api/items", "--token", token)
    assert code == 2 and "lone surrogate" in err


def test_explain_shows_control_characters_in_claims_escaped():
    claims = {"oid": "a\x1b[2Jb", "tid": "t\u202e", "scp": "access_as_user", "roles": ["r\x00"]}
    code, out, _ = run("explain", "--policies", str(POLICIES), "https://h/api/items", "--claims", json.dumps(claims))
    assert code == 0 and "oid=a\\x1b[2Jb" in out and "tid=t\\u202e" in out and "[r\\x00]" in out
    assert out.replace("\n", "").isprintable()


@pytest.mark.parametrize("url", ["/api/items", "ftp://h/api/items", "h/api", "https:///api", "https://"])
def test_explain_bad_url(url):
    code, out, err = run("explain", "--policies", str(POLICIES), url)
    assert code == 2 and err.startswith("error: ") and ("not an http(s) URL" in err or "no host" in err)
    assert out == ""


# The CLI must decide exactly as the gateway: same refusals, same own endpoints, same hosts.


def explained(out: str) -> dict:
    return {line[:10].strip(): line[10:] for line in out.splitlines() if line[:10].strip()}


@pytest.mark.parametrize("url, detail", [
    ("https://app.example.net../healthz", "host has an empty label"),
    ("https://.app.example.net/healthz", "host has an empty label"),
    ("https://eu..example.com/reports/q1", "host has an empty label"),
    ("https://app.example.net/api/%2e%2e/admin", "dot segment"),
    ("https://app.example.net//healthz", "empty path segment"),
])
def test_explain_refuses_what_the_gateway_refuses(url, detail):
    from entragate.denials import Answer

    answer = gateway_answer(url)
    assert isinstance(answer, Answer) and answer.status == 400
    code, out, _ = run("explain", "--policies", str(POLICIES), url)
    lines = explained(out)
    assert code == 0 and lines["refused"].startswith(f"400 {answer.code}: {detail}")
    assert (lines["decision"], lines["reason"], lines["rule"]) == ("DENY", answer.code, "-")
    assert "route" not in lines  # refused before any policy: no route is looked at


@pytest.mark.parametrize("path, endpoint", [
    ("/.well-known/entragate/health", "health"),
    ("/.well-known/entragate/health?verbose=1", "health"),
    ("/.well-known/entragate/jwks.json", "jwks"),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_explain_reports_the_gateways_own_endpoints(path, endpoint, method):
    from entragate.denials import Answer

    url = "https://app.example.net" + path
    answer = gateway_answer(url, method)
    assert isinstance(answer, Answer) and answer.code == endpoint  # answered before any policy
    code, out, _ = run("explain", "--policies", str(POLICIES), "-X", method, url,
                       "--claims", json.dumps(ADMIN_CLAIMS))
    lines = explained(out)
    assert code == 0 and lines["endpoint"].startswith(f"{endpoint}: ")
    assert "before any policy" in lines["decision"] and "not a policy decision" in lines["decision"]
    assert not {"route", "reason", "rule"} & set(lines) and "ALLOW" not in out and "DENY" not in out


def test_explain_an_ipv6_host_keeps_its_brackets(tmp_path):
    (tmp_path / "v6.toml").write_text(IPV6_POLICY)
    url = "http://[::1]:8787/api/x"
    answer = gateway_answer(url, policies=tmp_path)
    assert (answer.code, answer.rule) == ("missing_token", "v6-deny")
    code, out, _ = run("explain", "--policies", str(tmp_path), url)
    lines = explained(out)
    assert code == 0 and lines["host"] == "[::1]" and lines["route"].startswith("v6-deny ")
    assert (lines["decision"], lines["reason"], lines["rule"]) == ("DENY", "token_required", "v6-deny")


@pytest.mark.parametrize("url, sent", [
    ("https://app.example.net", "https://app.example.net/"),
    ("HTTPS://app.example.net?x=1", "https://app.example.net/?x=1"),
    ("https://app.example.net/healthz#top", "https://app.example.net/healthz"),
])
def test_explain_decides_on_what_a_client_sends(url, sent):
    code, out, _ = run("explain", "--policies", str(POLICIES), url)
    assert code == 0 and explained(out)["request"] == f"GET {sent}"


# ---------------------------------------------------------------- test


def test_test_over_shipped_policies_passes():
    code, out, _ = run("test", "--policies", str(POLICIES))
    assert code == 0
    last = out.strip().splitlines()[-1]
    passed, failed = last.split(", ")
    assert passed.endswith(" passed") and int(passed.split()[0]) >= 30 and failed == "0 failed"


def test_test_reports_failures(policies):
    (policies / "tests" / "wrong.toml").write_text(textwrap.dedent("""
        [identities.nobody]
        oid = "aaaaaaaa-0000-4000-8000-00000000000f"
        idtyp = "user"

        [[cases]]
        name = "nobody is an admin"
        method = "GET"
        url = "https://h/admin"
        identity = "nobody"
        expect = "allow"

        [[cases]]
        name = "wrong reason"
        method = "GET"
        url = "https://h/nowhere"
        expect = "deny"
        reason = "condition_not_met"

        [[cases]]
        name = "right"
        method = "GET"
        url = "https://h/healthz"
        expect = "allow"
        rule = "healthz"

        [[cases]]
        name = "missing identity"
        method = "GET"
        url = "https://h/healthz"
        identity = "ghost"
        expect = "allow"
    """))
    code, out, _ = run("test", "--policies", str(policies))
    assert code == 1
    assert 'FAIL ' in out and 'cases[0] "nobody is an admin"' in out
    assert "expected allow, got deny" in out and "condition_not_met" in out
    assert "expected reason condition_not_met, got no_route" in out
    assert "unknown identity 'ghost'" in out
    assert out.strip().splitlines()[-1].endswith(" passed, 3 failed")


def test_test_cases_state_graphs_answer(policies):
    (policies / "tests" / "graph.toml").write_text(textwrap.dedent("""
        [identities.overage]
        oid = "aaaaaaaa-0000-4000-8000-000000000003"
        idtyp = "user"
        _claim_names = { groups = "src1" }

        [identities.listed]
        oid = "aaaaaaaa-0000-4000-8000-000000000005"
        idtyp = "user"
        groups = ["11111111-1111-4111-8111-111111111111"]

        [[cases]]
        name = "graph says admin"
        method = "GET"
        url = "https://h/admin"
        identity = "overage"
        graph_groups = ["platform-admins"]
        expect = "allow"

        [[cases]]
        name = "graph says not a member"
        method = "GET"
        url = "https://h/admin"
        identity = "overage"
        graph_groups = []
        expect = "deny"
        reason = "condition_not_met"

        [[cases]]
        name = "wrongly expects graph to be ignored"
        method = "GET"
        url = "https://h/admin"
        identity = "overage"
        graph_groups = ["11111111-1111-4111-8111-111111111111"]
        expect = "deny"

        [[cases]]
        name = "graph answer for a token that lists its groups"
        method = "GET"
        url = "https://h/admin"
        identity = "listed"
        graph_groups = []
        expect = "allow"

        [[cases]]
        name = "unknown alias"
        method = "GET"
        url = "https://h/admin"
        identity = "overage"
        graph_groups = ["nope"]
        expect = "allow"
    """))
    code, out, _ = run("test", "--policies", str(policies))
    assert code == 1 and out.strip().splitlines()[-1].endswith(" failed")
    assert 'cases[2] "wrongly expects graph to be ignored"' in out and "expected deny, got allow" in out
    assert "graph_groups is Graph's answer for an overage identity" in out
    assert "'nope' is neither a group alias" in out
    assert out.count("FAIL ") == 3


def test_test_invalid_test_file(policies):
    (policies / "tests" / "broken.toml").write_text('[[cases]]\nname = "x"\nmethod = "GET"\nurl = "https://h/"\nexpect = "maybe"\n')
    code, out, err = run("test", "--policies", str(policies))
    assert code == 1 and "broken.toml" in err and "expect" in err


def test_test_cases_before_any_policy(policies):
    (policies / "tests" / "before.toml").write_text(textwrap.dedent("""
        [[cases]]
        name = "health is the gateway's"
        method = "GET"
        url = "https://h/.well-known/entragate/health"
        expect = "gateway"

        [[cases]]
        name = "empty label refused"
        method = "GET"
        url = "https://h../healthz"
        expect = "deny"
        reason = "ambiguous_path"

        [[cases]]
        name = "wrongly expects a policy decision on health"
        method = "GET"
        url = "https://h/.well-known/entragate/health"
        expect = "deny"
        reason = "no_route"

        [[cases]]
        name = "wrongly expects the public route"
        method = "GET"
        url = "https://h../healthz"
        expect = "allow"
        rule = "healthz"
    """))
    code, out, _ = run("test", "--policies", str(policies))
    assert code == 1 and out.strip().splitlines()[-1].endswith(" passed, 2 failed")
    assert "expected deny, got gateway; expected reason no_route, got none" in out
    assert "[the gateway answers this path itself (health), before any policy]" in out
    assert "expected allow, got deny; expected rule healthz, got none" in out
    assert "(ambiguous_path: host has an empty label)" in out


def test_test_gateway_expectation_takes_no_reason(policies):
    (policies / "tests" / "broken.toml").write_text(
        '[[cases]]\nname = "x"\nmethod = "GET"\nurl = "https://h/.well-known/entragate/health"\n'
        'expect = "gateway"\nreason = "public"\n'
    )
    code, _, err = run("test", "--policies", str(policies))
    assert code == 1 and "broken.toml" in err and "takes no reason or rule" in err


NOT_UTF8 = b'[[cases]]\nname = "caf\xe9"\n'  # Latin-1, as some editors save


def test_test_file_that_is_not_utf8(policies):
    (policies / "tests" / "latin1.toml").write_bytes(NOT_UTF8)
    code, out, err = run("test", "--policies", str(policies))
    assert code == 1
    assert f"{policies / 'tests' / 'latin1.toml'}: error: cannot read: not UTF-8 text (byte 0xe9 on line 2)" in err
    assert out.strip().splitlines()[-1].endswith(" passed, 0 failed")  # the other files still ran
    result = run_module("test", "--policies", str(policies))
    assert result.returncode == 1 and "latin1.toml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["check", "compile", "explain", "test"])
def test_policy_file_that_is_not_utf8(policies, tmp_path, command):
    (policies / "latin1.toml").write_bytes(b'# caf\xe9\n[[routes]]\npaths = ["/x"]\npublic = true\n')
    out_file = tmp_path / "compiled.py"
    extra = {"compile": ["--out", str(out_file)], "explain": ["https://h/x"]}.get(command, [])
    result = run_module(command, "--policies", str(policies), *extra)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "latin1.toml: error: cannot read: not UTF-8 text (byte 0xe9 on line 1)" in result.stderr
    assert "1 error in" in result.stderr and not out_file.exists()


def test_claims_file_that_is_not_utf8(tmp_path):
    claims = tmp_path / "claims.json"
    claims.write_bytes(b'{"name": "caf\xe9"}')
    code, _, err = run("explain", "--policies", str(POLICIES), "https://h/api", "--claims", f"@{claims}")
    assert code == 2 and err.startswith(f"error: cannot read claims file {claims}: not UTF-8 text")


def test_test_without_cases(tmp_path):
    code, out, err = run("test", "--policies", str(POLICIES), "--tests", str(tmp_path))
    assert code == 1 and "no test files" in err and "0 passed, 0 failed" in out


# ---------------------------------------------------------------- schema, help, usage


def test_schema_prints_json_schema():
    code, out, _ = run("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "entragate policy file"
    route = schema["$defs"]["Route"]
    assert route["additionalProperties"] is False
    assert "null" not in json.dumps(route["properties"]["public"])  # TOML has no null
    code, out, _ = run("schema", "--tests")
    assert code == 0 and json.loads(out)["title"] == "entragate policy tests"


def test_module_entry_point_help_and_exit_codes():
    result = run_module("--help")
    assert result.returncode == 0
    for command in ("check", "compile", "explain", "test", "schema"):
        assert command in result.stdout
    assert "exit codes" in result.stdout
    result = run_module("explain", "--help")
    assert result.returncode == 0 and "WITHOUT signature verification" in result.stdout
    assert run_module().returncode == 2
    assert run_module("frobnicate").returncode == 2
    assert run_module("explain").returncode == 2  # missing URL
    result = run_module("test")
    assert result.returncode == 0 and result.stdout.strip().endswith(" passed, 0 failed")


# ---------------------------------------------------------------- assertion-key


def test_assertion_key_prints_a_fresh_signing_key():
    from entragate.assertion import parse_signing_key

    # Through the launcher the README gives, as a user runs it.
    command = [sys.executable, str(REPO / "tools" / "entragate.py"), "assertion-key"]
    first, second = (subprocess.run(command, capture_output=True, text=True, cwd=REPO) for _ in range(2))
    keys = []
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip().splitlines()) == 1  # the key alone: pipeable into wrangler
        private, public = parse_signing_key(result.stdout)
        assert "d" not in public and public["alg"] == "ES256" and public["kid"]
        assert "npx wrangler secret put ASSERTION_SIGNING_KEY" in result.stderr
        assert "/.well-known/entragate/jwks.json" in result.stderr
        keys.append((private["d"], public["kid"]))
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]


def test_assertion_key_help_and_usage():
    code, out, _ = run("assertion-key")
    assert code == 0 and json.loads(out)["kty"] == "EC"
    result = run_module("--help")
    assert result.returncode == 0 and "assertion-key" in result.stdout
    result = run_module("assertion-key", "--help")
    assert result.returncode == 0 and "ASSERTION_SIGNING_KEY" in result.stdout
    assert run_module("assertion-key", "--policies", "policies").returncode == 2  # takes no options


# ---------------------------------------------------------------- spellings (issue #13, item 2)

# The layout the shipped reports.toml had: a deny-all exception under a broader allow.
EXCEPTION_UNDER_ALLOW = """
[[routes]]
name = "docs"
paths = ["/docs/**"]
methods = ["GET"]
allow = { scopes = ["access_as_user"] }

[[routes]]
name = "docs-drafts-off"
paths = ["/docs/drafts/**"]
deny = { authenticated = true }
"""


def test_check_warns_about_a_narrower_route_under_a_broader_one(policies):
    (policies / "docs.toml").write_text(EXCEPTION_UNDER_ALLOW)
    code, out, err = run("check", "--policies", str(policies))
    assert code == 0 and "1 warning" in out
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert 'docs.toml:10: warning: routes[1] "docs-drafts-off" .paths: ' in warning
    assert "any host /docs/drafts/**: other spellings" in warning
    assert "e.g. GET https://any.example/docs/DRAFTS)" in warning
    assert "fall to the broader route 'docs' (" in warning and "docs.toml routes[0], any host /docs/**)" in warning
    assert run("check", "--strict", "--policies", str(policies))[0] == 1


def test_explain_shows_an_ambiguous_spelling_as_the_gateway_refuses_it(policies):
    (policies / "docs.toml").write_text(EXCEPTION_UNDER_ALLOW)
    url = "https://app.example.net/docs/Drafts/plan"
    answer = gateway_answer(url, policies=policies)
    assert (answer.status, answer.code) == (400, "ambiguous_path")
    code, out, _ = run("explain", "--policies", str(policies), url, "--claims", json.dumps(ADMIN_CLAIMS))
    lines = explained(out)
    assert code == 0 and lines["path"] == "/docs/Drafts/plan  (decoded, as matched)"
    assert lines["folded"] == "/docs/drafts/plan  (letter case, trailing slash, format suffix)"
    assert lines["route"] == "docs as written; docs-drafts-off for the folded path"
    assert lines["refused"].startswith("400 ambiguous_path: another spelling of this path")
    assert (lines["decision"], lines["reason"], lines["rule"]) == ("DENY", "ambiguous_path", "-")
    # The spelling the narrower route names is decided by it.
    code, out, _ = run("explain", "--policies", str(policies), "https://h/docs/drafts/plan", "--claims", json.dumps(ADMIN_CLAIMS))
    assert (explained(out)["reason"], explained(out)["rule"]) == ("denied_by_rule", "docs-drafts-off")


def test_explain_and_test_in_fold_mode(policies):
    (policies / "docs.toml").write_text('[settings]\nspellings = "fold"\n' + EXCEPTION_UNDER_ALLOW)
    code, out, err = run("check", "--policies", str(policies))
    assert code == 0 and "0 warnings" in out, err
    code, out, _ = run("explain", "--policies", str(policies), "https://h/DOCS/Drafts/plan.json",
                       "--claims", json.dumps(ADMIN_CLAIMS))
    lines = explained(out)
    assert lines["path"] == "/DOCS/Drafts/plan.json  (decoded)"
    assert lines["matched"] == '/docs/drafts/plan  (folded: spellings = "fold")'
    assert (lines["reason"], lines["rule"]) == ("denied_by_rule", "docs-drafts-off")


def test_test_cases_can_pin_a_spelling_refusal(policies):
    (policies / "docs.toml").write_text(EXCEPTION_UNDER_ALLOW)
    (policies / "tests" / "docs.toml").write_text(textwrap.dedent("""
        [[cases]]
        name = "a draft in another case is refused, not read"
        method = "GET"
        url = "https://h/docs/DRAFTS/plan"
        claims = { oid = "aaaaaaaa-0000-4000-8000-000000000001", idtyp = "user", scp = "access_as_user" }
        expect = "deny"
        reason = "ambiguous_path"

        [[cases]]
        name = "wrongly expects the broader route"
        method = "GET"
        url = "https://h/docs/drafts.json"
        claims = { oid = "aaaaaaaa-0000-4000-8000-000000000001", idtyp = "user", scp = "access_as_user" }
        expect = "allow"
        rule = "docs"
    """))
    code, out, _ = run("test", "--policies", str(policies))
    assert code == 1 and out.strip().splitlines()[-1].endswith(" passed, 1 failed")
    assert "expected allow, got deny; expected rule docs, got none" in out
    assert "(ambiguous_path: another spelling of this path" in out


# ---------------------------------------------------------------- multi-tenant grants (issue #13, item 12)

HOME = "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b"
GRANTS = f"""
[tenants]
home = "{HOME}"

[groups]
team = "11111111-1111-4111-8111-111111111111"

[[routes]]
name = "roles-open"
paths = ["/a"]
allow = {{ roles = ["Reader"] }}

[[routes]]
name = "scopes-or-group"
paths = ["/b"]
allow = {{ any = [{{ groups = ["team"] }}, {{ scopes = ["read"] }}] }}

[[routes]]
name = "pinned"
paths = ["/c"]
allow = {{ tenants = ["home"], any = [{{ roles = ["Reader"] }}, {{ scopes = ["read"] }}] }}

[[routes]]
name = "pinned-by-deny"
paths = ["/d"]
allow = {{ roles = ["Reader"] }}
deny = {{ not = {{ tenants = ["home"] }} }}

[[routes]]
name = "pinned-each-way"
paths = ["/e"]
allow = {{ any = [{{ tenants = ["home"], roles = ["A"] }}, {{ all = [{{ scopes = ["s"] }}, {{ tenants = ["home"] }}] }}] }}

[[routes]]
name = "group-only"
paths = ["/f"]
allow = {{ groups = ["team"] }}

[[routes]]
name = "open"
paths = ["/g"]
public = true
"""


def wrangler(path, vars_text):
    path.write_text('name = "x"\nmain = "src/entry.py"\n\n' + textwrap.dedent(vars_text))
    return path


def grant_warnings(err: str) -> list:
    return [line for line in err.splitlines() if "without pinning tenants" in line]


@pytest.mark.parametrize("vars_text, where", [
    ('[vars]\nENTRA_TENANT_ID = "organizations"\nENTRA_ALLOWED_TENANTS = "*"\n', "[vars]"),
    (f'[vars]\nENTRA_TENANT_ID = "common"\nENTRA_ALLOWED_TENANTS = "{HOME}, 0a0b0c0d-1111-4222-8333-444455556666"\n', "[vars]"),
    (f'[vars]\nENTRA_TENANT_ID = "{HOME}"\n\n[env.saas.vars]\nENTRA_TENANT_ID = "Organizations"\n', "[env.saas.vars]"),
])
def test_check_warns_about_grants_any_accepted_tenant_controls(tmp_path, vars_text, where):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(GRANTS)
    config = wrangler(tmp_path / "deploy.toml", vars_text)
    code, out, err = run("check", "--policies", str(tmp_path / "policies"), "--config", str(config))
    assert code == 0 and "2 warnings" in out
    first, second = grant_warnings(err)
    assert 'p.toml:11: warning: routes[0] "roles-open" .allow: allows on roles without pinning tenants' in first
    assert 'routes[1] "scopes-or-group" .allow: allows on scopes without pinning tenants' in second
    assert f"deploy.toml {where} accepts several tenants" in first
    assert "each tenant's own administrators assign app roles and consent to scopes" in first
    assert run("check", "--strict", "--policies", str(tmp_path / "policies"), "--config", str(config))[0] == 1


def test_check_reads_the_wrangler_toml_beside_the_policies(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(GRANTS)
    code, out, _ = run("check", "--policies", str(tmp_path / "policies"))
    assert code == 0 and "0 warnings" in out  # no wrangler.toml: nothing known about tenants
    wrangler(tmp_path / "wrangler.toml", '[vars]\nENTRA_TENANT_ID = "organizations"\nENTRA_ALLOWED_TENANTS = "*"\n')
    code, out, err = run("check", "--policies", str(tmp_path / "policies"))
    assert code == 0 and len(grant_warnings(err)) == 2 and "wrangler.toml [vars] accepts several tenants" in err


@pytest.mark.parametrize("vars_text", [
    f'[vars]\nENTRA_TENANT_ID = "{HOME}"\n',  # one tenant
    f'[vars]\nENTRA_TENANT_ID = "organizations"\nENTRA_ALLOWED_TENANTS = "{HOME}"\n',  # one accepted tenant
    '[vars]\nORIGIN_URL = "https://o.example"\n',  # the tenant comes from elsewhere (a secret, --var)
])
def test_no_grant_warning_for_a_single_tenant(tmp_path, vars_text):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(GRANTS)
    config = wrangler(tmp_path / "wrangler.toml", vars_text)
    code, out, err = run("check", "--policies", str(tmp_path / "policies"), "--config", str(config))
    assert code == 0 and grant_warnings(err) == [] and "0 warnings" in out


def test_the_project_deployment_is_single_tenant():
    code, out, err = run("check", "--policies", str(POLICIES), "--config", str(REPO / "wrangler.toml"))
    assert code == 0 and "0 warnings" in out and err == ""


@pytest.mark.parametrize("content, message", [(None, "cannot read"), ("[vars\n", "TOML syntax")])
def test_check_config_that_cannot_be_read_is_a_usage_error(tmp_path, content, message):
    config = tmp_path / "wrangler.toml"
    if content is not None:
        config.write_text(content)
    code, out, err = run("check", "--policies", str(POLICIES), "--config", str(config))
    assert code == 2 and out == "" and err.startswith("error: ") and message in err
