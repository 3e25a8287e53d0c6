"""Google-authenticated origins in the configuration and the policy: every variable mistake is
a ConfigError naming the variable; `origin_auth` compiles to the audience the gateway asks
for, is refused where it cannot be right, and `check` warns about a deployment without the
Google variables."""

import io
import textwrap

import pytest
from entragate_tools.cli import main
from entragate_tools.compiler import PolicyError, compile_policies
from entragate_tools.host_crypto import new_client_certificate

from entragate.config import Config, ConfigError

TENANT = "4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b"
CLIENT = "6d0e8a41-3c5b-4f2e-a9d7-1b2c3d4e5f60"
PROVIDER = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/entragate/providers/entra"
ACCOUNT = "invoker@project-1.iam.gserviceaccount.com"
BASE = {"ORIGIN_URL": "https://svc-abc-ew.a.run.app/base", "ENTRA_TENANT_ID": TENANT, "ENTRA_AUDIENCES": "api://x",
        "ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_SECRET": "s"}
GOOGLE = {"GOOGLE_WORKLOAD_PROVIDER": PROVIDER, "GOOGLE_SERVICE_ACCOUNT": ACCOUNT}


def config(**variables):
    return Config.from_env({**BASE, **variables}.get)


def test_no_google_variable_means_no_google():
    loaded = config()
    assert loaded.google is None and loaded.origin_auth is None and loaded.origin_audience is None


def test_the_defaults_are_googles_public_endpoints_and_the_apps_own_uri():
    google = config(**GOOGLE).google
    assert google.workload_provider == PROVIDER and google.service_account == ACCOUNT
    assert google.sts_url == "https://sts.googleapis.com/v1/token"
    assert google.iam_credentials_url == "https://iamcredentials.googleapis.com/v1"
    assert google.entra_scope == f"api://{CLIENT}/.default" and google.entra_tenant == TENANT


def test_the_provider_name_as_gcloud_prints_it_is_taken_too():
    short = PROVIDER.removeprefix("//iam.googleapis.com/")
    assert config(**{**GOOGLE, "GOOGLE_WORKLOAD_PROVIDER": short}).google.workload_provider == PROVIDER


def test_the_default_origin_with_google_gets_its_service_url_as_audience():
    loaded = config(ORIGIN_AUTH="google", **GOOGLE)
    assert (loaded.origin_auth, loaded.origin_audience) == ("google", "https://svc-abc-ew.a.run.app")
    custom = config(ORIGIN_AUTH="google", ORIGIN_AUDIENCE="my-audience", **GOOGLE)
    assert custom.origin_audience == "my-audience"


def test_a_multi_tenant_gateway_names_the_tenant_google_trusts():
    multi = {"ENTRA_TENANT_ID": "organizations", "ENTRA_ALLOWED_TENANTS": TENANT}
    with pytest.raises(ConfigError, match="ENTRA_WIF_TENANT_ID"):
        config(**multi, **GOOGLE)
    assert config(**multi, **GOOGLE, ENTRA_WIF_TENANT_ID=TENANT.upper()).google.entra_tenant == TENANT


def test_sovereign_or_test_endpoints_are_taken_as_entra_urls_are():
    google = config(**GOOGLE, GOOGLE_STS_URL="https://sts.example.gov/v1/token",
                    GOOGLE_IAM_CREDENTIALS_URL="http://127.0.0.1:9000/v1/").google
    assert google.sts_url == "https://sts.example.gov/v1/token"
    assert google.iam_credentials_url == "http://127.0.0.1:9000/v1"
    # Reduced to the one spelling the runtime's URL parser prints, as ENTRA_AUTHORITY is.
    assert config(**GOOGLE, GOOGLE_STS_URL="HTTPS://STS.Example.GOV:443/v1/token").google.sts_url == \
        "https://sts.example.gov/v1/token"


