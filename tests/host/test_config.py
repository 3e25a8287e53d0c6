"""Configuration read from Worker variables: every value checked once, bad ones refused by name."""

import pytest

from entragate.config import Config, ConfigError

BASE = {
    "ORIGIN_URL": "https://origin.example",
    "ENTRA_TENANT_ID": "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b",
    "ENTRA_AUDIENCES": "api://a",
}


def config(**variables):
    return Config.from_env({**BASE, **variables}.get)


def test_toml_numbers_and_booleans_are_read_like_the_strings_a_user_would_write():
    # wrangler.toml [vars] `CLOCK_SKEW_SECONDS = 120` reaches the Worker as a number, not a
    # string; it was once silently replaced by the default.
    read = config(CLOCK_SKEW_SECONDS=120, FORWARD_AUTHORIZATION=True, AUDIT_ALLOW_SAMPLE_RATE=0.25,
                  TOKEN_CACHE_SECONDS=0)
    assert (read.clock_skew, read.forward_authorization, read.audit_allow_sample_rate, read.token_cache_seconds) == (
        120, True, 0.25, 0)
    assert config(FORWARD_AUTHORIZATION=False).forward_authorization is False


@pytest.mark.parametrize("name, value, message", [
    ("CLOCK_SKEW_SECONDS", 9999, "between 0 and 600"),
    ("CLOCK_SKEW_SECONDS", 1.5, "must be an integer"),
    ("FORWARD_AUTHORIZATION", 1, "true or false"),
    ("JWKS_COOLDOWN_SECONDS", {"a": 1}, "string, number or boolean"),
    ("ENTRA_AUDIENCES", ["api://a"], "string, number or boolean"),
])
def test_typed_values_are_still_checked(name, value, message):
    with pytest.raises(ConfigError, match=message) as raised:
        config(**{name: value})
    assert name in str(raised.value)


@pytest.mark.parametrize("authority", ["http://login.microsoftonline.com", "http://10.0.0.5:8080", "ftp://x"])
def test_signing_keys_are_never_fetched_over_plain_http_across_a_network(authority):
    with pytest.raises(ConfigError, match="ENTRA_AUTHORITY"):
        config(ENTRA_AUTHORITY=authority)


@pytest.mark.parametrize("authority", ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000",
                                       "https://login.microsoftonline.us/"])
def test_https_and_loopback_authorities_are_accepted(authority):
    assert config(ENTRA_AUTHORITY=authority).authority == authority.rstrip("/")


@pytest.mark.parametrize("authority,canonical", [
    ("HTTPS://Login.MicrosoftOnline.com:443/", "https://login.microsoftonline.com"),
    ("https://login.microsoftonline.com:8443", "https://login.microsoftonline.com:8443"),
])
def test_the_authority_is_kept_in_the_one_spelling_document_urls_are_compared_with(authority, canonical):
    assert config(ENTRA_AUTHORITY=authority).authority == canonical


@pytest.mark.parametrize("authority", [
    "https://login.microsoftonline.com/tenant", "https://evil.example\\@login.microsoftonline.com",
    "https://user@login.microsoftonline.com", "https://login.microsoftonline.com.", "https://127.1",
    "https://login.microsoftonline.com:0443",
])
def test_an_authority_parsers_could_read_differently_is_refused(authority):
    with pytest.raises(ConfigError, match="ENTRA_AUTHORITY"):
        config(ENTRA_AUTHORITY=authority)


def test_origin_may_be_plain_http():
    assert config(ORIGIN_URL="http://origin.internal:8080").origin_url == "http://origin.internal:8080"


def test_strip_headers_names_and_families_are_normalised():
    read = config(STRIP_HEADERS=" X-Corp-User , x_sso_* , x.team.id, X-Auth-* ")
    assert read.strip_header_names == {"x-corp-user", "x-team-id"}
    assert read.strip_header_families == ("x-sso-", "x-auth-")
    assert config().strip_header_names == frozenset() and config().strip_header_families == ()


@pytest.mark.parametrize("value", ["*", "-*", "x-*-y", "x-sso*", "x sso", "x-sso-**", "x:y", "é-user", "-x", "x-", ",,"])
def test_strip_headers_refuses_what_is_not_a_name_or_prefix(value):
    with pytest.raises(ConfigError, match="STRIP_HEADERS"):
        config(STRIP_HEADERS=value)
