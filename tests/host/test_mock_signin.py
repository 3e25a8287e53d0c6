"""The mock Entra tenant's sign-in endpoints (tools/entragate_mocks/mock_entra_signin.py), over HTTP on
127.0.0.1 the way the gateway will call them: authorize (code + PKCE), token (authorization code
and client credentials; certificate assertions and secrets), logout (front-channel)."""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from entragate_mocks.mock_entra import DEFAULT_GROUPS, DEFAULT_TENANT_ID, DEFAULT_UPN, DEFAULT_USER_OID, MockTenant
from entragate_mocks.mock_entra_signin import (
    API_WRITERS_GROUP,
    CODE_LIFETIME_SECONDS,
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    JWT_BEARER,
    OVERAGE_GROUP_COUNT,
    PLATFORM_ADMINS_GROUP,
)

REPO = Path(__file__).resolve().parents[2]
OTHER_TENANT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
REDIRECT_URI = "http://127.0.0.1:8787/.well-known/entragate/callback"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HTTP_TIMEOUT = 5


# --- HTTP helpers ---------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def location(self) -> tuple[str, dict[str, str]]:
        """The redirect target without its query, and the query's parameters."""
        parts = urllib.parse.urlsplit(self.headers["Location"])
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        return urllib.parse.urlunsplit(parts._replace(query="")), query

    def json(self) -> dict:
        return json.loads(self.body)


class Browser:
    """Just enough of a browser: a cookie jar for the mock's origin, redirects not followed."""

    def __init__(self, tenant: MockTenant) -> None:
        self.tenant = tenant
        self.cookies: dict[str, str] = {}

    def request(self, method: str, target: str, body: str | None = None, headers: dict | None = None) -> Response:
        parts = urllib.parse.urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.tenant.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            response = Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def get(self, target: str) -> Response:
        return self.request("GET", target)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_url(tenant: MockTenant, segment: str | None = None, **params: str | None) -> str:
    """An authorize URL as the gateway builds it; a parameter set to None is left out."""
    defaults = {
        "client_id": tenant.client_id, "response_type": "code", "redirect_uri": REDIRECT_URI,
        "scope": "openid profile offline_access", "state": "state-123", "nonce": "nonce-456",
        "code_challenge": pkce()[1], "code_challenge_method": "S256", "response_mode": "query",
    }
    merged = {k: v for k, v in {**defaults, **params}.items() if v is not None}
    return f"{tenant.authorization_endpoint(segment)}?{urllib.parse.urlencode(merged)}"


def accounts(page: bytes) -> dict[str, str]:
    """The sign-in page's forms: user key -> form action."""
    found = re.findall(rb'<form method="post" action="([^"]+)"><input type="hidden" name="user" value="([^"]+)">', page)
    return {key.decode(): html.unescape(action.decode()) for action, key in found}


def choose(browser: Browser, page: Response, user: str) -> Response:
    return browser.request("POST", accounts(page.body)[user], body=f"user={user}", headers=FORM)


@dataclass
class SignIn:
    code: str
    query: dict[str, str]
    verifier: str


def sign_in(browser: Browser, user: str = "ada", segment: str | None = None, **params: str) -> SignIn:
    """The whole browser leg: authorize, pick `user` on the page, follow nothing."""
    verifier, challenge = pkce()
    page = browser.get(authorize_url(browser.tenant, segment, code_challenge=challenge, **params))
    assert page.status == 200, page.body
    redirect = choose(browser, page, user)
    assert redirect.status == 302, redirect.body
    _, query = redirect.location
    return SignIn(query["code"], query, verifier)


def token_request(tenant: MockTenant, form: dict | str, segment: str | None = None, headers: dict | None = None,
                  content_type: str = FORM["Content-Type"]) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", tenant.port, timeout=HTTP_TIMEOUT)
    try:
        path = urllib.parse.urlsplit(tenant.token_endpoint(segment)).path
        body = form if isinstance(form, str) else urllib.parse.urlencode(form)
        conn.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def client_key(tenant: MockTenant) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(tenant.client_certificate_pem.encode(), password=None)


def assertion(tenant: MockTenant, segment: str | None = None, *, alg: str = "RS256", key=None,
              headers: dict | None = None, omit: tuple[str, ...] = (), **claims) -> str:
    """A client assertion as MSAL builds one ("certificate credentials"); a header set to None is left out."""
    now = int(time.time())
    payload = {"aud": tenant.token_endpoint(segment), "iss": tenant.client_id, "sub": tenant.client_id,
               "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600, **claims}
    for name in omit:
        payload.pop(name)
    header = {"x5t#S256": tenant.client_certificate_thumbprint_s256, **(headers or {})}
    header = {name: value for name, value in header.items() if value is not None}
    return jwt.encode(payload, key or client_key(tenant), algorithm=alg, headers=header)


def with_certificate(tenant: MockTenant, segment: str | None = None, **kwargs) -> dict:
    return {"client_id": tenant.client_id, "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(tenant, segment, **kwargs)}


def redeem(tenant: MockTenant, signed_in: SignIn, segment: str | None = None, **overrides) -> Response:
    form = {"grant_type": "authorization_code", "client_id": tenant.client_id, "code": signed_in.code,
            "redirect_uri": REDIRECT_URI, "code_verifier": signed_in.verifier,
            "client_secret": tenant.client_secret, **overrides}
    return token_request(tenant, {k: v for k, v in form.items() if v is not None}, segment)


def verify(tenant: MockTenant, token: str, audience: str, tid: str = DEFAULT_TENANT_ID, version: str = "2.0") -> dict:
    """Verify the way a relying party does: discovery -> jwks_uri -> key by kid."""
    discovery = json.loads(Browser(tenant).get(tenant.discovery_url(version, tid)).body)
    keys = {k["kid"]: k for k in json.loads(Browser(tenant).get(discovery["jwks_uri"]).body)["keys"]}
    key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]])
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=tenant.issuer(version, tid))