@pytest.mark.parametrize("variables,message", [
    ({"ORIGIN_AUTH": "google"}, "GOOGLE_WORKLOAD_PROVIDER is required"),
    ({"GOOGLE_SERVICE_ACCOUNT": ACCOUNT}, "GOOGLE_WORKLOAD_PROVIDER is required"),
    ({"GOOGLE_WORKLOAD_PROVIDER": PROVIDER}, "GOOGLE_SERVICE_ACCOUNT is required"),
    ({**GOOGLE, "GOOGLE_WORKLOAD_PROVIDER": "entragate/entra"}, "GOOGLE_WORKLOAD_PROVIDER must be"),
    ({**GOOGLE, "GOOGLE_WORKLOAD_PROVIDER": PROVIDER.replace("global", "europe-west1")}, "GOOGLE_WORKLOAD_PROVIDER must be"),
    ({**GOOGLE, "GOOGLE_WORKLOAD_PROVIDER": PROVIDER + "/x"}, "GOOGLE_WORKLOAD_PROVIDER must be"),
    ({**GOOGLE, "GOOGLE_SERVICE_ACCOUNT": "invoker"}, "GOOGLE_SERVICE_ACCOUNT must be"),
    ({**GOOGLE, "GOOGLE_SERVICE_ACCOUNT": "a/../b@x.iam.gserviceaccount.com"}, "GOOGLE_SERVICE_ACCOUNT must be"),
    ({**GOOGLE, "GOOGLE_SERVICE_ACCOUNT": "a@x.com?x=1"}, "GOOGLE_SERVICE_ACCOUNT must be"),
    ({**GOOGLE, "GOOGLE_STS_URL": "http://sts.example/v1/token"}, "GOOGLE_STS_URL must be an https URL"),
    # Checked as Entra URLs are (authority.py): nothing two URL parsers could read differently.
    ({**GOOGLE, "GOOGLE_STS_URL": "https://sts.example/v1/token?x=1"}, "GOOGLE_STS_URL path must be"),
    ({**GOOGLE, "GOOGLE_STS_URL": "https://evil.example\\@sts.googleapis.com/v1/token"}, "GOOGLE_STS_URL"),
    ({**GOOGLE, "GOOGLE_STS_URL": "https://user@sts.googleapis.com/v1/token"}, "GOOGLE_STS_URL"),
    ({**GOOGLE, "GOOGLE_STS_URL": "https://sts.googleapis.com/v1/../token"}, "GOOGLE_STS_URL path must be"),
    ({**GOOGLE, "GOOGLE_STS_URL": "https://sts.googleapis.com/v1/%74oken"}, "GOOGLE_STS_URL path must be"),
    ({**GOOGLE, "GOOGLE_STS_URL": "https://127.1/v1/token"}, "GOOGLE_STS_URL host must be"),
    ({**GOOGLE, "GOOGLE_STS_URL": "https://sts.googleapis.com"}, "GOOGLE_STS_URL"),
    ({**GOOGLE, "GOOGLE_IAM_CREDENTIALS_URL": "ftp://iam.example/v1"}, "GOOGLE_IAM_CREDENTIALS_URL must be"),
    ({**GOOGLE, "ENTRA_WIF_SCOPE": "api://x"}, "ENTRA_WIF_SCOPE must be"),
    ({**GOOGLE, "ENTRA_WIF_SCOPE": "api://x/.default openid"}, "ENTRA_WIF_SCOPE must be"),
    ({**GOOGLE, "ENTRA_WIF_TENANT_ID": "contoso"}, "ENTRA_WIF_TENANT_ID must be"),
    ({**GOOGLE, "ORIGIN_AUTH": "aws"}, "ORIGIN_AUTH must be one of none, google"),
    ({**GOOGLE, "ORIGIN_AUDIENCE": "x"}, "ORIGIN_AUDIENCE applies only with ORIGIN_AUTH"),
    ({**GOOGLE, "ORIGIN_AUTH": "google", "ORIGIN_AUDIENCE": "has space"}, "ORIGIN_AUDIENCE must be"),
    ({**GOOGLE, "ORIGIN_AUTH": "google", "ORIGIN_URL": "http://svc.example"}, "ORIGIN_URL must be https"),
])
def test_every_google_mistake_names_its_variable(variables, message):
    with pytest.raises(ConfigError, match=message):
        config(**variables)


def test_google_needs_the_gateways_own_entra_app():
    without_client = {name: value for name, value in BASE.items() if not name.startswith("ENTRA_CLIENT")}
    with pytest.raises(ConfigError, match="ENTRA_CLIENT_ID"):
        Config.from_env({**without_client, **GOOGLE}.get)
    pem, _ = new_client_certificate()
    with_certificate = {**without_client, "ENTRA_CLIENT_ID": CLIENT, "ENTRA_CLIENT_CERTIFICATE": pem, **GOOGLE}
    assert Config.from_env(with_certificate.get).google.service_account == ACCOUNT


