"""Sign-in and page variables: each mistake is a ConfigError naming the variable."""

import base64

import pytest
from entragate_tools.host_crypto import new_client_certificate, new_session_key

from entragate.config import Config, ConfigError

BASE = {"ORIGIN_URL": "https://o.example", "ENTRA_TENANT_ID": "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b",
        "ENTRA_AUDIENCES": "api://x"}
CLIENT = "6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60"
PEM, _ = new_client_certificate()


def config(**variables):
    return Config.from_env({**BASE, **variables}.get)


def test_no_client_or_session_variable_means_neither():
    assert config().client is None and config().sessions is None


def test_a_client_with_a_certificate_or_a_secret_and_sessions():
    loaded = config(ENTRA_CLIENT_ID=CLIENT, ENTRA_CLIENT_CERTIFICATE=PEM, SESSION_KEYS=new_session_key())
    assert loaded.client.certificate is not None and loaded.client.secret is None
    assert loaded.sessions.lifetime == 8 * 3600
    with_secret = config(ENTRA_CLIENT_ID=CLIENT, ENTRA_CLIENT_SECRET="s", SESSION_KEYS=new_session_key(),
                         SESSION_LIFETIME_SECONDS="3600")
    assert with_secret.client.secret == "s" and with_secret.sessions.lifetime == 3600
    assert config(ENTRA_CLIENT_ID=CLIENT, ENTRA_CLIENT_SECRET="s").sessions is None  # Graph alone needs no sessions


def test_a_certificate_pasted_with_escaped_newlines_is_read():
    assert config(ENTRA_CLIENT_ID=CLIENT, ENTRA_CLIENT_CERTIFICATE=PEM.replace("\n", "\\n")).client.certificate


@pytest.mark.parametrize("variables,message", [
    ({"ENTRA_CLIENT_SECRET": "s"}, "ENTRA_CLIENT_ID is required"),
    ({"ENTRA_CLIENT_ID": "not-a-guid", "ENTRA_CLIENT_SECRET": "s", "SESSION_KEYS": "k"}, "ENTRA_CLIENT_ID must be"),
    ({"ENTRA_CLIENT_ID": CLIENT, "SESSION_KEYS": "k"}, "one of ENTRA_CLIENT_CERTIFICATE"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": "s", "ENTRA_CLIENT_CERTIFICATE": PEM, "SESSION_KEYS": "k"},
     "one of ENTRA_CLIENT_CERTIFICATE"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": "s", "SESSION_KEYS": "c2hvcnQ"}, "32 random bytes"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": "s", "SESSION_KEYS": "!!!"}, "base64url"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": "s", "SESSION_KEYS": " , "}, "at least one key"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_CERTIFICATE": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
      "SESSION_KEYS": "k"}, "must hold the PKCS#8 private key"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_CERTIFICATE": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
      "SESSION_KEYS": "k"}, "PKCS#1"),
    ({"ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": "s", "SESSION_KEYS": "KEY",
      "SESSION_LIFETIME_SECONDS": "10"}, "between 300 and 604800"),
    ({"BRAND_LOGO": "https://cdn.example/logo.png"}, "BRAND_LOGO must be a data:image"),
    ({"BRAND_LOGO": "data:text/html;base64,PHNjcmlwdD4="}, "BRAND_LOGO must be a data:image"),
    ({"SUPPORT_CONTACT": "javascript:alert(1)"}, "SUPPORT_CONTACT must be"),
    ({"SUPPORT_CONTACT": "http://help.example"}, "SUPPORT_CONTACT must be"),
])
def test_every_sign_in_and_page_mistake_names_its_variable(variables, message):
    key = new_session_key()
    variables = {name: (key if value in ("k", "KEY") else value) for name, value in variables.items()}
    with pytest.raises(ConfigError, match=message):
        config(**variables)


def test_two_session_keys_seal_with_the_first_and_the_same_key_twice_is_refused():
    first, second = new_session_key(), new_session_key()
    keys = config(SESSION_KEYS=f"{first}, {second}").sessions.keys
    assert [key.secret for key in keys] == [base64.urlsafe_b64decode(k + "=") for k in (first, second)]
    with pytest.raises(ConfigError, match="same key twice"):
        config(ENTRA_CLIENT_ID=CLIENT, ENTRA_CLIENT_SECRET="s", SESSION_KEYS=f"{first},{first}")


def test_branding_is_read():
    logo = "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    branding = config(BRAND_NAME="Contoso Access", BRAND_LOGO=logo, SUPPORT_CONTACT="it@contoso.example",
                      PAGES_SHOW_RULE="true").branding
    assert (branding.name, branding.logo, branding.support, branding.show_rules) == (
        "Contoso Access", logo, "it@contoso.example", True)
