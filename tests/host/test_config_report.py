"""Configuration is checked whole: every problem at once, each naming its variable (never a
secret's value), with a hint for the mistakes people make (issue #17)."""

import pytest

from entragate.config import Config, ConfigError

GOOD = {"ORIGIN_URL": "https://o.example", "ENTRA_TENANT_ID": "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b",
        "ENTRA_AUDIENCES": "6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60,api://6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60"}


def problems(**variables) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**GOOD, **variables}.get)
    return caught.value.problems


def test_every_problem_is_reported_not_only_the_first():
    found = problems(ORIGIN_URL=None, ENTRA_TENANT_ID="nope", CLOCK_SKEW_SECONDS="9999", FORWARD_AUTHORIZATION="yes",
                     JWT_ALGORITHMS="HS256", ASSERTION_SIGNING_KEY='{"kty": "RSA"}', SESSION_KEYS="short")
    assert len(found) == 7, found
    for name in ("ORIGIN_URL", "ENTRA_TENANT_ID", "CLOCK_SKEW_SECONDS", "FORWARD_AUTHORIZATION", "JWT_ALGORITHMS",
                 "ASSERTION_SIGNING_KEY", "SESSION_KEYS"):
        assert sum(name in problem for problem in found) >= 1, (name, found)


def test_a_good_configuration_has_no_problems():
    assert Config.from_env(GOOD.get).tenant == GOOD["ENTRA_TENANT_ID"]


@pytest.mark.parametrize("variables,hint", [
    ({"ENTRA_AUTHORITY": "https://login.microsoftonline.com/4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b"}, "MSAL authority"),
    ({"ENTRA_AUTHORITY": "https://login.microsoftonline.com/organizations/v2.0"}, "MSAL authority"),
    ({"ENTRA_AUDIENCES": "api://a api://b"}, "comma-separated, not space-separated"),
    ({"ENTRA_TENANT_ID": "organizations", "ENTRA_ALLOWED_TENANTS": "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b 6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60"},
     "comma-separated"),
    ({"ENTRA_TOKEN_VERSIONS": "1.0 2.0"}, "comma-separated"),
    ({"ENTRA_AUDIENCES": "my-api"}, "no Entra token can carry it"),
    ({"ENTRA_AUDIENCES": "api://x", "ENTRA_TOKEN_VERSIONS": "2.0"}, "no token could match"),
    ({"ENTRA_TENANT_ID": "contoso.onmicrosoft.com"}, "use the tenant id GUID"),
])
def test_likely_mistakes_get_a_hint(variables, hint):
    assert any(hint in problem for problem in problems(**variables)), problems(**variables)


def test_no_problem_repeats_a_secrets_value():
    secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END PRIVATE KEY-----"
    found = problems(ENTRA_CLIENT_ID="6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60", ENTRA_CLIENT_CERTIFICATE=secret,
                     SESSION_KEYS="not-a-real-key-but-secret", ASSERTION_SIGNING_KEY="also-secret-value")
    text = " ".join(found)
    for value in ("c2VjcmV0LXZhbHVl", "not-a-real-key-but-secret", "also-secret-value"):
        assert value not in text
