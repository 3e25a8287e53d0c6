"""`uv run python tools/entragate.py` (or `python -m entragate_tools` with src/ and tools/ on the path): validate, compile, explain and test the policies; make an
assertion signing key.

Exit codes: 0 ok, 1 policy error or failing test, 2 usage error (bad arguments or input).
"""

import argparse
import json
import re
import tomllib
import sys
from dataclasses import dataclass
from pathlib import Path

from entragate.claims import identity_from_claims
from entragate.errors import AmbiguousPath, AmbiguousSpelling, InvalidToken
from entragate.graph import asked_groups, with_resolved_groups
from entragate.identity import Identity
from entragate.paths import fold_path
from entragate.policy import Decision, Route
from entragate.target import Target, request_target, split_url
from entragate.tokens import is_unicode

from .compiler import Compiled, PolicyError, compile_policies, module_text, unreadable
from .schema import policy_json_schema, tests_json_schema
from .tenants import DeploymentError, read_deployments

OK, FAILED, USAGE = 0, 1, 2
GUID_NAME = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class UsageError(Exception):
    pass


# ---------------------------------------------------------------- shared helpers


def _print_diagnostics(diags, stream) -> None:
    for diag in diags:
        print(diag, file=stream)


def _deployments(args) -> list:
    """`check --config FILE`, else the project's wrangler.toml (beside the policy directory)
    when there is one."""
    path = Path(args.config) if args.config else Path(args.policies).resolve().parent / "wrangler.toml"
    if not args.config and not path.is_file():
        return []
    try:
        return read_deployments(path)
    except DeploymentError as exc:
        raise UsageError(str(exc)) from None


def _compile(args, err, deployments=()) -> Compiled | None:
    try:
        compiled = compile_policies(args.policies, deployments=deployments)
    except PolicyError as exc:
        _print_diagnostics(exc.errors + exc.warnings, err)
        n = len(exc.errors)
        print(f"{n} error{'s' if n != 1 else ''} in {args.policies}", file=err)
        return None
    _print_diagnostics(compiled.warnings, err)
    return compiled


def request_url(url: str) -> str:
    """`url` as the gateway's `request.url` carries it when a client requests it: no fragment
    (clients never send one), and `/` for an empty path. Reading the host and path from it is
    left to `entragate.target.request_target`, exactly as in the gateway."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise UsageError(f"not an http(s) URL: {url!r}")
    rest = rest.partition("#")[0]
    cut = next((i for i, c in enumerate(rest) if c in "/?"), len(rest))
    if cut == 0:
        raise UsageError(f"no host in URL: {url!r}")
    if not rest.startswith("/", cut):  # https://h or https://h?q: the client asks for /
        rest = rest[:cut] + "/" + rest[cut:]
    return f"{scheme.lower()}://{rest}"


GATEWAY_ENDPOINTS = {
    "health": "readiness (200 ready, 503 while an issuer's signing keys cannot be loaded)",
    "jwks": "the public keys of the identity assertion",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the gateway does with a request, up to checking its token (the same code runs)."""

    url: str  # as the gateway receives it
    target: Target | None  # None: refused before any policy (`refusal`)
    decision: Decision | None  # None: one of the gateway's own endpoints (`target.endpoint`)
    route: Route | None = None
    refusal: AmbiguousPath | None = None

    @property
    def verdict(self) -> str:
        if self.decision is None:
            return "gateway"
        return "allow" if self.decision.allowed else "deny"


def run_request(policy, method: str, url: str, identity: Identity | None) -> Outcome:
    """The gateway's steps (`Gateway._decide`): read the target (or refuse it with 400), answer
    its own endpoints before any policy, else match (or refuse another spelling of a path
    routed elsewhere with 400) and decide."""
    url = request_url(url)
    try:
        target = request_target(url)
    except AmbiguousPath as exc:
        return Outcome(url, None, Decision(False, exc.code, None), refusal=exc)
    if target.endpoint is not None:
        return Outcome(url, target, None)
    try:
        route = policy.match(method, target.host, target.path)
    except AmbiguousPath as exc:
        return Outcome(url, target, Decision(False, exc.code, None), refusal=exc)
    return Outcome(url, target, policy.verdict(route, identity), route)


