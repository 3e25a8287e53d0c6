"""`login = true` in policy files: compiled, refused beside `public`, checked for routes no browser
session can pass; and the CLI commands that make the sign-in secrets."""

import io
import json

import pytest
from entragate_tools.cli import main
from entragate_tools.compiler import PolicyError, compile_policies
from entragate_tools.sessions_check import for_session

from entragate.client_auth import parse_certificate
from entragate.policy import Policy
from entragate.sessions import parse_session_keys


def compiled(tmp_path, text):
    (tmp_path / "p.toml").write_text(text)
    return compile_policies(tmp_path)


def test_login_is_compiled_and_read_by_the_edge(tmp_path):
    result = compiled(tmp_path, '[[routes]]\nname = "app"\npaths = ["/app/**"]\nlogin = true\nallow = { authenticated = true }\n'
                                '[[routes]]\nname = "api"\npaths = ["/api/**"]\nallow = { authenticated = true }\n')
    policy = Policy.from_json(json.loads(result.json_text))
    assert policy.has_login_routes
    assert policy.match("GET", "h", "/app/x").login is True and policy.match("GET", "h", "/api/x").login is False
    assert not Policy.from_json(json.loads(compiled(tmp_path, '[[routes]]\nname = "api"\npaths = ["/api/**"]\n'
                                                   'allow = { authenticated = true }\n').json_text)).has_login_routes


def test_login_and_public_exclude_each_other(tmp_path):
    with pytest.raises(PolicyError) as caught:
        compiled(tmp_path, '[[routes]]\npaths = ["/x"]\npublic = true\nlogin = true\n')
    assert "login" in str(caught.value.errors[0])


@pytest.mark.parametrize("allow,warned", [
    ("{ scopes = ['access_as_user'] }", True),
    ("{ kind = 'app' }", True),
    ("{ kind = 'app', groups = ['11111111-1111-4111-8111-111111111111'] }", True),
    ("{ any = [{ scopes = ['a'] }, { kind = 'app' }] }", True),
    ("{ any = [{ scopes = ['a'] }, { roles = ['Reader'] }] }", False),  # a session may carry the role
    ("{ kind = 'user' }", False),
    ("{ authenticated = true }", False),
    ("{ not = { kind = 'user' } }", True),
])
def test_check_warns_when_no_session_can_pass_a_login_route(tmp_path, allow, warned):
    result = compiled(tmp_path, f'[[routes]]\nname = "app"\npaths = ["/app/**"]\nlogin = true\nallow = {allow}\n')
    messages = [str(w) for w in result.warnings if "login = true" in str(w)]
    assert bool(messages) == warned, messages


def test_check_warns_when_the_deny_holds_for_every_session(tmp_path):
    result = compiled(tmp_path, '[[routes]]\nname = "app"\npaths = ["/app/**"]\nlogin = true\n'
                                'allow = { authenticated = true }\ndeny = { kind = "user" }\n')
    assert any("its deny holds for every browser session" in str(w) for w in result.warnings)


def test_the_same_conditions_on_a_bearer_route_are_not_warned_about(tmp_path):
    result = compiled(tmp_path, '[[routes]]\nname = "api"\npaths = ["/api/**"]\nallow = { scopes = ["a"] }\n')
    assert not any("login" in str(w) for w in result.warnings)


def test_session_evaluation_is_three_valued():
    assert for_session(["scopes", ["a"]]) is False and for_session(["groups", ["g"]]) is None
    assert for_session(["all", [["groups", ["g"]], ["kind", "app"]]]) is False
    assert for_session(["any", [["groups", ["g"]], ["true"]]]) is True


def test_session_key_and_client_certificate_commands_make_usable_secrets(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert main(["session-key"], out=out, err=err) == 0
    (key,) = parse_session_keys(out.getvalue().strip())
    assert len(key.secret) == 32
    out = io.StringIO()
    assert main(["client-certificate", "--out", str(tmp_path / "c.crt")], out=out, err=err) == 0
    certificate = parse_certificate(out.getvalue())
    assert certificate.thumbprint_s256 in err.getvalue()
    assert (tmp_path / "c.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in (tmp_path / "c.crt").read_text()
