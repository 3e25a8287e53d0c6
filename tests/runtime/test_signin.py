"""Browser sign-in in workerd, against the mock tenant's real authorize, token and logout
endpoints: the whole flow over HTTP (the real-browser tests in tests/browser/ show it in
Chromium). The token endpoint checks the code, the PKCE verifier and the client assertion the
Worker signed with WebCrypto, as Entra does."""

from urllib.parse import parse_qs, urlsplit

import pytest
from fixtures.signin_stack import Browserless, echo, signin_stack
from entragate_mocks.stack import environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))
PREFIX = "x-entragate-"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with signin_stack(tmp_path_factory.mktemp("signin")) as running:
        yield running


def test_a_person_signs_in_and_the_origin_learns_who(stack):
    browser = Browserless()
    url, status, _, data = browser.sign_in(stack, "/app/page?x=1")
    assert status == 200 and url == stack.url + "/app/page?x=1"
    seen = echo(data)["by_name"]
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid]
    assert seen[PREFIX + "auth-method"] == ["session"] and seen[PREFIX + "rule"] == ["app"]
    assert "cookie" not in seen, "the session cookie never reaches the origin"
    token_endpoint = f"/{stack.tenant.tenant_id}/oauth2/v2.0/token"
    assert stack.tenant.hits(token_endpoint) == 1
    # The cookie alone from now on: no more trips to Entra.
    seen = stack.tenant.hits("authorize"), stack.tenant.hits(token_endpoint)
    _, status, _, data = browser.follow(stack.url + "/app/other")
    assert status == 200 and echo(data)["path"] == "/app/other"
    assert (stack.tenant.hits("authorize"), stack.tenant.hits(token_endpoint)) == seen


def test_other_cookies_pass_and_ours_is_a_secure_host_cookie(stack):
    browser = Browserless()
    browser.sign_in(stack, "/app/x")
    netloc = urlsplit(stack.url).netloc
    browser.cookies[netloc]["theme"] = "dark"
    _, status, headers, data = browser.follow(stack.url + "/app/y")
    assert echo(data)["by_name"]["cookie"] == ["theme=dark"]


def test_a_fetch_and_an_api_client_get_401_never_a_redirect(stack):
    browser = Browserless()
    status, headers, _ = browser.request("GET", stack.url + "/app/data", headers={"sec-fetch-mode": "cors"})
    assert status == 401 and "location" not in headers
    status, headers, _ = browser.request("GET", stack.url + "/app/data", headers={"sec-fetch-mode": None, "accept": "application/json"})
    assert status == 401


def test_a_person_without_the_group_gets_the_refusal_page(stack):
    browser = Browserless()
    browser.sign_in(stack, "/app/x", user="alan")
    _, status, headers, data = browser.follow(stack.url + "/admin/panel")
    page = data.decode()
    assert status == 403 and "text/html" in headers["content-type"]
    assert "Signed in as" in page and "Sign in as someone else" in page and headers["x-request-id"] in page


def test_a_member_of_the_group_gets_through(stack):
    browser = Browserless()
    browser.sign_in(stack, "/admin/panel", user="grace")
    _, status, _, data = browser.follow(stack.url + "/admin/panel")
    assert status == 200 and echo(data)["by_name"][PREFIX + "rule"] == ["admin"]


def test_logout_revokes_the_session_and_goes_through_entra(stack):
    browser = Browserless()
    browser.sign_in(stack, "/app/x")
    netloc = urlsplit(stack.url).netloc
    copied = dict(browser.cookies[netloc])
    _, status, _, data = browser.follow(stack.url + "/.well-known/entragate/logout")
    page = data.decode()
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    status, headers, _ = browser.request("POST", stack.url + "/.well-known/entragate/logout",
                                         body=f"csrf={csrf}".encode(),
                                         headers={"content-type": "application/x-www-form-urlencoded",
                                                  "sec-fetch-site": "same-origin", "origin": stack.url})
    assert status == 302 and "/oauth2/v2.0/logout" in headers["location"]
    # Entra's end-session page signs the browser out there, then sends it back by script.
    _, status, _, data = browser.follow(headers["location"])
    signed_out = stack.url + "/.well-known/entragate/signed-out"
    assert status == 200 and signed_out in data.decode()
    _, status, _, data = browser.follow(signed_out)
    assert status == 200 and b"You have signed out" in data
    thief = Browserless()
    thief.cookies[netloc] = copied
    status, _, _ = thief.request("GET", stack.url + "/app/x", headers={"sec-fetch-mode": "cors"})
    assert status == 401


def test_a_tampered_callback_never_creates_a_session(stack):
    browser = Browserless()
    url, status, _, _ = browser.follow(stack.url + "/app/x")
    state = parse_qs(urlsplit(url).query)["state"][0]
    status, _, data = browser.request("GET", stack.url + f"/.well-known/entragate/callback?code=forged&state={state}")
    assert status == 400 and b"Signing in did not work" in data
    assert "__Host-entragate-session" not in browser.cookies.get(urlsplit(stack.url).netloc, {})