def error_code(response: Response) -> int:
    return response.json()["error_codes"][0]


@pytest.fixture
def tenant():
    with MockTenant() as t:
        yield t


@pytest.fixture
def browser(tenant):
    return Browser(tenant)


# --- users ----------------------------------------------------------------------


def test_default_users_and_add_user(tenant):
    assert list(tenant.users) == ["ada", "grace", "alan", "katherine"]
    ada = tenant.user("ada")
    assert (ada.oid, ada.name, ada.upn, ada.groups, ada.tid) == (
        DEFAULT_USER_OID, "Ada Lovelace", DEFAULT_UPN, DEFAULT_GROUPS, DEFAULT_TENANT_ID)
    assert PLATFORM_ADMINS_GROUP in tenant.user("grace").groups
    assert tenant.user("alan").groups == () and not tenant.user("alan").overage
    katherine = tenant.user("katherine")
    assert katherine.overage and len(katherine.groups) == OVERAGE_GROUP_COUNT > 200

    bob = tenant.add_user("bob", tid=OTHER_TENANT.upper(), groups=["g1"], roles=["Reports.Read"])
    assert tenant.users["bob"] is bob and tenant.user("bob").tid == OTHER_TENANT
    assert (bob.groups, bob.roles, bob.name) == (("g1",), ("Reports.Read",), "Bob")
    assert uuid.UUID(bob.oid) and bob.oid == tenant.add_user("bob", tid=OTHER_TENANT).oid  # stable
    with pytest.raises(ValueError):
        tenant.add_user("Not A Key")
    with pytest.raises(TypeError):
        tenant.add_user("carol", shoe_size=42)


# --- authorize ------------------------------------------------------------------


def test_discovery_names_the_signin_endpoints(tenant, browser):
    for segment in (DEFAULT_TENANT_ID, "organizations"):
        doc = json.loads(browser.get(tenant.discovery_url("2.0", segment)).body)
        assert doc["authorization_endpoint"] == tenant.authorization_endpoint(segment)
        assert doc["token_endpoint"] == tenant.token_endpoint(segment)
        assert doc["end_session_endpoint"] == tenant.end_session_endpoint(segment)


def test_sign_in_page_lists_the_test_users(tenant, browser):
    url = authorize_url(tenant)
    page = browser.get(url)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    forms = accounts(page.body)
    assert list(forms) == list(tenant.users)
    # Each form posts back to the very authorize request it was shown for.
    assert set(forms.values()) == {urllib.parse.urlsplit(url).path + "?" + urllib.parse.urlsplit(url).query}
    text = page.body.decode()
    assert 'lang="en"' in text and "<h1>" in text and "Ada Lovelace" in text and DEFAULT_UPN in text
    assert not re.search(r"(src|href)=\"?https?:", text) and "<link" not in text  # no external assets
    assert browser.cookies == {} and tenant.hits("authorize") == 1


def test_choosing_a_user_redirects_with_code_state_and_session_state(tenant, browser):
    page = browser.get(authorize_url(tenant, state="xyz"))
    redirect = choose(browser, page, "grace")
    assert redirect.status == 302
    target, query = redirect.location
    assert target == REDIRECT_URI
    assert set(query) == {"code", "state", "session_state"} and query["state"] == "xyz"
    assert len(query["code"]) >= 32
    (sid,) = tenant.sso_sessions
    assert query["session_state"] == sid and tenant.sso_sessions[sid].user_key == "grace"
    assert list(browser.cookies) == [f"ESTSAUTH_{tenant.port}"]
    assert "HttpOnly" in redirect.headers["Set-Cookie"]


def test_second_visit_signs_in_with_sso(tenant, browser):
    first = sign_in(browser, "grace")
    browser.cookies = {"other_app": 'odd,"value"', **browser.cookies, "x": "y=z"}  # 127.0.0.1 is shared
    again = browser.get(authorize_url(tenant, state="second"))
    assert again.status == 302
    _, query = again.location
    assert query["state"] == "second" and query["code"] != first.code
    assert query["session_state"] == first.query["session_state"]  # the same SSO session
    assert "Set-Cookie" not in again.headers


def test_prompt_none(tenant, browser):
    silent = browser.get(authorize_url(tenant, prompt="none", state="s1"))
    assert silent.status == 302
    target, query = silent.location
    assert target == REDIRECT_URI and query["error"] == "login_required"
    assert query["error_description"].startswith("AADSTS50058:") and query["state"] == "s1"
    assert "code" not in query

    sign_in(browser, "ada")
    assert "code" in browser.get(authorize_url(tenant, prompt="none")).location[1]
    # login_hint naming the signed-in user completes; naming another needs interaction.
    assert "code" in browser.get(authorize_url(tenant, prompt="none", login_hint=DEFAULT_UPN)).location[1]
    other = browser.get(authorize_url(tenant, prompt="none", login_hint="grace@contoso.onmicrosoft.com"))
    assert other.location[1]["error"] == "login_required"