def overage_question(compiled: Compiled, identity: Identity | None, decision: Decision | None) -> tuple | None:
    """The groups the gateway would ask Microsoft Graph about (GRAPH_GROUPS = true, graph.py)
    for this decision, or None when it would not ask: only a decision that hangs on groups an
    overage token could not list, for a user."""
    if identity is None or decision is None or decision.reason != "groups_overage" or identity.kind != "user":
        return None
    from entragate.upstream import referenced_groups

    return asked_groups(referenced_groups(compiled.data))


def graph_answer(compiled: Compiled, names) -> frozenset:
    """Group ids (or their aliases) as Graph would answer: the groups the user is a member of."""
    aliases = compiled.aliases.get("groups", {})
    answer = set()
    for name in names:
        if name in aliases:
            answer.update(aliases[name])
        elif GUID_NAME.match(name):
            answer.add(name.lower())
        else:
            raise UsageError(f"graph groups: {name!r} is neither a group alias of the policy nor a GUID")
    return frozenset(answer)


def decide_with_graph(compiled: Compiled, outcome: "Outcome", identity: Identity, method: str,
                      answer: frozenset) -> "Outcome":
    """The decision once Graph answered `answer` to the overage question, as the gateway makes it."""
    question = overage_question(compiled, identity, outcome.decision)
    if question is None:
        return outcome
    resolved = with_resolved_groups(identity, tuple(group for group in question if group in answer))
    return run_request(compiled.policy, method, outcome.url, resolved)


def _load_claims(value: str) -> dict:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read claims file {value[1:]}: {unreadable(exc)}") from None
    try:
        claims = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--claims is not valid JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise UsageError("--claims must be a JSON object")
    return claims


def _claims_from_token(token: str) -> dict:
    import jwt

    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise UsageError(f"cannot decode --token: {exc}") from None


def render_condition(node, names: dict) -> str:
    op = node[0]
    if op == "true":
        return "any valid token"
    if op in ("groups", "users", "clients", "tenants"):
        shown = [f"{names[v]} ({v})" if v in names else v for v in node[1]]
        return f"{op} any of [{', '.join(shown)}]"
    if op in ("roles", "scopes"):
        return f"{op} any of [{', '.join(node[1])}]"
    if op == "kind":
        return f"kind = {node[1]}"
    if op == "not":
        return f"not ({render_condition(node[1], names)})"
    joiner = " and " if op == "all" else " or "
    return "(" + joiner.join(render_condition(n, names) for n in node[1]) + ")"


