"""policies/ is the user's (issue #17): `make test` checks it with the user's own cases, a deploy
compiles it, and the product's tests never read it (they run on examples/policies/).

The user's half of `make test` is run for real, in a copy of the project's skeleton: the
recipes of the Makefile's `policy` and `test` targets, command by command, read from the
Makefile itself (only the product's pytest line is left out: that is this suite)."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from entragate_tools.compiler import compile_policies
from fixtures.examples import EXAMPLE_POLICIES
from fixtures.host_gateway import gateway_answer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ROUTES = {route.name for route in compile_policies(EXAMPLE_POLICIES).policy.routes}


def recipe(target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile target."""
    lines = (REPO / "Makefile").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{target}:"):
            commands = []
            for following in lines[i + 1:]:
                if not following.startswith("\t"):
                    break
                commands.append(following.strip())
            return line.partition(":")[2].split(), commands
    raise AssertionError(f"no target {target} in the Makefile")


def user_half_of_make_test() -> list[str]:
    """`make test`'s commands that concern the user's policies: `policy`'s, then `test`'s but
    the product's pytest."""
    prerequisites, commands = recipe("test")
    assert "policy" in prerequisites, "make test no longer compiles policies/ first"
    _, compile_commands = recipe("policy")
    ours = [command for command in commands if "pytest" not in command]
    assert ours == ["$(PY) tools/entragate.py test"], "make test no longer runs the user's policy cases"
    assert commands.index(ours[0]) < next(i for i, c in enumerate(commands) if "pytest" in c), \
        "the user's cases should run before the product's tests"
    assert compile_commands == ["$(PY) tools/entragate.py compile"]
    return compile_commands + ours


