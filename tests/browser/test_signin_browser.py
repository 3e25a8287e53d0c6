"""Browser sign-in in a real browser: headless Chromium against the Worker in workerd, the mock
Entra tenant's sign-in page and the echo origin (issue #14)."""

import json
import os
from pathlib import Path

import pytest
from fixtures.signin_stack import signin_stack
from entragate_mocks.stack import environment_ok

pytestmark = pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok()))

PREFIX = "x-entragate-"
SESSION_COOKIE = "__Host-entragate-session"
# ENTRAGATE_SCREENSHOTS=DIR saves the pages people see (README's screenshots come from here).
SCREENSHOTS = os.environ.get("ENTRAGATE_SCREENSHOTS")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with signin_stack(tmp_path_factory.mktemp("browser-signin"), BRAND_NAME="Contoso Access",
                      SUPPORT_CONTACT="it-help@contoso.example") as running:
        yield running


@pytest.fixture
def context(chromium):
    context = chromium.new_context()
    yield context
    context.close()


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def sign_in(page, stack, path: str, name: str) -> None:
    page.goto(stack.url + path)
    assert page.title() == "Sign in to your account"  # the mock tenant's page, like Entra's
    page.get_by_role("button", name=name).click()
    page.wait_for_url(stack.url + path)


def echoed(page) -> dict:
    document = json.loads(page.inner_text("body"))
    seen: dict[str, list[str]] = {}
    for header, value in document["headers"]:
        seen.setdefault(header.lower(), []).append(value)
    return seen


def test_a_protected_page_signs_in_and_comes_back_with_the_identity(stack, context):
    page = context.new_page()
    sign_in(page, stack, "/app/page?x=1", "Ada Lovelace")
    seen = echoed(page)
    assert seen[PREFIX + "user-oid"] == [stack.tenant.user_oid] and seen[PREFIX + "auth-method"] == ["session"]
    (cookie,) = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    # A reload uses the cookie: no second trip to Entra.
    authorize = stack.tenant.hits("authorize")
    page.reload()
    assert echoed(page)[PREFIX + "user-oid"] == [stack.tenant.user_oid]
    assert stack.tenant.hits("authorize") == authorize


def test_a_fetch_from_the_page_gets_401_not_a_redirect(stack, context):
    page = context.new_page()
    page.goto(stack.url + "/public/start")
    answers = page.evaluate("""async () => {
        const api = await fetch('/api/items');            // bearer-only route: no session counts
        const app = await fetch('/app/data');             // login route, no session: 401, never a redirect
        return [api.status, api.redirected, app.status, app.redirected,
                app.headers.get('www-authenticate')];
    }""")
    assert answers[:4] == [401, False, 401, False] and answers[4].startswith("Bearer")


def test_a_person_without_the_group_sees_who_they_are_and_why(stack, context):
    page = context.new_page()
    sign_in(page, stack, "/app/x", "Alan Turing")
    response = page.goto(stack.url + "/admin/panel")
    assert response.status == 403
    text = page.inner_text("main")
    assert "Signed in as Alan Turing" in text and "does not have access" in text
    assert "Contoso Access" in text and "it-help@contoso.example" in text
    assert response.headers["x-request-id"] in text
    assert page.get_by_role("link", name="Sign in as someone else").is_visible()
    shot(page, "refused-light")
    page.emulate_media(color_scheme="dark")
    shot(page, "refused-dark")


def test_logout_ends_the_session_everywhere(stack, chromium, context):
    page = context.new_page()
    sign_in(page, stack, "/app/x", "Ada Lovelace")
    copied = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    page.goto(stack.url + "/.well-known/entragate/logout")
    assert page.get_by_role("heading").inner_text() == "Sign out?"
    shot(page, "logout-confirm")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(stack.url + "/.well-known/entragate/signed-out")
    assert "You have signed out" in page.inner_text("main")
    shot(page, "signed-out")
    assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    # The old cookie, copied before logout, no longer opens anything.
    thief = chromium.new_context()
    try:
        thief.add_cookies(copied)
        other = thief.new_page()
        other.goto(stack.url + "/app/x")
        assert other.title() == "Sign in to your account"
    finally:
        thief.close()


def test_a_failed_sign_in_is_a_page_a_person_can_act_on(stack, context):
    page = context.new_page()
    response = page.goto(stack.url + "/.well-known/entragate/callback?code=x&state=" + "A" * 43)
    assert response.status == 400
    text = page.inner_text("main")
    assert "Signing in did not work" in text and "Go to the start page" in text
    shot(page, "signin-failed")
