"""Conditions: every condition type, any/all/not, aliases, overage, reasons (edge code via the compiler)."""

import json
import textwrap

import pytest

from entragate.claims import identity_from_claims
from entragate.identity import APP, USER, Identity
from entragate.policy import Decision, Policy
from entragate_tools.compiler import compile_policies

ADMINS = "11111111-1111-4111-8111-111111111111"
WRITERS = "22222222-2222-4222-8222-222222222222"
OTHER = "55555555-5555-4555-8555-555555555555"
ALICE = "aaaaaaaa-0000-4000-8000-000000000001"
BOB = "aaaaaaaa-0000-4000-8000-000000000002"
TENANT = "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b"
CLIENT = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"

ALIASES = f"""
[groups]
admins = "{ADMINS}"
writers = "{WRITERS}"
both = ["{ADMINS}", "{WRITERS}"]

[users]
alice = "{ALICE}"

[tenants]
home = "{TENANT}"

[clients]
portal = "{CLIENT}"
"""


def ident(
    *, kind=USER, oid=BOB, tid=TENANT, groups=(), overage=False, roles=(), scopes=(), client=CLIENT
) -> Identity:
    return Identity(
        oid=oid, tid=tid, sub=oid, name=None, username=None, groups=tuple(groups),
        groups_overage=overage, roles=tuple(roles), scopes=tuple(scopes), client_id=client,
        kind=kind, version="2.0", issuer="", audience="", expires_at=0,
    )


def policy_with(tmp_path, allow: str | None = None, deny: str | None = None) -> Policy:
    body = ALIASES + '\n[[routes]]\nname = "r"\npaths = ["/r/**"]\n'
    if allow is not None:
        body += f"allow = {allow}\n"
    if deny is not None:
        body += f"deny = {deny}\n"
    (tmp_path / "p.toml").write_text(body)
    return Policy.from_json(json.loads(compile_policies(tmp_path).json_text))


def decide(policy, identity):
    return policy.decide("GET", "h", "/r/x", identity)


def reason(policy, identity):
    return decide(policy, identity).reason


@pytest.mark.parametrize(
    "allow,yes,no",
    [
        ('{ groups = ["admins"] }', ident(groups=[ADMINS]), ident(groups=[OTHER])),
        (f'{{ groups = ["{ADMINS.upper()}"] }}', ident(groups=[ADMINS]), ident()),  # raw GUID, any case
        ('{ groups = ["both"] }', ident(groups=[WRITERS]), ident(groups=[OTHER])),  # alias of 2 groups
        ('{ roles = ["Gateway.Write"] }', ident(roles=["Gateway.Write"]), ident(roles=["gateway.write"])),
        ('{ scopes = ["access_as_user"] }', ident(scopes=["access_as_user"]), ident(scopes=["other"])),
        ('{ clients = ["portal"] }', ident(client=CLIENT), ident(client=OTHER)),
        ('{ tenants = ["home"] }', ident(tid=TENANT), ident(tid=OTHER)),
        ('{ users = ["alice"] }', ident(oid=ALICE), ident(oid=BOB)),
        (f'{{ users = ["{ALICE}"] }}', ident(oid=ALICE), ident(oid=None)),
        ('{ kind = "user" }', ident(kind=USER), ident(kind=APP)),
        ('{ kind = "app" }', ident(kind=APP), ident(kind=USER)),
        ("{ authenticated = true }", ident(), None),
    ],
)
def test_each_condition_type(tmp_path, allow, yes, no):
    policy = policy_with(tmp_path, allow)
    assert decide(policy, yes) == Decision(True, "allowed", "r")
    if no is not None:
        assert decide(policy, no).allowed is False


def test_keys_in_one_table_are_all_of(tmp_path):
    policy = policy_with(tmp_path, '{ groups = ["admins"], kind = "user" }')
    assert reason(policy, ident(groups=[ADMINS])) == "allowed"
    assert reason(policy, ident(groups=[ADMINS], kind=APP)) == "condition_not_met"
    assert reason(policy, ident(kind=USER)) == "condition_not_met"


def test_any_all_not_nesting(tmp_path):
    allow = (
        '{ all = [ { any = [ { roles = ["R"] }, { groups = ["writers"] } ] },'
        ' { not = { users = ["alice"] } }, { not = { kind = "app" } } ] }'
    )
    policy = policy_with(tmp_path, allow)
    assert reason(policy, ident(roles=["R"])) == "allowed"
    assert reason(policy, ident(groups=[WRITERS])) == "allowed"
    assert reason(policy, ident(groups=[WRITERS], oid=ALICE)) == "condition_not_met"
    assert reason(policy, ident(roles=["R"], kind=APP)) == "condition_not_met"
    assert reason(policy, ident()) == "condition_not_met"


def test_deny_is_checked_first_and_named(tmp_path):
    policy = policy_with(tmp_path, '{ authenticated = true }', '{ users = ["alice"] }')
    assert decide(policy, ident(oid=ALICE)) == Decision(False, "denied_by_rule", "r")
    assert reason(policy, ident(oid=BOB)) == "allowed"