def _printable(value) -> str:
    """A claim as text that cannot drive the terminal (a token's claims are anyone's input)."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _describe_identity(identity: Identity, names: dict) -> str:
    def show(values):
        return "[" + ", ".join(_printable(names.get(v, v)) for v in values) + "]"

    groups = "overage (too many to list)" if identity.groups_overage and not identity.groups else show(identity.groups)
    if identity.groups_overage and identity.groups:
        groups += " + overage"
    return (
        f"{identity.kind} token, oid={_printable(identity.oid)}, tid={_printable(identity.tid)}, "
        f"client={_printable(identity.client_id)}\n"
        f"          groups={groups} roles={show(identity.roles)} scopes={show(identity.scopes)}"
    )


# ---------------------------------------------------------------- commands


def cmd_check(args, out, err) -> int:
    compiled = _compile(args, err, _deployments(args))
    if compiled is None:
        return FAILED
    n_routes = len(compiled.policy.routes)
    print(
        f"ok: {n_routes} routes from {len(compiled.files)} files, version {compiled.version}, "
        f"{len(compiled.warnings)} warning{'s' if len(compiled.warnings) != 1 else ''}",
        file=out,
    )
    if args.strict and compiled.warnings:
        print("failing because of warnings (--strict)", file=err)
        return FAILED
    return OK


def cmd_compile(args, out, err) -> int:
    compiled = _compile(args, err)
    if compiled is None:
        return FAILED
    if args.strict and compiled.warnings:
        print("not written: warnings with --strict", file=err)
        return FAILED
    target = Path(args.out)
    text = module_text(compiled)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"cannot write {target}: {exc}", file=err)
        return USAGE
    print(f"compiled {len(compiled.policy.routes)} routes -> {target} (version {compiled.version})", file=out)
    return OK


def cmd_explain(args, out, err) -> int:
    if args.claims is not None and args.token is not None:
        raise UsageError("give --claims or --token, not both")
    identity = None
    if args.token is not None:
        claims = _claims_from_token(args.token)
        print(
            "NOTE: --token was decoded WITHOUT verifying its signature, issuer, audience or "
            "expiry; this explains the policy only. The gateway verifies all of them.",
            file=out,
        )
    elif args.claims is not None:
        claims = _load_claims(args.claims)
    else:
        claims = None
    if claims is not None:
        if not is_unicode(claims):  # the gateway refuses such a token; printing one would fail
            raise UsageError("claims are not a valid Entra token payload: a string holds a lone surrogate (not Unicode)")
        try:
            identity = identity_from_claims(claims)
        except InvalidToken as exc:
            raise UsageError(f"claims are not a valid Entra token payload: {exc.detail}") from None
    request_url(args.url)  # a usage error before compiling
    method = args.method.upper()
    compiled = _compile(args, err)
    if compiled is None:
        return FAILED
    names = compiled.alias_names()
    outcome = run_request(compiled.policy, method, args.url, identity)
    question = overage_question(compiled, identity, outcome.decision)
    answer = None
    if args.graph_groups is not None:
        answer = graph_answer(compiled, [name.strip() for name in args.graph_groups.split(",") if name.strip()])
    print(f"policy    {args.policies} (version {compiled.version})", file=out)
    print(f"request   {method} {outcome.url}", file=out)
    target = outcome.target
    if target is None:
        host, path_and_query = split_url(outcome.url)
        print(f"host      {host}", file=out)
        print(f"path      {path_and_query.partition('?')[0]}", file=out)
        print(f"refused   {outcome.refusal.status} {outcome.refusal.code}: {outcome.refusal.detail}; the gateway refuses "
              "the request before any policy", file=out)
    else:
        print(f"host      {target.host}", file=out)
        if target.endpoint is not None:
            print(f"path      {target.path_and_query.partition('?')[0]}", file=out)
            print(f"endpoint  {target.endpoint}: {GATEWAY_ENDPOINTS[target.endpoint]}", file=out)
            print("decision  none: the gateway answers this path itself, for any method and with or "
                  "without a token, before any policy (not a policy decision)", file=out)
            return OK
        if compiled.policy.spellings == "fold":
            print(f"path      {target.path}  (decoded)", file=out)
            print(f"matched   {fold_path(target.path)}  (folded: spellings = \"fold\")", file=out)
        else:
            print(f"path      {target.path}  (decoded, as matched)", file=out)
    print(f"identity  {_describe_identity(identity, names) if identity else 'none (no token)'}", file=out)
    for hint in _alias_hints(identity, compiled):
        print(f"hint      {hint}", file=out)
    route = outcome.route
    refusal = outcome.refusal
    if isinstance(refusal, AmbiguousSpelling):
        print(f"folded    {refusal.folded}  (letter case, trailing slash, format suffix)", file=out)
        print(f"route     {refusal.route} as written; {refusal.folded_route} for the folded path", file=out)
        print(f"refused   {refusal.status} {refusal.code}: {refusal.detail}; the gateway refuses it before "
              "checking any token", file=out)
    elif route is None:
        if target is not None:
            print("route     none matches: default deny", file=out)
    else:
        specs = "; ".join(
            f"{'any host' if h == '*' else h} {p} {' '.join(m)}" for h, p, m in route.match_spec
        )
        print(f"route     {route.name} [{route.source}] {specs}", file=out)
        item = next(r for r in compiled.data["routes"] if r["name"] == route.name)
        if item["public"]:
            print("          public: no token needed", file=out)
        if item["deny"] is not None:
            print(f"  deny    {render_condition(item['deny'], names)}", file=out)
        if item["allow"] is not None:
            print(f"  allow   {render_condition(item['allow'], names)}", file=out)
    if question is not None:
        asked = ", ".join(f"{names[g]} ({g})" if g in names else g for g in question)
        print(f"overage   would ask Graph for: {asked}", file=out)
        if answer is None:
            print("          (with GRAPH_GROUPS = true, as the gateway's own app; without it the refusal below "
                  "stands; --graph-groups states Graph's answer)", file=out)
        else:
            members = [f"{names[g]} ({g})" if g in names else g for g in question if g in answer]
            print(f"graph     answers: member of [{', '.join(members)}]", file=out)
            outcome = decide_with_graph(compiled, outcome, identity, method, answer)
    elif answer is not None:
        print("graph     not asked: the decision does not hang on groups an overage token could not list", file=out)
    decision = outcome.decision
    print(f"decision  {'ALLOW' if decision.allowed else 'DENY'}", file=out)
    print(f"reason    {decision.reason}", file=out)
    print(f"rule      {decision.rule or '-'}", file=out)
    return OK


def _alias_hints(identity, compiled) -> list[str]:
    """Claims that name an alias where a token carries an object id (Entra tokens carry GUIDs:
    group and user aliases only exist in policy files)."""
    if identity is None:
        return []
    hints = []
    for kind, values in (("groups", identity.groups), ("users", (identity.oid,)), ("tenants", (identity.tid,)),
                         ("clients", (identity.client_id,))):
        table = compiled.aliases.get(kind, {})
        for value in values:
            if value in table:
                guids = ", ".join(table[value])
                hints.append(f"{value!r} is an alias in the policy, but tokens carry GUIDs: put {guids} in the claims")
    return hints


def cmd_test(args, out, err) -> int:
    from pydantic import ValidationError
    import tomllib

    from .compiler import validation_diagnostics
    from .schema import TestFile

    compiled = _compile(args, err)
    if compiled is None:
        return FAILED
    tests_dir = Path(args.tests) if args.tests else Path(args.policies) / "tests"
    files = sorted(p for p in tests_dir.glob("*.toml") if p.is_file())
    if not files:
        if not compiled.policy.routes:
            # Nothing to pin: a policy with no routes refuses everything (a fork that has not
            # written its own yet). Not a failure, so `make test` stays green until it has.
            print(f"no policy tests: {args.policies} has no routes (every request is refused) and {tests_dir} "
                  "no test files", file=out)
            print("0 passed, 0 failed", file=out)
            return OK
        print(f"no test files (*.toml) in {tests_dir}: add cases for the policy's routes (policies/README.md, Tests)",
              file=err)
        print("0 passed, 0 failed", file=out)
        return FAILED
    passed = failed = invalid = 0
    broken = False
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: error: cannot read: {unreadable(exc)}", file=err)
            broken = True
            continue
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            print(f"{path}: error: TOML syntax: {exc}", file=err)
            broken = True
            continue
        try:
            suites = [(index, TestFile.model_validate(raw)) for index in [None]]
        except ValidationError as exc:
            _print_diagnostics(validation_diagnostics(str(path), text, raw, exc, TestFile), err)
            broken = True
            # One bad case does not hide the others: each valid case still runs (and counts).
            suites, bad = _valid_cases(raw, TestFile)
            invalid += bad
        for index, suite in suites:
            for i, case in enumerate(suite.cases):
                label = f'{path} cases[{i if index is None else index}] "{case.name}"'
                problem = _run_case(compiled, suite, case)
                if problem is None:
                    passed += 1
                    if args.verbose:
                        print(f"ok   {label}", file=out)
                else:
                    failed += 1
                    print(f"FAIL {label}: {case.method} {case.url}\n     {problem}", file=out)
    summary = f"{passed} passed, {failed} failed"
    print(summary + (f", {invalid} invalid (not run)" if invalid else ""), file=out)
    return FAILED if failed or broken else OK


def _valid_cases(raw, model) -> tuple[list, int]:
    """[(case index, a one-case suite)] for each case of an invalid file that is valid on its own
    (with the file's identities), and how many are not."""
    from pydantic import ValidationError

    cases = raw.get("cases") if isinstance(raw, dict) else None
    if not isinstance(cases, list):
        return [], 0
    suites, bad = [], 0
    for index, case in enumerate(cases):
        try:
            suites.append((index, model.model_validate({"identities": raw.get("identities", {}), "cases": [case]})))
        except ValidationError:
            bad += 1
    return suites, bad


def _run_case(compiled: Compiled, suite, case) -> str | None:
    identity = None
    claims = case.claims
    if case.identity is not None:
        if case.identity not in suite.identities:
            known = ", ".join(sorted(suite.identities)) or "none"
            return f"unknown identity {case.identity!r} (known: {known})"
        claims = suite.identities[case.identity]
    if claims is not None:
        try:
            identity = identity_from_claims(claims)
        except InvalidToken as exc:
            return f"claims are not a valid token payload: {exc.detail}"
    try:
        outcome = run_request(compiled.policy, case.method, case.url, identity)
        if case.graph_groups is not None:
            if identity is None or not identity.groups_overage:
                return "graph_groups is Graph's answer for an overage identity (_claim_names or hasgroups in its claims)"
            outcome = decide_with_graph(compiled, outcome, identity, case.method, graph_answer(compiled, case.graph_groups))
    except UsageError as exc:
        return str(exc)
    got, decision = outcome.verdict, outcome.decision
    wrong = []
    if got != case.expect:
        wrong.append(f"expected {case.expect}, got {got}")
    if case.reason is not None and (decision is None or decision.reason != case.reason):
        wrong.append(f"expected reason {case.reason}, got {decision.reason if decision else 'none'}")
    if case.rule is not None and (decision is None or decision.rule != case.rule):
        wrong.append(f"expected rule {case.rule}, got {(decision.rule if decision else None) or 'none'}")
    if not wrong:
        return None
    if decision is None:
        shown = f"the gateway answers this path itself ({outcome.target.endpoint}), before any policy"
    else:
        extra = f": {outcome.refusal.detail}" if outcome.refusal else ""
        shown = f"decision: {got} ({decision.reason}{extra}), rule {decision.rule or 'none'}"
    return "; ".join(wrong) + f"  [{shown}]"


def _schema_for_editors(schema: dict) -> dict:
    """Drop the `null` branches pydantic adds for optional keys: TOML has no null."""

    def walk(node):
        if isinstance(node, dict):
            any_of = node.get("anyOf")
            if isinstance(any_of, list):
                kept = [n for n in any_of if n != {"type": "null"}]
                if len(kept) != len(any_of):
                    node = {k: v for k, v in node.items() if k != "anyOf"}
                    if node.get("default", 0) is None:
                        del node["default"]
                    if len(kept) == 1:
                        node = {**kept[0], **node}
                    else:
                        node["anyOf"] = kept
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def cmd_schema(args, out, err) -> int:
    schema = tests_json_schema() if args.tests else policy_json_schema()
    print(json.dumps(_schema_for_editors(schema), indent=2, sort_keys=True), file=out)
    return OK


def cmd_assertion_key(args, out, err) -> int:
    # `cryptography` is a host-only dependency; only this command needs it.
    from entragate.assertion import parse_signing_key

    from .host_crypto import new_assertion_key

    # The key alone on stdout, so it can be piped straight into `wrangler secret put`.
    private = new_assertion_key()
    print(private, file=out)
    public = json.dumps(parse_signing_key(private)[1])
    print(
        "store it with `npx wrangler secret put ASSERTION_SIGNING_KEY` (paste the line above); "
        "its public half is then served at /.well-known/entragate/jwks.json.\n"
        f"To rotate without a gap, publish the public half first (ASSERTION_PUBLISHED_KEYS='[{public}]'):\n{public}",
        file=err,
    )
    return OK


def cmd_config(args, out, err) -> int:
    from pathlib import Path

    from .config_check import check, read_variables

    config = Path(args.config)
    if not config.is_file():
        raise UsageError(f"no such file: {config}")
    overrides = {}
    for item in args.var or []:
        name, sep, value = item.partition(":")
        if not sep or not name:
            raise UsageError(f"--var takes NAME:VALUE, not {item!r}")
        overrides[name] = value
    try:
        variables, sources = read_variables(config, env=args.env, dev_vars=not args.no_dev_vars, overrides=overrides)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        print(f"{config}: cannot read it: {error}", file=err)
        return FAILED
    login_routes = False
    compiled = _compile(args, err) if Path(args.policies).is_dir() else None
    if compiled is not None:
        login_routes = any(route.get("login") for route in compiled.data["routes"])
    committed = tomllib.loads(config.read_text(encoding="utf-8")).get("vars", {})
    report = check(variables, committed=committed, login_routes=login_routes)
    for problem in report.problems:
        print(f"error: {problem}", file=out)
    for warning in report.warnings:
        print(f"warning: {warning}", file=out)
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{verdict}: {len(variables)} variables from {', '.join(sources)}; {len(report.warnings)} warning(s)", file=out)
    return OK if report.ok else FAILED


def cmd_session_key(args, out, err) -> int:
    from .host_crypto import new_session_key

    print(new_session_key(), file=out)
    print("store it with `npx wrangler secret put SESSION_KEYS`; to rotate, put a new key first, comma-separated "
          "(`NEW,OLD`): the first seals new sessions, all of them open existing ones; drop OLD after "
          "SESSION_LIFETIME_SECONDS", file=err)
    return OK


def cmd_client_certificate(args, out, err) -> int:
    from pathlib import Path

    from entragate.client_auth import parse_certificate

    from .host_crypto import new_client_certificate

    secret, certificate = new_client_certificate(args.name, args.days)
    Path(args.out).write_text(certificate)
    print(secret, file=out, end="")
    print(f"the certificate (public part) is in {args.out}: upload it to the app registration (Certificates & secrets);"
          f" its SHA-256 thumbprint (x5t#S256) is {parse_certificate(secret).thumbprint_s256}. Store stdout with "
          "`npx wrangler secret put ENTRA_CLIENT_CERTIFICATE` (it holds the private key).", file=err)
    return OK


# ---------------------------------------------------------------- argument parsing

DESCRIPTION = """\
Policy tools for entragate. Policies are TOML files in policies/ (see policies/README.md);
the Worker loads the compiled form, and `explain` and `test` run the Worker's own decision
code (entragate.policy) on it.

commands:
  check    validate and compile in memory; print errors and warnings
  compile  validate and write the module the Worker imports (POLICY_JSON, POLICY_VERSION)
  explain  show which route a request hits, the decision, its reason code and rule
  test     run the policy test cases in policies/tests/*.toml (like `opa test`)
  schema   print the JSON Schema of policy files (or of test files with --tests)
  assertion-key
           print a new private EC P-256 JWK for the ASSERTION_SIGNING_KEY secret
  config   check wrangler.toml [vars], .dev.vars and --var as the Worker will read them
  session-key
           print a new key for the SESSION_KEYS secret (browser sessions)
  client-certificate
           make a key and self-signed certificate for ENTRA_CLIENT_CERTIFICATE

exit codes: 0 ok, 1 policy error or failing test, 2 usage error"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/entragate.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_text, description):
        p = sub.add_parser(name, help=help_text, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--policies", default="policies", metavar="DIR",
                       help="directory of policy files (*.toml; default: policies)")
        return p

    p = add("check", "validate and compile in memory",
            "Validate every policy file and compile in memory. Prints errors (file:line: location:"
            " problem) and warnings: routes that can never match; a narrower route under a broader"
            " one that other spellings of its paths (letter case, trailing slash, format suffix)"
            " fall to; in a multi-tenant deployment (read from wrangler.toml), routes that allow on"
            " roles or scopes without pinning tenants. Exit 1 on any error.")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--config", metavar="FILE",
                   help="wrangler.toml to read the deployment from ([vars] and [env.*.vars]: is it multi-tenant?);"
                        " default: wrangler.toml beside the policy directory, if there is one")
    p.set_defaults(func=cmd_check)

    p = add("compile", "write the compiled policy module",
            "Validate, compile and write a Python module holding POLICY_JSON (the compiled policy"
            " as a JSON string) and POLICY_VERSION (short sha256 of it). Output is deterministic.")
    p.add_argument("--out", default="src/compiled_policy.py", metavar="FILE",
                   help="module to write (default: src/compiled_policy.py)")
    p.add_argument("--strict", action="store_true", help="refuse to write if there are warnings")
    p.set_defaults(func=cmd_compile)

    p = add("explain", "explain the decision for one request",
            "Run one request through the compiled policy and print the route it matches, the"
            " decision, the reason code and the rule. Identity from --claims (JSON, or @file) or"
            " --token (a JWT decoded WITHOUT signature verification, for explanation only);"
            " neither means a request without a token. The host and path are read as the gateway"
            " reads them: a URL it refuses before any policy (ambiguous path or host) is shown as"
            " its 400 refusal, and its own endpoints (health, jwks) as answered by the gateway.\n\n"
            "example: explain --method POST https://app.example.com/api/items --claims @alice.json")
    p.add_argument("url", help="full request URL, e.g. https://api.example.com/api/items")
    p.add_argument("--method", "-X", default="GET", help="HTTP method (default GET)")
    p.add_argument("--claims", metavar="JSON|@FILE", help="token claims as JSON or @file")
    p.add_argument("--token", metavar="JWT", help="an access token; its signature is NOT checked")
    p.add_argument("--graph-groups", metavar="G1,G2", help="for a token with groups overage: what Microsoft Graph "
                   "answers, the groups (aliases or ids) the user is a member of ('' for none)")
    p.set_defaults(func=cmd_explain)

    p = add("test", "run the policy test cases",
            "Run every case in the test files: identity (claims) + request -> expected allow/deny"
            " (or gateway: one of the gateway's own endpoints),"
            " optionally the reason code and rule. Prints each failure and a summary line"
            " 'N passed, M failed'. Exit 1 on any failure.")
    p.add_argument("--tests", metavar="DIR", help="test directory (default: <policies>/tests)")
    p.add_argument("--verbose", "-v", action="store_true", help="also list passing cases")
    p.set_defaults(func=cmd_test)

    p = add("schema", "print the JSON Schema",
            "Print the JSON Schema for policy files, for editor completion and checking (for"
            " example with taplo / Even Better TOML: `#:schema ./policy.schema.json`).")
    p.add_argument("--tests", action="store_true", help="schema of test files instead")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "assertion-key", help="print a new assertion signing key",
        description="Print a fresh private EC P-256 JWK (JSON, one line) on stdout, for the Worker"
        " secret ASSERTION_SIGNING_KEY that signs the identity assertion sent to the origin; a"
        " hint on storing it goes to stderr. Each run makes a new key.\n\n"
        "example: python tools/entragate.py assertion-key | npx wrangler secret put ASSERTION_SIGNING_KEY",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_assertion_key)

    p = add("config", "check the deployment's variables",
            "Read the variables as wrangler hands them to the Worker (wrangler.toml [vars], or"
            " [env.NAME.vars] with --env; then .dev.vars beside it; then --var overrides) and check them"
            " the way the Worker does, reporting every problem at once, with hints for likely mistakes."
            " Secrets are never read or printed; the policies decide which of them must exist. Exit 1 on any"
            " problem.")
    p.add_argument("--config", default="wrangler.toml", metavar="FILE", help="wrangler.toml (default: ./wrangler.toml)")
    p.add_argument("--env", metavar="NAME", help="check [env.NAME.vars] instead of [vars]")
    p.add_argument("--var", action="append", metavar="NAME:VALUE", help="override a variable, as wrangler's --var")
    p.add_argument("--no-dev-vars", action="store_true", help="ignore .dev.vars (what a deploy sees)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "session-key", help="print a new browser-session key",
        description="Print 32 random bytes, base64url, for the SESSION_KEYS secret that seals browser sessions"
        " (AES-256-GCM).\n\nexample: python tools/entragate.py session-key | npx wrangler secret put SESSION_KEYS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_session_key)

    p = sub.add_parser(
        "client-certificate", help="make the gateway's client certificate",
        description="Make an RSA 2048 key and a self-signed certificate for the gateway's app registration."
        " stdout: the PEM for the ENTRA_CLIENT_CERTIFICATE secret (private key and certificate); the"
        " certificate alone goes to --out, to upload to the registration.\n\n"
        "example: python tools/entragate.py client-certificate --out gateway.crt | npx wrangler secret put"
        " ENTRA_CLIENT_CERTIFICATE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="entragate-client.crt", metavar="FILE", help="certificate to upload (PEM)")
    p.add_argument("--name", default="entragate", help="the certificate's common name")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.set_defaults(func=cmd_client_certificate)
    return parser


def main(argv=None, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    try:
        return args.func(args, out, err)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return USAGE