@pytest.mark.parametrize("prompt", ["login", "select_account", "consent"])
def test_prompts_that_interrupt_sso_show_the_page(tenant, browser, prompt):
    sign_in(browser, "ada")
    page = browser.get(authorize_url(tenant, prompt=prompt))
    assert page.status == 200 and "ada" in accounts(page.body)
    switched = choose(browser, page, "grace")  # another account: a new SSO session
    assert tenant.sso_sessions[switched.location[1]["session_state"]].user_key == "grace"


def test_login_hint_preselects_a_user(tenant, browser):
    page = browser.get(authorize_url(tenant, login_hint="GRACE@contoso.onmicrosoft.com", domain_hint="contoso.com"))
    assert page.status == 200
    buttons = re.findall(rb'value="(\w+)"><button type="submit"( autofocus)?', page.body)
    assert [key for key, focus in buttons if focus] == [b"grace"]
    sign_in(browser, "ada")
    hinted = browser.get(authorize_url(tenant, login_hint="grace"))  # SSO as someone else: the page
    assert hinted.status == 200


@pytest.mark.parametrize("client_id", ["00000000-0000-0000-0000-000000000000", None])
def test_unknown_client_gets_an_error_page_never_a_redirect(tenant, browser, client_id):
    page = browser.get(authorize_url(tenant, client_id=client_id))
    assert page.status == 400 and "Location" not in page.headers
    assert page.headers["Content-Type"].startswith("text/html")
    assert (b"AADSTS700016" if client_id else b"AADSTS900144") in page.body


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example/.well-known/entragate/callback",
    "http://127.0.0.1:80@evil.example/.well-known/entragate/callback",  # userinfo trick
    "http://127.0.0.1:8787/.well-known/entragate/callback/../../steal",
    "http://127.0.0.1:8787/.well-known/entragate/callback?next=x",
    "HTTP://127.0.0.1:8787/.well-known/entragate/callback",
])
def test_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(tenant, browser, redirect_uri):
    for prompt in (None, "none"):
        page = browser.get(authorize_url(tenant, redirect_uri=redirect_uri, prompt=prompt))
        assert page.status == 400 and "Location" not in page.headers
        assert b"AADSTS50011" in page.body and b"evil" not in page.body.split(b"AADSTS")[0]
    assert browser.get(authorize_url(tenant, redirect_uri=None)).status == 400  # AADSTS900971


def test_redirect_uris_are_patterns_tests_can_replace(tenant, browser):
    assert browser.get(authorize_url(tenant, redirect_uri="http://localhost:9/.well-known/entragate/callback")).status == 200
    tenant.redirect_uris = ["https://gw.example.com/.well-known/entragate/callback"]
    assert browser.get(authorize_url(tenant)).status == 400
    assert browser.get(authorize_url(tenant, redirect_uri=tenant.redirect_uris[0])).status == 200


@pytest.mark.parametrize("params, error, code", [
    ({"code_challenge": None}, "invalid_request", "AADSTS900144"),
    ({"code_challenge_method": None}, "invalid_request", "AADSTS90100"),
    ({"code_challenge_method": "plain"}, "invalid_request", "AADSTS90100"),
    ({"code_challenge": "too-short"}, "invalid_request", "AADSTS501491"),
    ({"response_mode": "fragment"}, "invalid_request", "AADSTS70007"),
    ({"response_mode": "form_post"}, "invalid_request", "AADSTS70007"),
    ({"response_type": "code id_token"}, "unsupported_response_type", "AADSTS70005"),
    ({"scope": "profile"}, "invalid_scope", "AADSTS70011"),
    ({"scope": "openid api://nobody-knows/read"}, "invalid_resource", "AADSTS500011"),
    ({"prompt": "sometimes"}, "invalid_request", "AADSTS90023"),
])
def test_bad_requests_are_redirected_back_with_an_error(tenant, browser, params, error, code):
    response = browser.get(authorize_url(tenant, state="st", **params))
    assert response.status == 302
    target, query = response.location
    assert target == REDIRECT_URI and "code" not in query
    assert query["error"] == error and query["error_description"].startswith(code + ":")
    assert query["state"] == "st"
    assert tenant.sso_sessions == {}


def test_repeated_parameters_are_refused(tenant, browser):
    url = authorize_url(tenant) + "&scope=openid"
    assert browser.get(url).location[1]["error"] == "invalid_request"
    assert browser.get(authorize_url(tenant) + "&redirect_uri=" + urllib.parse.quote(REDIRECT_URI)).status == 400


def test_choosing_an_unknown_or_foreign_user_is_refused(tenant, browser):
    tenant.add_user("mallory", tid=OTHER_TENANT)
    page = browser.get(authorize_url(tenant))
    assert "mallory" not in accounts(page.body)  # not a member of this tenant
    action = accounts(page.body)["ada"]
    for key in ("mallory", "nobody"):
        refused = browser.request("POST", action, body=f"user={key}", headers=FORM)
        assert refused.status == 400 and b"AADSTS50034" in refused.body
    assert tenant.sso_sessions == {}


