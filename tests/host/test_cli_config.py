"""`entragate config`: the variables read as wrangler hands them to the Worker (wrangler.toml
[vars] or [env.NAME.vars], then .dev.vars, then --var), checked as the Worker checks them."""

import io

from entragate_tools.cli import main

GOOD_VARS = '''
[vars]
ENTRA_TENANT_ID = "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b"
ENTRA_AUDIENCES = "6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60"
ORIGIN_URL = "https://origin.example.com"
'''


def run(tmp_path, toml, *args, dev_vars=None, policies=None):
    (tmp_path / "wrangler.toml").write_text('name = "x"\nmain = "src/entry.py"\n' + toml)
    if dev_vars is not None:
        (tmp_path / ".dev.vars").write_text(dev_vars)
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir(exist_ok=True)
    (policy_dir / "p.toml").write_text(policies or '[[routes]]\nname = "a"\npaths = ["/a"]\nallow = { authenticated = true }\n')
    out, err = io.StringIO(), io.StringIO()
    status = main(["config", "--config", str(tmp_path / "wrangler.toml"), "--policies", str(policy_dir), *args],
                  out=out, err=err)
    return status, out.getvalue() + err.getvalue()


def test_a_good_deployment_is_ok(tmp_path):
    status, text = run(tmp_path, GOOD_VARS)
    assert status == 0 and text.startswith("ok: 3 variables from wrangler.toml [vars]")


def test_every_problem_is_listed_with_hints(tmp_path):
    status, text = run(tmp_path, GOOD_VARS.replace('"6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60"', '"api://a api://b"')
                       + 'ENTRA_AUTHORITY = "https://login.microsoftonline.com/organizations"\nCLOCK_SKEW_SECONDS = 9999\n')
    assert status == 1
    assert text.count("error: ") == 3 and "3 problem(s)" in text
    assert "comma-separated" in text and "MSAL authority" in text and "CLOCK_SKEW_SECONDS must be between" in text


def test_dev_vars_then_var_override_in_wranglers_order(tmp_path):
    toml = GOOD_VARS + "CLOCK_SKEW_SECONDS = 9999\n"
    assert run(tmp_path, toml)[0] == 1
    assert run(tmp_path, toml, dev_vars="CLOCK_SKEW_SECONDS=30\n")[0] == 0
    status, text = run(tmp_path, toml, "--var", "CLOCK_SKEW_SECONDS:-1", dev_vars="CLOCK_SKEW_SECONDS=30\n")
    assert status == 1 and "--var" in text
    assert run(tmp_path, toml, "--no-dev-vars", dev_vars="CLOCK_SKEW_SECONDS=30\n")[0] == 1


def test_an_environment_is_checked_with_env(tmp_path):
    toml = GOOD_VARS + '\n[env.staging.vars]\nENTRA_TENANT_ID = "organizations"\nENTRA_AUDIENCES = "x"\nORIGIN_URL = "https://o"\n'
    assert run(tmp_path, toml)[0] == 0
    status, text = run(tmp_path, toml, "--env", "staging")
    assert status == 1 and "ENTRA_ALLOWED_TENANTS is required" in text and "[env.staging.vars]" in text


def test_a_secret_in_committed_vars_is_a_problem_and_never_printed(tmp_path):
    status, text = run(tmp_path, GOOD_VARS + 'SESSION_KEYS = "c2VjcmV0LXNlc3Npb24ta2V5LXZhbHVlLTEyMzQ1Ng"\n')
    assert status == 1 and "SESSION_KEYS is in wrangler.toml [vars], which is committed" in text
    assert "c2VjcmV0" not in text


def test_login_routes_remind_of_the_secrets_they_need(tmp_path):
    policy = '[[routes]]\nname = "a"\npaths = ["/a"]\nlogin = true\nallow = { authenticated = true }\n'
    status, text = run(tmp_path, GOOD_VARS, policies=policy)
    assert status == 0 and "warning: policies have login = true routes" in text and "SESSION_KEYS" in text


def test_a_test_file_with_one_bad_case_still_runs_and_counts_the_others(tmp_path):
    policies = tmp_path / "policies"
    (policies / "tests").mkdir(parents=True)
    (policies / "p.toml").write_text('[[routes]]\nname = "h"\npaths = ["/h"]\npublic = true\n')
    (policies / "tests" / "t.toml").write_text(
        '[[cases]]\nname = "ok"\nmethod = "GET"\nurl = "https://x/h"\nexpect = "allow"\n\n'
        '[[cases]]\nname = "typo"\nmethod = "GET"\nurl = "https://x/h"\nexpect = "allow"\nbogus = 1\n\n'
        '[[cases]]\nname = "fails"\nmethod = "GET"\nurl = "https://x/nothing"\nexpect = "allow"\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["test", "--policies", str(policies)], out=out, err=err) == 1
    assert out.getvalue().strip().endswith("1 passed, 1 failed, 1 invalid (not run)")
    assert "bogus" in err.getvalue()


def test_a_host_written_as_a_url_says_so(tmp_path):
    (tmp_path / "p.toml").write_text('[[routes]]\nname = "h"\nhosts = ["https://api.example.com"]\npaths = ["/h"]\npublic = true\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", "--policies", str(tmp_path)], out=out, err=err) == 1
    assert "is a URL: write the host alone ('api.example.com')" in err.getvalue() + out.getvalue()


def test_explain_hints_that_tokens_carry_guids_not_alias_names(tmp_path):
    (tmp_path / "p.toml").write_text('[groups]\nadmins = "11111111-1111-4111-8111-111111111111"\n'
                                     '[[routes]]\nname = "a"\npaths = ["/a"]\nallow = { groups = ["admins"] }\n')
    out, err = io.StringIO(), io.StringIO()
    main(["explain", "https://x/a", "--policies", str(tmp_path), "--claims", '{"groups": ["admins"]}'], out=out, err=err)
    assert "'admins' is an alias in the policy, but tokens carry GUIDs: put 11111111-1111-4111-8111-111111111111" in out.getvalue()
