"""Headers sent to the origin: what is stripped, what is added, how values are encoded."""

from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entragate.identity import APP, Identity
from entragate.upstream import (
    _SAFE, _SAFE_IN_LIST, MAX_FORWARDED_GROUPS, forwarded_groups, header_list, header_value,
    headers_to_strip, identity_headers, referenced_groups,
)

IDENTITY = Identity(
    oid="o-1", tid="t-1", sub="s-1", name="Zoë\r\nX-Injected: 1", username="zoe@example.com",
    groups=("g1", "g2", "g3"), groups_overage=True, roles=("A,B", "C"), scopes=("s1", "s2"),
    client_id="c-1", kind=APP, version="2.0", issuer="i", audience="a", expires_at=0,
)


def test_strips_prefix_in_any_case_and_underscore_form_and_lookalikes():
    names = ["X-Entragate-User-Oid", "x_entragate_roles", "X_ENTRAGATE_GROUPS", "X-Forwarded-User",
             "x-ms-client-principal-name", "Authorization", "Accept", "X-Entragatex", "Cookie"]
    assert headers_to_strip(names, "x-entragate-", forward_authorization=False) == names[:6]
    assert "Authorization" not in headers_to_strip(names, "x-entragate-", forward_authorization=True)


@pytest.mark.parametrize("name", [
    "X-Entragate.User-Oid", "x.entragate.roles", "X~Entragate~Groups", "X--Entragate--Name", "X-Entragate",
    "x_entragate", "X-Entragate-User-Oid.", "X.Forwarded.User", "X_Original_URL", "x.ms.client.principal",
])
def test_any_separator_spelling_of_a_protected_name_is_stripped(name):
    # lighttpd's CGI/FastCGI variable names map every non-alphanumeric to "_", so
    # "X-Entragate.User-Oid" arrives as HTTP_X_ENTRAGATE_USER_OID, the same as ours.
    assert headers_to_strip([name, "Accept"], "x-entragate-", forward_authorization=True) == [name]


@pytest.mark.parametrize("name", ["X-Entragatex", "X-Entragate2-User", "Xentragate-User", "Accept-Entragate-User"])
def test_names_that_only_resemble_the_prefix_are_kept(name):
    assert headers_to_strip([name], "x-entragate-", forward_authorization=True) == []


def test_identity_headers_encode_values_so_nothing_can_be_injected():
    headers = dict(identity_headers(IDENTITY, ["g1"], "x-p-"))
    assert headers["x-p-name"] == "Zo%C3%AB%0D%0AX-Injected: 1" and unquote(headers["x-p-name"]) == IDENTITY.name
    assert headers["x-p-roles"] == "A%2CB,C"
    assert headers["x-p-groups"] == "g1" and headers["x-p-groups-overage"] == "true"
    assert headers["x-p-token-kind"] == "app" and headers["x-p-scopes"] == "s1 s2"
    assert all("\r" not in v and "\n" not in v for v in headers.values())


def test_groups_are_those_the_policy_names_and_bounded():
    many = Identity(**{**{f: getattr(IDENTITY, f) for f in Identity.__slots__}, "groups": tuple(f"g{i}" for i in range(500))})
    referenced = frozenset(f"g{i}" for i in range(0, 500, 2))
    forwarded = forwarded_groups(many, referenced)
    assert len(forwarded) == MAX_FORWARDED_GROUPS and all(g in referenced for g in forwarded)


def test_referenced_groups_walks_nested_conditions():
    policy = {"routes": [
        {"allow": ["any", [["groups", ["a"]], ["not", ["groups", ["b"]]], ["all", [["roles", ["r"]], ["groups", ["c"]]]]]], "deny": None},
        {"allow": None, "deny": ["groups", ["d"]]},
    ]}
    assert referenced_groups(policy) == {"a", "b", "c", "d"}


@given(st.text(max_size=40))
def test_fast_path_encodes_exactly_like_quote(value):
    assert header_value(value) == quote(value, safe=_SAFE)
    assert header_list([value, value]) == ",".join([quote(value, safe=_SAFE_IN_LIST)] * 2)