# --- token: authorization code --------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_code_exchange_with_a_certificate_assertion(tenant, browser, alg):
    signed_in = sign_in(browser, "grace")
    form = {"grant_type": "authorization_code", "code": signed_in.code, "redirect_uri": REDIRECT_URI,
            "code_verifier": signed_in.verifier, **with_certificate(tenant, alg=alg)}
    response = token_request(tenant, form)
    assert response.status == 200, response.body
    assert response.headers["Cache-Control"] == "no-store"
    answer = response.json()
    assert set(answer) == {"token_type", "scope", "expires_in", "ext_expires_in", "access_token", "id_token"}
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == answer["ext_expires_in"] == 3599
    assert answer["scope"].split() == ["User.Read", "openid", "profile"]
    access = verify(tenant, answer["access_token"], GRAPH_APP_ID, version="1.0")  # Graph: a v1 token
    assert access["scp"] == "User.Read openid profile" and access["appidacr"] == "2"
    assert access["appid"] == tenant.client_id and access["upn"] == "grace@contoso.onmicrosoft.com"
    assert "groups" not in access and "roles" not in access  # the gateway app's settings, not Graph's
    assert verify(tenant, answer["id_token"], tenant.client_id)["oid"] == tenant.user("grace").oid


@pytest.mark.parametrize("how", ["form", "basic"])
def test_code_exchange_with_a_client_secret(tenant, browser, how):
    tenant.client_secret = "s3cr+t/with=chars~"  # needs form-encoding, in the body and in Basic
    signed_in = sign_in(browser)
    if how == "form":
        response = redeem(tenant, signed_in)
    else:
        credentials = f"{urllib.parse.quote_plus(tenant.client_id)}:{urllib.parse.quote_plus(tenant.client_secret)}"
        basic = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
        form = {"grant_type": "authorization_code", "code": signed_in.code, "redirect_uri": REDIRECT_URI,
                "code_verifier": signed_in.verifier}
        response = token_request(tenant, form, headers=basic)
    assert response.status == 200, response.body
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["appidacr"] == "1"