# The policy side


def compile_text(tmp_path, text, deployments=()):
    (tmp_path / "routes.toml").write_text(textwrap.dedent(text))
    return compile_policies(tmp_path, deployments=deployments)


ROUTE = """
    [[routes]]
    name = "run"
    paths = ["/run/**"]
    allow = {{ authenticated = true }}
    {extra}
"""


def errors_of(tmp_path, extra) -> str:
    with pytest.raises(PolicyError) as raised:
        compile_text(tmp_path, ROUTE.format(extra=textwrap.dedent(extra)))
    return "\n".join(str(error) for error in raised.value.errors)


def test_origin_auth_compiles_to_the_service_url_or_the_audience_given(tmp_path):
    compiled = compile_text(tmp_path, ROUTE.format(extra='origin = "https://run-abc-ew.a.run.app/v1/"\n'
                                                          'origin_auth = "google"'))
    (route,) = compiled.data["routes"]
    assert route["origin_auth"] == {"type": "google", "audience": "https://run-abc-ew.a.run.app"}
    assert compiled.policy.has_google_origins and compiled.policy.routes[0].origin_auth["audience"].endswith(".run.app")
    custom = compile_text(tmp_path, ROUTE.format(extra='origin = "https://run.example"\norigin_auth = "google"\n'
                                                       'origin_audience = "run.internal"'))
    assert custom.data["routes"][0]["origin_auth"]["audience"] == "run.internal"
    plain = compile_text(tmp_path, ROUTE.format(extra='origin = "https://run.example"'))
    assert "origin_auth" not in plain.data["routes"][0] and not plain.policy.has_google_origins


@pytest.mark.parametrize("extra,message", [
    ('origin_auth = "google"', "origin_auth needs the route's own `origin`"),
    ('origin = "http://run.example"\norigin_auth = "google"', "origin_auth needs an https origin"),
    ('origin = "https://run.example"\norigin_audience = "x"', "origin_audience applies only with origin_auth"),
    ('origin = "https://run.example"\norigin_auth = "aws"', "origin_auth"),
    ('origin = "https://run.example"\norigin_auth = "google"\norigin_audience = "two words"', "origin_audience"),
    ('origin = "https://run.example"\norigin_auth = true', "origin_auth"),
])
def test_origin_auth_where_it_cannot_be_right_is_an_error(tmp_path, extra, message):
    assert message in errors_of(tmp_path, extra)


def test_a_loopback_http_origin_is_allowed_for_local_mocks(tmp_path):
    compiled = compile_text(tmp_path, ROUTE.format(extra='origin = "http://127.0.0.1:9002"\norigin_auth = "google"'))
    assert compiled.data["routes"][0]["origin_auth"]["audience"] == "http://127.0.0.1:9002"


def test_check_warns_when_a_deployment_lacks_the_google_variables(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "routes.toml").write_text(textwrap.dedent(ROUTE.format(
        extra='origin = "https://run.example"\norigin_auth = "google"')))
    (tmp_path / "wrangler.toml").write_text(textwrap.dedent(f"""
        name = "gw"
        [vars]
        ENTRA_TENANT_ID = "{TENANT}"
        ENTRA_CLIENT_ID = "{CLIENT}"
        GOOGLE_WORKLOAD_PROVIDER = "{PROVIDER}"
        GOOGLE_SERVICE_ACCOUNT = "{ACCOUNT}"

        [env.staging.vars]
        ENTRA_TENANT_ID = "{TENANT}"
        ENTRA_CLIENT_ID = "{CLIENT}"
    """))
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", "--policies", str(policies)], out=out, err=err) == 0
    warnings = [line for line in err.getvalue().splitlines() if "warning" in line]
    assert len(warnings) == 1, err.getvalue()
    assert "[env.staging.vars]" in warnings[0] and "GOOGLE_WORKLOAD_PROVIDER, GOOGLE_SERVICE_ACCOUNT" in warnings[0]
    assert main(["check", "--strict", "--policies", str(policies)], out=io.StringIO(), err=io.StringIO()) != 0