def skeleton(tmp_path: Path, policies: dict[str, str]) -> Path:
    """The project as a fork has it after deleting every example (no examples/ at all) and
    writing `policies` (relative path -> text) into policies/: src/, tools/, wrangler.toml,
    Makefile, and no compiled policy yet."""
    root = tmp_path / "fork"
    ignore = shutil.ignore_patterns("__pycache__", "compiled_policy.py")
    for folder in ("src", "tools"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    for file in ("wrangler.toml", "Makefile"):
        shutil.copy2(REPO / file, root / file)
    (root / "policies").mkdir()
    for name, text in policies.items():
        (root / "policies" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "policies" / name).write_text(textwrap.dedent(text).lstrip())
    return root


def run_user_half(root: Path) -> tuple[int, str]:
    """Runs the commands in order, as make does: the first failure stops it."""
    output = []
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    for command in user_half_of_make_test():
        line = command.replace("$(PY)", sys.executable)
        result = subprocess.run(line, shell=True, cwd=root, capture_output=True, text=True, env=env, timeout=120)
        output.append(result.stdout + result.stderr)
        if result.returncode != 0:
            return result.returncode, "".join(output)
    return 0, "".join(output)


def compiled_routes(root: Path) -> dict:
    """The routes of src/compiled_policy.py as the deploy ships it."""
    namespace: dict = {}
    exec((root / "src" / "compiled_policy.py").read_text(), namespace)
    return json.loads(namespace["POLICY_JSON"])


OWN_POLICY = {
    "orders.toml": """
        [[routes]]
        name = "orders-read"
        paths = ["/orders/**"]
        methods = ["GET"]
        allow = { scopes = ["Orders.Read"] }

        [[routes]]
        name = "ops"
        paths = ["/ops/**"]
        allow = { kind = "app", roles = ["Ops.Run"] }
    """,
    "tests/orders.toml": """
        [identities.reader]
        oid = "aaaaaaaa-0000-4000-8000-0000000000a1"
        idtyp = "user"
        scp = "Orders.Read"

        [[cases]]
        name = "a reader reads orders"
        method = "GET"
        url = "https://shop.example/orders/42"
        identity = "reader"
        expect = "allow"
        rule = "orders-read"

        [[cases]]
        name = "the old example API is gone"
        method = "GET"
        url = "https://shop.example/api/items"
        identity = "reader"
        expect = "deny"
        reason = "no_route"
    """,
}


def test_a_user_who_replaces_every_policy_gets_a_green_make_test_and_deploys_only_theirs(tmp_path):
    root = skeleton(tmp_path, OWN_POLICY)
    status, output = run_user_half(root)
    assert status == 0, output
    assert "compiled 2 routes -> src/compiled_policy.py" in output and "2 passed, 0 failed" in output
    data = compiled_routes(root)
    assert {route["name"] for route in data["routes"]} == {"orders-read", "ops"}
    assert not EXAMPLE_ROUTES & {route["name"] for route in data["routes"]}
    # What runs is what was compiled: the gateway on the fork's policy.
    assert gateway_answer("https://shop.example/api/items", policies=root / "policies").code == "no_route"
    assert gateway_answer("https://shop.example/orders/1", policies=root / "policies").code == "missing_token"


def test_a_deploy_compiles_policies_as_make_test_does():
    """wrangler's [build] (every `wrangler deploy` / `make deploy`) runs the same compile as
    `make policy`, on policies/, into the module src/entry.py imports."""
    config = tomllib.loads((REPO / "wrangler.toml").read_text())
    build = config["build"]
    assert build["watch_dir"] == "policies"
    assert build["command"].endswith("python tools/entragate.py compile")
    assert recipe("policy")[1] == ["$(PY) tools/entragate.py compile"]
    assert config["main"] == "src/entry.py"
    assert "from compiled_policy import POLICY_JSON" in (REPO / "src" / "entry.py").read_text()
    # The CLI's defaults are policies/ -> src/compiled_policy.py (relative to the checkout).
    from entragate_tools.cli import build_parser

    args = build_parser().parse_args(["compile"])
    assert (args.policies, args.out) == ("policies", "src/compiled_policy.py")


def test_a_failing_user_case_fails_make_test(tmp_path):
    broken = dict(OWN_POLICY)
    broken["tests/wrong.toml"] = """
        [[cases]]
        name = "someone thinks /ops is public"
        method = "GET"
        url = "https://shop.example/ops/run"
        expect = "allow"
    """
    status, output = run_user_half(skeleton(tmp_path, broken))
    assert status == 1, output
    assert 'FAIL policies/tests/wrong.toml cases[0] "someone thinks /ops is public"' in output
    assert "2 passed, 1 failed" in output


def test_a_policy_that_does_not_compile_fails_make_test_before_its_cases(tmp_path):
    status, output = run_user_half(skeleton(tmp_path, {**OWN_POLICY, "typo.toml": '[[routes]]\nname = "x"\npath = ["/x"]\n'}))
    assert status == 1 and "typo.toml" in output and "passed" not in output, output


def test_a_fork_with_no_policy_yet_gets_a_green_make_test_and_a_deny_all_deploy(tmp_path):
    root = skeleton(tmp_path, {"README.md": "my policies go here\n"})
    status, output = run_user_half(root)
    assert status == 0, output
    assert "warning: no *.toml policy files found" in output and "no policy tests" in output
    assert compiled_routes(root)["routes"] == []


def test_the_shipped_starter_passes_its_own_cases(tmp_path):
    root = skeleton(tmp_path, {})
    shutil.rmtree(root / "policies")
    shutil.copytree(REPO / "policies", root / "policies", ignore=shutil.ignore_patterns("__pycache__"))
    status, output = run_user_half(root)
    assert status == 0, output
    routes = compiled_routes(root)["routes"]
    assert [route["name"] for route in routes] == ["api"] and not EXAMPLE_ROUTES & {"api"}
    assert not any(route.get("public") or route.get("login") for route in routes)
    # Its cases cover allow, deny for the scope, no token, default deny and the gateway's own path.
    cases = [case for path in (REPO / "policies" / "tests").glob("*.toml")
             for case in tomllib.loads(path.read_text())["cases"]]
    assert {case.get("reason") for case in cases} >= {None, "insufficient_scope", "token_required", "no_route"}


def test_starting_from_a_copy_of_the_examples_as_policies_readme_says(tmp_path):
    """policies/README.md's commands, run as written in a fork that still has examples/."""
    text = (REPO / "policies" / "README.md").read_text()
    block = text.split("start from a copy of the examples:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    root = skeleton(tmp_path, {})
    shutil.rmtree(root / "policies")
    shutil.copytree(REPO / "policies", root / "policies")
    shutil.copytree(EXAMPLE_POLICIES, root / "examples" / "policies")
    result = subprocess.run(["bash", "-euc", block], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    status, output = run_user_half(root)
    assert status == 0, output
    assert {route["name"] for route in compiled_routes(root)["routes"]} == EXAMPLE_ROUTES


# --- the product's tests never read policies/ -------------------------------------------------

# A reference to the project's policies/ folder (or the module compiled from it) in code: a path
# built from the checkout's root, a literal starting with policies/, the CLI told to use it, or
# src/compiled_policy.py imported or read.
USER_POLICY_REFERENCES = re.compile(
    r"""(?:REPO|PROJECT|ROOT|parents\[\d\])\s*/\s*["']policies["']"""
    r"""|["']policies/"""
    r"""|["']--policies["']\s*,\s*["']policies["']"""
    r"""|^\s*(?:from\s+compiled_policy\s+import|import\s+compiled_policy\b)"""
    r"""|(?:REPO|PROJECT|ROOT|parents\[\d\])\s*/\s*["']src["']\s*/\s*["']compiled_policy\.py["']"""
    r"""|["']src/compiled_policy\.py["']"""
)
# The CLI's own argument test passes "policies" to a command that takes no options: it must fail
# before reading anything.
ALLOWED = {"tests/host/test_cli.py": 'run_module("assertion-key", "--policies", "policies").returncode == 2'}


def test_the_reference_pattern_catches_what_it_must():
    for line in ('POLICIES = REPO / "policies"', "compile_policies(PROJECT / 'policies')", 'Path("policies/tests")',
                 'main(["check", "--policies", "policies"])', "from compiled_policy import POLICY_JSON",
                 'read_text(ROOT / "src" / "compiled_policy.py")', 'open("src/compiled_policy.py")'):
        assert USER_POLICY_REFERENCES.search(line), line
    for line in ('EXAMPLE_POLICIES = PROJECT / "examples" / "policies"', 'tmp_path / "policies"',
                 '"examples/policies/gateway.toml"', '(folder / "src" / "compiled_policy.py").read_text()',
                 '"import compiled_policy\\n"  # a script run on a module in tmp_path'):
        assert not USER_POLICY_REFERENCES.search(line), line


def code_lines(path: Path):
    """Every line but comments (a comment may say where something came from)."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.lstrip().startswith("#"):
            yield number, line


def test_no_product_test_reads_the_users_policies():
    files = [*sorted((REPO / "tests").rglob("*.py")), *sorted((REPO / "bench").glob("*.py")), REPO / "scripts" / "demo.py"]
    this = Path(__file__).resolve()
    found = [f"{path.relative_to(REPO)}:{number}: {code.strip()}"
             for path in files if path.resolve() != this
             for number, code in code_lines(path) if USER_POLICY_REFERENCES.search(code)
             if ALLOWED.get(str(path.relative_to(REPO)), "\0") not in code]
    assert len(files) > 50 and found == []
    for name, line in ALLOWED.items():
        assert line in (REPO / name).read_text(), "an exception no longer needed: remove it"


def test_the_stack_gives_each_worker_its_own_policy_and_leaves_the_users_alone(tmp_path):
    """The runtime layer runs src/entry.py with the examples' compiled policy in a folder of its
    own: src/compiled_policy.py (the user's build output) is neither linked nor written."""
    from entragate_mocks.stack import PROJECT, WORKER_PROJECTS, policy_module, worker_project, worker_source

    user_module = PROJECT / "src" / "compiled_policy.py"
    before = user_module.stat().st_mtime_ns if user_module.exists() else None
    worker_source(tmp_path)
    own = tmp_path / "src" / "compiled_policy.py"
    assert own.is_file() and not own.is_symlink()
    assert own.read_text() == policy_module(EXAMPLE_POLICIES)
    assert f'POLICY_VERSION = "{compile_policies(EXAMPLE_POLICIES).version}"' in own.read_text()
    assert (tmp_path / "src" / "entry.py").resolve() == PROJECT / "src" / "entry.py"
    assert (user_module.stat().st_mtime_ns if user_module.exists() else None) == before

    folder = worker_project("src/entry.py", PROJECT / "wrangler.toml")
    watched = worker_project("src/entry.py", PROJECT / "wrangler.toml", watch=True)
    try:
        assert folder.parent == watched.parent == WORKER_PROJECTS
        config = tomllib.loads((folder / "wrangler.toml").read_text())
        assert config["main"] == "src/entry.py" and "build" not in config  # never compiles policies/
        build = tomllib.loads((watched / "wrangler.toml").read_text())["build"]
        assert (watched / build["watch_dir"]).resolve() == EXAMPLE_POLICIES.resolve()  # relative to the config
        assert build["command"].endswith(f"compile --policies {EXAMPLE_POLICIES} --out {watched / 'src' / 'compiled_policy.py'}")
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(watched)


@pytest.mark.parametrize("module", ["mock_entra", "mock_entra_signin", "echo_origin", "mock_graph", "mock_google", "server"])
def test_the_mocks_live_beside_the_tools_and_the_edge_never_imports_them(module):
    import ast

    assert (REPO / "tools" / "entragate_mocks" / f"{module}.py").is_file()
    assert not (REPO / "tests" / "fixtures" / f"{module}.py").exists()
    for path in (REPO / "src").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[0] in ("entragate_mocks", "entragate_tools", "fixtures") for name in names), \
                (path, names)