def test_id_token_claims(tenant, browser):
    signed_in = sign_in(browser, "grace", nonce="n-0S6_WzA2Mj")
    answer = redeem(tenant, signed_in).json()
    header = jwt.get_unverified_header(answer["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == tenant.signing_kid
    claims = verify(tenant, answer["id_token"], tenant.client_id)
    grace = tenant.user("grace")
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["sid"] == signed_in.query["session_state"]
    assert claims["aud"] == tenant.client_id and claims["ver"] == "2.0"
    assert claims["iss"] == f"https://login.microsoftonline.com/{DEFAULT_TENANT_ID}/v2.0"
    assert (claims["oid"], claims["tid"], claims["name"], claims["preferred_username"]) == (
        grace.oid, DEFAULT_TENANT_ID, "Grace Hopper", grace.upn)
    assert claims["groups"] == [PLATFORM_ADMINS_GROUP, API_WRITERS_GROUP] and claims["roles"] == ["Gateway.Write"]
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 60
    for access_claim in ("scp", "azp", "appid", "idtyp"):
        assert access_claim not in claims
    without_nonce = redeem(tenant, sign_in(Browser(tenant), "alan", nonce=None)).json()["id_token"]
    assert "nonce" not in jwt.decode(without_nonce, options={"verify_signature": False})


def test_groups_claims_per_user(tenant, browser):
    def id_claims(user: str) -> dict:
        return jwt.decode(redeem(tenant, sign_in(Browser(tenant), user)).json()["id_token"],
                          options={"verify_signature": False})

    assert id_claims("ada")["groups"] == list(DEFAULT_GROUPS) and "roles" not in id_claims("ada")
    alan = id_claims("alan")
    assert "groups" not in alan and "_claim_names" not in alan and "hasgroups" not in alan
    katherine = id_claims("katherine")
    assert "groups" not in katherine and "hasgroups" not in katherine  # hasgroups: implicit flow only
    assert katherine["_claim_names"] == {"groups": "src1"}
    oid = tenant.user("katherine").oid
    assert katherine["_claim_sources"] == {
        "src1": {"endpoint": f"https://graph.windows.net/{DEFAULT_TENANT_ID}/users/{oid}/getMemberObjects"}}


def test_access_token_for_the_gateway_api(tenant, browser):
    signed_in = sign_in(browser, "katherine", scope=f"openid profile {tenant.app_id_uri}/access_as_user")
    answer = redeem(tenant, signed_in).json()
    assert answer["scope"] == f"{tenant.app_id_uri}/access_as_user openid profile"
    access = verify(tenant, answer["access_token"], tenant.client_id)
    assert access["scp"] == "access_as_user" and access["azp"] == tenant.client_id and access["azpacr"] == "1"
    assert access["_claim_names"] == {"groups": "src1"} and "groups" not in access
    assert access["oid"] == tenant.user("katherine").oid and access["exp"] - access["iat"] == 3599


def test_code_is_single_use(tenant, browser):
    signed_in = sign_in(browser)
    assert redeem(tenant, signed_in).status == 200
    again = redeem(tenant, signed_in)
    assert again.status == 400 and again.json()["error"] == "invalid_grant" and error_code(again) == 54005
    unknown = redeem(tenant, SignIn("not-a-code", {}, signed_in.verifier))
    assert unknown.json()["error"] == "invalid_grant"


def test_expired_code(tenant, browser):
    signed_in = sign_in(browser)
    start = time.time()
    tenant.clock = lambda: start + CODE_LIFETIME_SECONDS + 1
    expired = redeem(tenant, signed_in)
    assert expired.status == 400 and expired.json()["error"] == "invalid_grant" and error_code(expired) == 70008
    tenant.clock = lambda: start + CODE_LIFETIME_SECONDS - 5
    assert redeem(tenant, sign_in(Browser(tenant))).status == 200


@pytest.mark.parametrize("overrides, code", [
    ({"code_verifier": "wrong-" + "v" * 43}, 501481),
    ({"code_verifier": None}, 501481),
    ({"redirect_uri": "http://127.0.0.1:9999/.well-known/entragate/callback"}, 500112),
])
def test_code_redemption_must_match_the_authorize_request(tenant, browser, overrides, code):
    signed_in = sign_in(browser)
    response = redeem(tenant, signed_in, **overrides)
    assert response.status == 400 and response.json()["error"] == "invalid_grant" and error_code(response) == code
    assert redeem(tenant, signed_in).status == 400  # the failed attempt spent the code


def test_error_responses_are_shaped_like_entras(tenant):
    response = token_request(tenant, {"grant_type": "client_credentials", "client_id": tenant.client_id,
                                      "client_secret": "nope", "scope": "https://graph.microsoft.com/.default"})
    assert response.status == 401 and response.headers["Content-Type"].startswith("application/json")
    error = response.json()
    assert set(error) == {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}
    assert error["error"] == "invalid_client" and error["error_codes"] == [7000215]
    assert error["error_description"].startswith("AADSTS7000215: ") and "\r\nTrace ID: " in error["error_description"]


@pytest.mark.parametrize("case", [
    "wrong key", "wrong x5t#S256", "unknown legacy x5t", "no thumbprint", "wrong aud", "v1 token endpoint aud", "aud list",
    "iss differs from sub", "sub is another app", "expired", "not yet valid", "no jti", "alg none", "alg HS256",
    "tampered payload", "not a JWT",
])
def test_client_assertion_failures(tenant, case):
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if case == "wrong key" else None
    make = {
        "wrong key": lambda: assertion(tenant, key=other_key),
        "wrong x5t#S256": lambda: assertion(tenant, headers={"x5t#S256": base64.urlsafe_b64encode(b"\1" * 32).decode()}),
        "unknown legacy x5t": lambda: assertion(tenant, headers={"x5t#S256": None, "x5t": "AAAA"}),
        "no thumbprint": lambda: assertion(tenant, headers={"x5t#S256": None}),
        "wrong aud": lambda: assertion(tenant, aud="https://login.microsoftonline.com/common/oauth2/v2.0/token"),
        "v1 token endpoint aud": lambda: assertion(tenant, aud=f"{tenant.authority}/{DEFAULT_TENANT_ID}/oauth2/token"),
        "aud list": lambda: assertion(tenant, aud=[tenant.token_endpoint()]),
        "iss differs from sub": lambda: assertion(tenant, iss="someone-else"),
        "sub is another app": lambda: assertion(tenant, iss=GRAPH_APP_ID, sub=GRAPH_APP_ID),
        "expired": lambda: assertion(tenant, exp=now - 3600, nbf=now - 4000, iat=now - 4000),
        "not yet valid": lambda: assertion(tenant, nbf=now + 3600, exp=now + 4000),
        "no jti": lambda: assertion(tenant, omit=("jti",)),
        "alg none": lambda: jwt.encode({"aud": tenant.token_endpoint(), "iss": tenant.client_id, "sub": tenant.client_id,
                                        "jti": "j", "exp": now + 600}, None, algorithm="none",
                                       headers={"x5t#S256": tenant.client_certificate_thumbprint_s256}),
        "alg HS256": lambda: jwt.encode({"aud": tenant.token_endpoint(), "iss": tenant.client_id, "sub": tenant.client_id,
                                         "jti": "j", "exp": now + 600}, tenant.client_secret, algorithm="HS256",
                                        headers={"x5t#S256": tenant.client_certificate_thumbprint_s256}),
        "tampered payload": lambda: _tamper(assertion(tenant)),
        "not a JWT": lambda: "not.a.jwt",
    }[case]
    expected = {
        "wrong key": 700027, "wrong x5t#S256": 700027, "unknown legacy x5t": 700027, "no thumbprint": 50027,
        "wrong aud": 700023, "v1 token endpoint aud": 700023, "aud list": 700023, "iss differs from sub": 50048,
        "sub is another app": 700021, "expired": 700024, "not yet valid": 700024, "no jti": 50027,
        "alg none": 700027, "alg HS256": 700027, "tampered payload": 700027, "not a JWT": 50027,
    }[case]
    response = token_request(tenant, {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
                                      "client_id": tenant.client_id, "client_assertion_type": JWT_BEARER,
                                      "client_assertion": make()})
    assert response.status == 401, response.body
    assert response.json()["error"] == "invalid_client" and error_code(response) == expected


def _tamper(token: str) -> str:
    """The same assertion with one more claim: its signature no longer covers the payload."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(base64.urlsafe_b64decode(payload + "==")), "extra": 1}
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def test_legacy_x5t_and_the_audience_forms_are_accepted(tenant):
    legacy = assertion(tenant, headers={"x5t#S256": None, "x5t": tenant.client_certificate_thumbprint})
    assert set(jwt.get_unverified_header(legacy)) == {"alg", "typ", "x5t"}
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_id": tenant.client_id, "client_assertion_type": JWT_BEARER}
    assert token_request(tenant, {**form, "client_assertion": legacy}).status == 200
    # The token endpoint URL with the tenant id is the audience, whatever name the request used.
    domain = token_request(tenant, {**form, "client_assertion": assertion(tenant, "contoso.onmicrosoft.com")},
                           segment="contoso.onmicrosoft.com")
    assert domain.status == 200
    by_id = token_request(tenant, {**form, "client_assertion": assertion(tenant)}, segment="contoso.onmicrosoft.com")
    assert by_id.status == 200


def test_replayed_assertion_is_refused(tenant):
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            **with_certificate(tenant)}
    assert token_request(tenant, form).status == 200
    replay = token_request(tenant, form)
    assert replay.status == 401 and replay.json()["error"] == "invalid_client" and error_code(replay) == 50013
    # A refused assertion does not burn its jti.
    jti = str(uuid.uuid4())
    late = {**form, "client_assertion": assertion(tenant, jti=jti, aud="https://elsewhere/")}
    assert token_request(tenant, late).status == 401
    assert token_request(tenant, {**form, "client_assertion": assertion(tenant, jti=jti)}).status == 200


@pytest.mark.parametrize("form, status, error, code", [
    ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
    ({}, 401, "invalid_client", 7000218),
    ({"client_id": "00000000-0000-0000-0000-000000000000", "client_secret": "x"}, 400, "unauthorized_client", 700016),
    ({"client_id": None}, 400, "invalid_request", 900144),
    ({"client_assertion_type": "urn:other", "client_assertion": "a.b.c"}, 400, "invalid_request", 90100),
    ({"client_assertion_type": JWT_BEARER}, 400, "invalid_request", 900144),
])
def test_client_authentication_failures(tenant, form, status, error, code):
    base = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_id": tenant.client_id}
    response = token_request(tenant, {k: v for k, v in {**base, **form}.items() if v is not None})
    assert (response.status, response.json()["error"], error_code(response)) == (status, error, code)


def test_only_one_client_authentication_method(tenant):
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_secret": tenant.client_secret, **with_certificate(tenant)}
    assert token_request(tenant, form).json()["error"] == "invalid_request"
    basic = base64.b64encode(f"{tenant.client_id}:{tenant.client_secret}".encode()).decode()
    both = token_request(tenant, {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
                                  "client_secret": tenant.client_secret}, headers={"Authorization": f"Basic {basic}"})
    assert both.json()["error"] == "invalid_request"


def test_token_endpoint_request_errors(tenant, browser):
    as_json = token_request(tenant, {"grant_type": "client_credentials"}, content_type="application/json")
    assert as_json.status == 400 and as_json.json()["error"] == "invalid_request"
    get = browser.get(tenant.token_endpoint())
    assert get.status == 400 and error_code(get) == 900561
    unsupported = token_request(tenant, {"grant_type": "password", "client_id": tenant.client_id})
    assert unsupported.json()["error"] == "unsupported_grant_type"
    assert token_request(tenant, {"client_id": tenant.client_id}).json()["error"] == "invalid_request"
    repeated = token_request(tenant, f"grant_type=client_credentials&client_id={tenant.client_id}"
                                     f"&client_secret={tenant.client_secret}&client_secret=other")
    assert repeated.status == 400 and error_code(repeated) == 9002313


# --- token: client credentials --------------------------------------------------


def test_client_credentials_for_two_resources(tenant):
    tenant.grant_app_roles(GRAPH_RESOURCE, ["GroupMember.Read.All", "User.Read.All"])
    orders = tenant.grant_app_roles("api://orders.contoso.test", ["Orders.Operate"])
    sp = tenant.client_service_principal_oid()

    graph = token_request(tenant, {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
                                   **with_certificate(tenant)})
    assert graph.status == 200, graph.body
    answer = graph.json()
    assert set(answer) == {"token_type", "expires_in", "ext_expires_in", "access_token"} and answer["expires_in"] == 3599
    claims = verify(tenant, answer["access_token"], GRAPH_RESOURCE, version="1.0")
    assert claims["roles"] == ["GroupMember.Read.All", "User.Read.All"] and claims["idtyp"] == "app"
    assert (claims["oid"], claims["sub"], claims["appid"], claims["appidacr"]) == (sp, sp, tenant.client_id, "2")
    assert claims["tid"] == DEFAULT_TENANT_ID and "scp" not in claims and "name" not in claims

    api = token_request(tenant, {"grant_type": "client_credentials", "scope": "api://orders.contoso.test/.default",
                                 "client_id": tenant.client_id, "client_secret": tenant.client_secret})
    claims = verify(tenant, api.json()["access_token"], orders.app_id)  # v2: aud is the app id
    assert claims["roles"] == ["Orders.Operate"] and claims["azp"] == tenant.client_id and claims["azpacr"] == "1"
    assert claims["oid"] == sp and claims["exp"] - claims["iat"] == 3599

    own = token_request(tenant, {"grant_type": "client_credentials", "scope": f"{tenant.app_id_uri}/.default",
                                 "client_id": tenant.client_id, "client_secret": tenant.client_secret})
    assert "roles" not in jwt.decode(own.json()["access_token"], options={"verify_signature": False})

    tenant.add_resource("api://google-wif", version="1.0")  # a v1 API: aud is the URI asked for
    wif = token_request(tenant, {"grant_type": "client_credentials", "scope": "api://google-wif/.default",
                                 "client_id": tenant.client_id, "client_secret": tenant.client_secret})
    claims = verify(tenant, wif.json()["access_token"], "api://google-wif", version="1.0")
    assert claims["iss"] == f"https://sts.windows.net/{DEFAULT_TENANT_ID}/"


@pytest.mark.parametrize("scope, error, code", [
    ("https://graph.microsoft.com/User.Read", "invalid_scope", 70011),
    ("https://graph.microsoft.com/.default api://x/.default", "invalid_scope", 70011),
    ("api://nobody/.default", "invalid_resource", 500011),
    (None, "invalid_request", 900144),
])
def test_client_credentials_scope_errors(tenant, scope, error, code):
    form = {"grant_type": "client_credentials", "scope": scope, "client_id": tenant.client_id,
            "client_secret": tenant.client_secret}
    response = token_request(tenant, {k: v for k, v in form.items() if v is not None})
    assert (response.status, response.json()["error"], error_code(response)) == (400, error, code)


def test_client_credentials_in_other_tenants(tenant):
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_id": tenant.client_id, "client_secret": tenant.client_secret}
    missing = token_request(tenant, form, segment=OTHER_TENANT)
    assert (missing.status, missing.json()["error"], error_code(missing)) == (401, "invalid_client", 7000229)
    tenant.consented_tenants.add(OTHER_TENANT)
    consented = token_request(tenant, form, segment=OTHER_TENANT)
    claims = verify(tenant, consented.json()["access_token"], GRAPH_RESOURCE, OTHER_TENANT, version="1.0")
    assert claims["tid"] == OTHER_TENANT and claims["oid"] == tenant.client_service_principal_oid(OTHER_TENANT)
    assert claims["oid"] != tenant.client_service_principal_oid()
    assert error_code(token_request(tenant, form, segment="common")) == 9001023
    assert error_code(token_request(tenant, form, segment="organizations")) == 50059


# --- multi-tenant sign-in -------------------------------------------------------


@pytest.mark.parametrize("segment", ["organizations", "common"])
def test_multi_tenant_sign_in_issues_tokens_for_the_users_tenant(tenant, browser, segment):
    bob = tenant.add_user("bob", name="Bob Builder", tid=OTHER_TENANT)
    page = browser.get(authorize_url(tenant, segment))
    assert {"ada", "bob"} <= set(accounts(page.body))
    signed_in = sign_in(browser, "bob", segment)
    claims = verify(tenant, redeem(tenant, signed_in, segment).json()["id_token"], tenant.client_id, OTHER_TENANT)
    assert claims["tid"] == OTHER_TENANT and claims["oid"] == bob.oid
    assert claims["iss"] == f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    # Redeemed at the user's own tenant: fine; at another tenant: AADSTS700005.
    assert redeem(tenant, sign_in(Browser(tenant), "bob", segment), OTHER_TENANT).status == 200
    wrong = redeem(tenant, sign_in(Browser(tenant), "bob", segment), DEFAULT_TENANT_ID)
    assert wrong.json()["error"] == "invalid_grant" and error_code(wrong) == 700005
    # The tenant-specific endpoint lists only that tenant's members; SSO does not cross over.
    own = browser.get(authorize_url(tenant))
    assert own.status == 200 and "bob" not in accounts(own.body)


# --- faults and counters --------------------------------------------------------


def test_token_endpoint_fault_modes(tenant):
    form = {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_id": tenant.client_id, "client_secret": tenant.client_secret}
    tenant.set_mode("error500", target="token")
    failed = token_request(tenant, form)
    assert failed.status == 500 and failed.json()["error"] == "temporarily_unavailable"
    assert Browser(tenant).get(tenant.discovery_url()).status == 200  # the documents are unaffected

    tenant.set_mode("html", target="token")
    page = token_request(tenant, form)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")

    tenant.set_mode("slow", 0.2, target="token")
    started = time.monotonic()
    assert token_request(tenant, form).status == 200 and time.monotonic() - started >= 0.2

    tenant.set_mode("reset", target="token")
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        token_request(tenant, form)

    tenant.set_mode("error500", target="all")  # "all" still means the discovery and keys documents
    tenant.set_mode("ok", target="token")
    assert token_request(tenant, form).status == 200
    assert tenant.hits("token") == 5 and tenant.hits(urllib.parse.urlsplit(tenant.token_endpoint()).path) == 5
    with pytest.raises(ValueError):
        tenant.set_mode("truncated", target="token")


def test_hit_counters_for_authorize_and_logout(tenant, browser):
    sign_in(browser)
    browser.get(tenant.end_session_endpoint())
    assert (tenant.hits("authorize"), tenant.hits("logout"), tenant.hits("token")) == (2, 1, 0)
    stats = json.loads(browser.get(f"{tenant.authority}/_mock/stats").body)
    assert stats["hits"]["authorize"] == 2 and stats["hits"]["logout"] == 1
    tenant.reset_hits()
    assert tenant.hits("authorize") == 0


# --- logout ---------------------------------------------------------------------


def test_logout_ends_sso_and_runs_front_channel_logout(tenant, browser):
    tenant.frontchannel_logout_urls = ["https://gw.example/.well-known/entragate/frontchannel-logout",
                                       "http://127.0.0.1:8787/.well-known/entragate/frontchannel-logout?x=1"]
    sid = sign_in(browser, "grace").query["session_state"]
    expected = tenant.frontchannel_logout(sid)
    issuer = urllib.parse.quote(f"https://login.microsoftonline.com/{DEFAULT_TENANT_ID}/v2.0", safe="")
    assert expected == [
        f"https://gw.example/.well-known/entragate/frontchannel-logout?sid={sid}&iss={issuer}",
        f"http://127.0.0.1:8787/.well-known/entragate/frontchannel-logout?x=1&sid={sid}&iss={issuer}",
    ]

    back = "http://127.0.0.1:8787/.well-known/entragate/signed-out"  # where the gateway's logout returns to
    page = browser.get(f"{tenant.end_session_endpoint()}?"
                       + urllib.parse.urlencode({"post_logout_redirect_uri": back, "state": "bye"}))
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    text = page.body.decode()
    frames = [html.unescape(src) for src in re.findall(r'<iframe hidden [^>]*src="([^"]+)"', text)]
    assert frames == expected
    assert f'href="{back}?state=bye"' in text and 'http-equiv="refresh"' in text
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["Content-Security-Policy"]).group(1)
    assert f'<script nonce="{nonce}">' in text and "location.replace" in text
    assert browser.cookies == {}  # the SSO cookie is cleared
    assert not tenant.sso_sessions[sid].active

    # The session is over, even for a browser that kept its cookie.
    assert browser.get(authorize_url(tenant, prompt="none")).location[1]["error"] == "login_required"
    assert tenant.frontchannel_logout("no-such-sid") == []


@pytest.mark.parametrize("target", [
    "https://evil.example/", "http://127.0.0.1:8787/a/b", "http://127.0.0.1:80@evil.example/", "javascript:alert(1)",
    "http://127.0.0.1:8787/.well-known/entragate/signed-out/../../x",
])
def test_logout_redirects_only_to_registered_uris(tenant, browser, target):
    sign_in(browser)
    page = browser.get(f"{tenant.end_session_endpoint()}?" + urllib.parse.urlencode({"post_logout_redirect_uri": target}))
    assert page.status == 200 and "Location" not in page.headers
    assert b"You signed out" in page.body
    assert b"<script" not in page.body and b"refresh" not in page.body and b"evil" not in page.body
    assert b"javascript:" not in page.body
    tenant.post_logout_redirect_uris = ["https://gw.example/bye"]
    assert b"refresh" not in browser.get(f"{tenant.end_session_endpoint()}?post_logout_redirect_uri=http://127.0.0.1:1/").body
    assert b"https://gw.example/bye" in browser.get(
        f"{tenant.end_session_endpoint()}?post_logout_redirect_uri=https://gw.example/bye").body


def test_logout_without_a_cookie_by_hints(tenant):
    ada_sid = sign_in(Browser(tenant), "ada").query["session_state"]
    grace = sign_in(Browser(tenant), "grace")
    id_token = redeem(tenant, grace).json()["id_token"]
    cookieless = Browser(tenant)
    cookieless.get(f"{tenant.end_session_endpoint()}?id_token_hint={id_token}")
    sessions = tenant.sso_sessions
    assert not sessions[grace.query["session_state"]].active and sessions[ada_sid].active
    cookieless.get(f"{tenant.end_session_endpoint()}?logout_hint=ada@contoso.onmicrosoft.com")
    assert not tenant.sso_sessions[ada_sid].active
    # A forged hint names nothing.
    third = sign_in(Browser(tenant), "alan").query["session_state"]
    forged = jwt.encode({"aud": tenant.client_id, "sid": third}, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                        algorithm="RS256", headers={"kid": tenant.signing_kid})
    cookieless.get(f"{tenant.end_session_endpoint()}?id_token_hint={forged}")
    assert tenant.sso_sessions[third].active


# --- credentials and CLI --------------------------------------------------------


def test_client_credentials_for_the_gateway(tenant):
    pem = tenant.client_certificate_pem
    assert pem.startswith("-----BEGIN PRIVATE KEY-----") and "-----BEGIN CERTIFICATE-----" in pem
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert key.key_size == 2048 and cert.public_key().public_numbers() == key.public_key().public_numbers()
    der = cert.public_bytes(serialization.Encoding.DER)
    assert tenant.client_certificate_thumbprint_s256 == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    with MockTenant() as other:
        assert other.client_certificate_pem == pem  # one per process, like the signing keys
        assert other.client_secret != tenant.client_secret
    assert len(tenant.client_secret) == 40


def test_cli_writes_client_credentials_to_a_file(tmp_path):
    credentials_file = tmp_path / "credentials.json"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # as the README runs it
    proc = subprocess.Popen(
        [sys.executable, "tools/entragate_mocks/mock_entra.py", "--credentials-file", str(credentials_file),
         "--frontchannel-logout-url", "http://127.0.0.1:8787/.well-known/entragate/frontchannel-logout"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert select.select([proc.stdout], [], [], 15)[0], "no ready line"
        ready = json.loads(proc.stdout.readline())
        assert ready["token_endpoint"] == f"{ready['authority']}/{DEFAULT_TENANT_ID}/oauth2/v2.0/token"
        assert ready["authorization_endpoint"].endswith("/oauth2/v2.0/authorize")
        assert ready["end_session_endpoint"].endswith("/oauth2/v2.0/logout")
        assert ready["users"] == ["ada", "grace", "alan", "katherine"]
        credentials = json.loads(credentials_file.read_text())
        assert credentials_file.stat().st_mode & 0o777 == 0o600
        assert credentials["client_secret"] not in json.dumps(ready)
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
                                       "client_id": credentials["client_id"], "client_secret": credentials["client_secret"]})
        parts = urllib.parse.urlsplit(ready["token_endpoint"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
        conn.request("POST", parts.path, body=form, headers=FORM)
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