def test_deny_only_route_denies_everyone(tmp_path):
    policy = policy_with(tmp_path, None, "{ authenticated = true }")
    assert reason(policy, ident()) == "denied_by_rule"
    assert reason(policy, None) == "token_required"


def test_deny_only_route_with_narrow_deny_never_allows(tmp_path):
    policy = policy_with(tmp_path, None, '{ users = ["alice"] }')
    assert reason(policy, ident(oid=ALICE)) == "denied_by_rule"
    assert reason(policy, ident(oid=BOB)) == "condition_not_met"


def test_groups_overage_fails_closed_with_own_reason(tmp_path):
    policy = policy_with(tmp_path, '{ groups = ["admins"] }')
    assert decide(policy, ident(overage=True)) == Decision(False, "groups_overage", "r")
    # A group the token does list is still known.
    assert reason(policy, ident(overage=True, groups=[ADMINS])) == "allowed"
    assert reason(policy, ident(overage=False)) == "condition_not_met"


def test_overage_roles_alternative_allows(tmp_path):
    policy = policy_with(tmp_path, '{ any = [ { roles = ["Admin"] }, { groups = ["admins"] } ] }')
    assert reason(policy, ident(overage=True, roles=["Admin"])) == "allowed"
    assert reason(policy, ident(overage=True)) == "groups_overage"


def test_overage_in_all_false_part_wins(tmp_path):
    # all-of with a definitely-false part is false whatever the groups are.
    policy = policy_with(tmp_path, '{ groups = ["admins"], kind = "app" }')
    assert reason(policy, ident(overage=True, kind=USER)) == "condition_not_met"
    assert reason(policy, ident(overage=True, kind=APP)) == "groups_overage"


def test_overage_under_not_is_unknown(tmp_path):
    policy = policy_with(tmp_path, '{ not = { groups = ["admins"] } }')
    assert reason(policy, ident(overage=True)) == "groups_overage"
    assert reason(policy, ident(groups=[OTHER])) == "allowed"
    assert reason(policy, ident(groups=[ADMINS])) == "condition_not_met"


def test_overage_in_deny_fails_closed(tmp_path):
    policy = policy_with(tmp_path, "{ authenticated = true }", '{ groups = ["admins"] }')
    assert reason(policy, ident(overage=True)) == "groups_overage"
    assert reason(policy, ident()) == "allowed"


def test_overage_from_real_claims(tmp_path):
    policy = policy_with(tmp_path, '{ groups = ["admins"] }')
    for claims in (
        {"oid": BOB, "_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}},
        {"oid": BOB, "hasgroups": True},
    ):
        assert reason(policy, identity_from_claims(claims)) == "groups_overage"


def test_insufficient_scope_when_only_the_scope_is_missing(tmp_path):
    policy = policy_with(tmp_path, '{ scopes = ["read"], kind = "user" }')
    assert reason(policy, ident(scopes=["other"])) == "insufficient_scope"
    # Adding the scope would not help an app-only token: plain condition_not_met.
    assert reason(policy, ident(kind=APP)) == "condition_not_met"
    assert reason(policy, ident(scopes=["read"])) == "allowed"


def test_no_insufficient_scope_without_scope_conditions(tmp_path):
    policy = policy_with(tmp_path, '{ roles = ["R"] }')
    assert reason(policy, ident(scopes=["x"])) == "condition_not_met"


def test_token_required_and_public(tmp_path):
    policy = policy_with(tmp_path, '{ authenticated = true }')
    assert decide(policy, None) == Decision(False, "token_required", "r")
    (tmp_path / "p.toml").write_text('[[routes]]\nname = "pub"\npaths = ["/p"]\npublic = true\n')
    public = Policy.from_json(json.loads(compile_policies(tmp_path).json_text))
    assert public.decide("GET", "h", "/p", None) == Decision(True, "public", "pub")
    route = public.match("GET", "h", "/p")
    assert route.public and route.evaluate(ident()) == Decision(True, "public", "pub")


def test_evaluate_is_what_decide_uses(tmp_path):
    policy = policy_with(tmp_path, '{ groups = ["admins"] }')
    route = policy.match("GET", "h", "/r/x")
    for identity in (ident(groups=[ADMINS]), ident(), ident(overage=True)):
        assert route.evaluate(identity) == policy.decide("GET", "h", "/r/x", identity)


def test_compiled_condition_uses_guids_not_aliases(tmp_path):
    (tmp_path / "p.toml").write_text(textwrap.dedent(ALIASES + """
        [[routes]]
        paths = ["/x"]
        allow = { groups = ["admins", "writers"] }
    """))
    data = json.loads(compile_policies(tmp_path).json_text)
    assert data["routes"][0]["allow"] == ["groups", sorted([ADMINS, WRITERS])]
