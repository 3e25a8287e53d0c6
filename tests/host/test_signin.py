"""Browser sign-in through Gateway.handle on CPython: the flow, sessions, logout, and the attacks
on each step. Signing keys come from the mock Entra tenant over HTTP; the token endpoint is a
stand-in that answers the code exchange with an ID token the mock tenant signs (the real
endpoint, with PKCE and client authentication, is exercised in the runtime and browser tests).
"""

import asyncio
import base64
import hashlib
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from entragate_tools.compiler import compile_policies
from entragate_tools.host_crypto import HostSignInPlatform, HostVerifier, new_client_certificate, new_session_key
from entragate_tools.host_io import MemoryStore, UrllibHttp
from entragate_mocks.mock_entra import MockTenant

from entragate.config import Config
from entragate.denials import Answer
from entragate.gateway import Forward, IncomingRequest, assemble, decision_audit_line
from entragate.policy import Policy
from entragate.signin import FLOW_COOKIE_PREFIX, SESSION_COOKIE, safe_return_path

ADMINS = "11111111-1111-4111-8111-111111111111"
POLICY = f"""
[groups]
admins = "{ADMINS}"

[[routes]]
name = "app"
paths = ["/app/**"]
login = true
allow = {{ authenticated = true }}

[[routes]]
name = "admin"
paths = ["/admin/**"]
login = true
allow = {{ groups = ["admins"] }}

[[routes]]
name = "scoped"
paths = ["/scoped/**"]
login = true
allow = {{ scopes = ["access_as_user"] }}

[[routes]]
name = "api"
paths = ["/api/**"]
allow = {{ authenticated = true }}
"""
ORIGIN = "https://gw.example"
CERTIFICATE_PEM, _ = new_client_certificate()


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


class TokenEndpointStandIn:
    """What the gateway sends to the token endpoint, and an ID token for the flow's nonce."""

    def __init__(self, tenant, http):
        self.tenant, self.http = tenant, http
        self.calls = []
        self.claims = {}  # extra/overriding ID token claims for the next exchange
        self.answer = None  # (status, document) to answer instead

    async def get_json(self, url, timeout):
        return await self.http.get_json(url, timeout)

    async def post_form(self, url, fields, timeout):
        self.calls.append((url, dict(fields)))
        if self.answer is not None:
            return self.answer
        return 200, {"token_type": "Bearer", "id_token": self.tenant.mint_id_token(claims={
            "nonce": self.pending_nonce, "aud": self.tenant.client_id, "sid": "entra-sid-1", **self.claims})}


@pytest.fixture(scope="module")
def tenant():
    with MockTenant() as running:
        yield running


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    directory = tmp_path_factory.mktemp("signin-policy")
    (directory / "routes.toml").write_text(POLICY)
    compiled = compile_policies(directory)
    return json.loads(compiled.json_text), compiled


class Harness:
    def __init__(self, tenant, policy_json, *, keys=None, store=None, clock=None, env=None, client_secret=False,
                 certificate=CERTIFICATE_PEM, secret="s3cret"):
        self.tenant = tenant
        self.clock = clock or Clock()
        self.store = store if store is not None else MemoryStore()
        self.http = TokenEndpointStandIn(tenant, UrllibHttp())
        self.keys = keys or new_session_key()
        variables = {
            "ORIGIN_URL": "https://origin.example", "ENTRA_TENANT_ID": tenant.tenant_id,
            "ENTRA_AUTHORITY": tenant.authority, "ENTRA_AUDIENCES": tenant.client_id,
            "ENTRA_CLIENT_ID": tenant.client_id, "SESSION_KEYS": self.keys,
            **({"ENTRA_CLIENT_SECRET": secret} if client_secret else {"ENTRA_CLIENT_CERTIFICATE": certificate}),
            **(env or {}),
        }
        self.config = Config.from_env(variables.get)
        self.gateway = assemble(self.config, Policy.from_json(policy_json), http=self.http, store=self.store,
                                verifier=HostVerifier(), clock=self.clock, log=lambda message: None,
                                policy_groups=frozenset({ADMINS}), platform=HostSignInPlatform())
        self.jar: dict[str, str] = {}

    def handle(self, path, *, method="GET", headers=None, body=b"", cookies=None, navigate=True):
        headers = dict(headers or {})
        if navigate:
            headers.setdefault("sec-fetch-mode", "navigate")
            headers.setdefault("accept", "text/html")
        jar = self.jar if cookies is None else cookies
        cookie = "; ".join(f"{name}={value}" for name, value in jar.items()) or None

        async def read_body(limit):
            return body if len(body) <= limit else None

        request = IncomingRequest(
            method=method, url=ORIGIN + path, request_id="req-1", header_names=tuple(headers) + (("cookie",) if cookie else ()),
            authorization=headers.get("authorization"), accept=headers.get("accept"), cookie=cookie,
            sec_fetch_mode=headers.get("sec-fetch-mode"), sec_fetch_site=headers.get("sec-fetch-site"),
            origin=headers.get("origin"), read_body=read_body, content_type=headers.get("content-type"),
        )
        result = asyncio.run(self.gateway.handle(request, lambda coroutine: coroutine.close()))
        if isinstance(result, Answer) and cookies is None:
            for name, value in result.headers:
                if name == "set-cookie":
                    cookie_name, _, rest = value.partition("=")
                    cookie_value = rest.partition(";")[0]
                    if "Max-Age=0" in value:
                        self.jar.pop(cookie_name, None)
                    else:
                        self.jar[cookie_name] = cookie_value
        return result

    def sign_in(self, path="/app/page?x=1", **claims):
        started = self.handle(path)
        assert started.status == 302, started
        query = parse_qs(urlsplit(header(started, "location")).query)
        self.http.pending_nonce = query["nonce"][0]
        self.http.claims = claims
        done = self.handle(f"/.well-known/entragate/callback?code=the-code&state={query['state'][0]}")
        return started, query, done


def header(result, name):
    values = [value for key, value in result.headers if key == name]
    assert len(values) == 1, (name, result.headers)
    return values[0]


def set_cookies(result):
    return [value for key, value in result.headers if key == "set-cookie"]


@pytest.fixture
def harness(tenant, compiled):
    return Harness(tenant, compiled[0])


# --- who gets a redirect -----------------------------------------------------------------------

def test_an_anonymous_navigation_is_sent_to_entra_with_pkce_state_and_nonce(harness, tenant):
    result = harness.handle("/app/page?x=1")
    assert isinstance(result, Answer) and result.status == 302 and result.code == "signin_redirect"
    location = urlsplit(header(result, "location"))
    assert f"{location.scheme}://{location.netloc}{location.path}" == \
        f"{tenant.authority}/{tenant.tenant_id}/oauth2/v2.0/authorize"
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert query["client_id"] == tenant.client_id and query["response_type"] == "code"
    assert query["redirect_uri"] == ORIGIN + "/.well-known/entragate/callback"
    assert query["response_mode"] == "query" and set(query["scope"].split()) == {"openid", "profile"}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) == 43 and len(query["nonce"]) == 43 and query["state"] != query["nonce"]
    (cookie,) = set_cookies(result)
    assert cookie.startswith(FLOW_COOKIE_PREFIX + query["state"][:16] + "=v1.")
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=600"):
        assert attribute in cookie.split("; ")
    assert "Domain" not in cookie and header(result, "cache-control") == "no-store"


@pytest.mark.parametrize("headers", [
    {"sec-fetch-mode": "cors", "accept": "text/html"},  # fetch() from a page
    {"sec-fetch-mode": "no-cors"},
    {"accept": "application/json"},  # an API client
    {"accept": "*/*"},
    {"content-type": "application/grpc", "accept": "application/grpc"},
])
def test_anything_but_a_navigation_gets_a_401_never_a_redirect(harness, headers):
    result = harness.handle("/app/data", headers=headers, navigate=False)
    assert (result.status, result.code) in ((401, "missing_token"), (200, "missing_token"))  # gRPC: 200 + grpc-status
    assert not any(name == "location" for name, _ in result.headers)


def test_a_post_is_never_redirected_even_from_a_browser(harness):
    result = harness.handle("/app/form", method="POST", headers={"sec-fetch-mode": "navigate"})
    assert result.status == 401


def test_a_bearer_only_route_keeps_its_401_for_a_browser(harness):
    result = harness.handle("/api/x")
    assert (result.status, result.code) == (401, "missing_token")
    assert not any(name == "location" for name, _ in result.headers)


def test_the_audit_line_tells_sign_in_events_from_refusals(harness):
    """An operator counting refusals must not count people being sent to sign in, nor their
    return; a script's 401 on the same route is a refusal."""
    def decision(result):
        request = IncomingRequest(method="GET", url=ORIGIN + "/app/page", request_id="r", header_names=())
        return json.loads(decision_audit_line(request, result, result.status, 1.0, time.time()))["decision"]

    redirect = harness.handle("/app/page")
    assert (redirect.code, decision(redirect)) == ("signin_redirect", "signin")
    _, _, done = harness.sign_in("/app/page")
    assert (done.code, decision(done)) == ("signin_complete", "signin")
    refused = harness.handle("/app/data", headers={"accept": "application/json"}, navigate=False, cookies={})
    assert (refused.code, decision(refused)) == ("missing_token", "deny")


# --- the callback ------------------------------------------------------------------------------

def test_sign_in_exchanges_the_code_with_the_verifier_and_returns_to_the_page(harness, tenant):
    started, query, done = harness.sign_in("/app/page?x=1")
    assert (done.status, done.code) == (302, "signin_complete") and header(done, "location") == "/app/page?x=1"
    ((url, fields),) = harness.http.calls
    assert url == f"{tenant.authority}/{tenant.tenant_id}/oauth2/v2.0/token"
    assert fields["grant_type"] == "authorization_code" and fields["code"] == "the-code"
    assert fields["redirect_uri"] == ORIGIN + "/.well-known/entragate/callback"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(fields["code_verifier"].encode()).digest()).rstrip(b"=")
    assert challenge.decode() == query["code_challenge"][0]
    assert fields["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header_part, claims_part, _ = fields["client_assertion"].split(".")
    assertion_header = json.loads(base64.urlsafe_b64decode(header_part + "=="))
    assertion = json.loads(base64.urlsafe_b64decode(claims_part + "=="))
    assert assertion_header["alg"] == "RS256" and "x5t#S256" in assertion_header
    assert assertion["aud"] == url and assertion["iss"] == assertion["sub"] == tenant.client_id
    cookies = set_cookies(done)
    assert any(value.startswith(SESSION_COOKIE + "=v1.") for value in cookies)
    assert any(value.startswith(FLOW_COOKIE_PREFIX) and "Max-Age=0" in value for value in cookies)
    assert list(harness.jar) == [SESSION_COOKIE]
    assert done.identity.oid == tenant.user_oid


def test_the_session_is_used_and_its_cookie_never_reaches_the_origin(harness, tenant):
    harness.sign_in()
    harness.jar["theme"] = "dark"
    harness.jar["other"] = "x=y"
    result = harness.handle("/app/page")
    assert isinstance(result, Forward) and result.rule == "app"
    added = dict(result.add)
    assert added["x-entragate-user-oid"] == tenant.user_oid and added["x-entragate-auth-method"] == "session"
    assert "cookie" in result.strip and added["cookie"] == "theme=dark; other=x=y"
    assert SESSION_COOKIE not in added["cookie"]


def test_a_bearer_only_route_ignores_the_session_but_still_strips_its_cookie(harness):
    harness.sign_in()
    result = harness.handle("/api/x")
    assert (result.status, result.code) == (401, "missing_token")


def test_a_session_never_meets_a_scope_condition(harness):
    harness.sign_in()
    result = harness.handle("/scoped/x")
    assert result.status == 403 and result.code in ("condition_not_met", "insufficient_scope")
    assert "Signed in as Ada Lovelace" in result.body


def test_groups_decide_and_the_refusal_page_says_who_is_signed_in(harness):
    harness.sign_in(groups=["5f4e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c"])
    refused = harness.handle("/admin/panel")
    assert refused.status == 403 and "Signed in as Ada Lovelace (ada@contoso.onmicrosoft.com)" in refused.body
    assert "Sign in as someone else" in refused.body and "req-1" in refused.body
    other = Harness(harness.tenant, COMPILED[0])
    other.sign_in(groups=[ADMINS])
    assert isinstance(other.handle("/admin/panel"), Forward)


COMPILED = [None]


@pytest.fixture(autouse=True)
def _compiled_for_helpers(compiled):
    COMPILED[0] = compiled[0]


@pytest.mark.parametrize("mutation,detail", [
    ({"nonce": "another-nonce"}, "nonce does not match"),
    ({"aud": "00000000-0000-4000-8000-000000000000"}, "not for this client"),
    ({"tid": "99999999-9999-4999-8999-999999999999"}, "tenant not allowed"),
    ({"iss": "https://login.microsoftonline.com/4b1c7f3e-8d2a-4e6b-9c5f-0a1d2e3f4a5b/v2.0/"}, "issuer mismatch"),
    ({"exp": 1_000_000_000}, "expired"),
    ({"ver": "1.0"}, "not a v2.0 token"),
])
def test_an_unacceptable_id_token_is_a_failed_sign_in_and_no_session(harness, mutation, detail):
    _, _, done = harness.sign_in(**mutation)
    assert (done.status, done.code) == (400, "signin_failed") and detail in done.body
    assert SESSION_COOKIE not in harness.jar and not any(name.startswith(FLOW_COOKIE_PREFIX) for name in harness.jar)


def test_an_id_token_from_another_signing_key_is_refused(harness, tenant):
    started = harness.handle("/app/x")
    query = parse_qs(urlsplit(header(started, "location")).query)
    forged = tenant.mint_id_token(claims={"nonce": query["nonce"][0], "aud": tenant.client_id})
    forged = forged.rsplit(".", 1)[0] + "." + tenant.mint_id_token().rsplit(".", 1)[1]
    harness.http.answer = (200, {"id_token": forged})
    done = harness.handle(f"/.well-known/entragate/callback?code=c&state={query['state'][0]}")
    assert done.code == "signin_failed" and "signature" in done.body


@pytest.mark.parametrize("query", [
    "code=c", "code=c&state=", "code=c&state=" + "A" * 43, "code=c&state=abc", "code=c&state=" + "A" * 42 + "%3B",
])
def test_a_callback_for_no_flow_of_this_browser_is_refused(harness, query):
    harness.handle("/app/x")  # a real flow is pending, but not for this state
    done = harness.handle("/.well-known/entragate/callback?" + query)
    assert (done.status, done.code) == (400, "signin_failed") and harness.http.calls == []
    for name, value in done.headers:
        assert ";" not in value.partition(";")[0] and "\n" not in value


def test_a_replayed_callback_finds_no_flow_the_second_time(harness):
    started, query, done = harness.sign_in()
    assert done.status == 302
    again = harness.handle(f"/.well-known/entragate/callback?code=the-code&state={query['state'][0]}")
    assert again.code == "signin_failed" and len(harness.http.calls) == 1


def test_a_flow_older_than_its_lifetime_is_refused(harness):
    started = harness.handle("/app/x")
    state = parse_qs(urlsplit(header(started, "location")).query)["state"][0]
    harness.clock.now += 601
    done = harness.handle(f"/.well-known/entragate/callback?code=c&state={state}")
    assert done.code == "signin_failed" and harness.http.calls == []


def test_entra_saying_no_is_a_failed_sign_in_with_its_reason(harness):
    started = harness.handle("/app/x")
    state = parse_qs(urlsplit(header(started, "location")).query)["state"][0]
    done = harness.handle(f"/.well-known/entragate/callback?error=access_denied&error_description=AADSTS65004%3A+declined&state={state}")
    assert done.code == "signin_failed" and "access_denied" in done.body and "AADSTS65004" in done.body


@pytest.mark.parametrize("answer,status,code", [
    ((400, {"error": "invalid_grant", "error_description": "AADSTS54005: code redeemed"}), 400, "signin_failed"),
    ((500, {"error": "server_error"}), 502, "entra_unavailable"),
    ((200, {"access_token": "x"}), 400, "signin_failed"),
])
def test_a_refused_or_failed_code_exchange_is_no_session(harness, answer, status, code):
    harness.http.answer = answer
    _, _, done = harness.sign_in()
    assert (done.status, done.code) == (status, code) and SESSION_COOKIE not in harness.jar


# --- the session cookie ------------------------------------------------------------------------

def _tamper(value: str, position: int) -> str:
    head, _, body = value.rpartition(".")
    flipped = "A" if body[position] != "A" else "B"
    return f"{head}.{body[:position]}{flipped}{body[position + 1:]}"


@pytest.mark.parametrize("change", ["tamper-iv", "tamper-body", "tamper-tag", "truncate", "key-id", "empty", "garbage"])
def test_a_tampered_or_truncated_session_cookie_is_no_session(harness, change):
    harness.sign_in()
    value = harness.jar[SESSION_COOKIE]
    body = value.rpartition(".")[2]
    changed = {
        "tamper-iv": lambda: _tamper(value, 3), "tamper-body": lambda: _tamper(value, len(body) // 2),
        "tamper-tag": lambda: _tamper(value, len(body) - 3), "truncate": lambda: value[:-10],
        "key-id": lambda: value.replace(value.split(".")[1], "AAAAAAAA", 1), "empty": lambda: "",
        "garbage": lambda: "v1.x.y",
    }[change]()
    jar = {SESSION_COOKIE: changed}
    assert harness.handle("/app/x", cookies=jar).code == "signin_redirect"
    assert harness.handle("/app/x", cookies=jar, navigate=False).status == 401


def test_a_flow_cookie_presented_as_the_session_does_not_open(harness):
    started = harness.handle("/app/x")
    (flow_value,) = [value for name, value in harness.jar.items() if name.startswith(FLOW_COOKIE_PREFIX)]
    assert harness.handle("/app/x", cookies={SESSION_COOKIE: flow_value}, navigate=False).status == 401


def test_a_session_sealed_with_an_unknown_key_is_no_session(tenant, compiled, harness):
    harness.sign_in()
    stranger = Harness(tenant, compiled[0])  # another gateway, another key
    assert stranger.handle("/app/x", cookies=dict(harness.jar), navigate=False).status == 401


def test_key_rotation_new_key_seals_old_keys_still_open_until_dropped(tenant, compiled):
    old = Harness(tenant, compiled[0])
    old.sign_in()
    new_key = new_session_key()
    rotated = Harness(tenant, compiled[0], keys=f"{new_key},{old.keys}")
    assert isinstance(rotated.handle("/app/x", cookies=dict(old.jar)), Forward)
    rotated.sign_in()
    assert rotated.jar[SESSION_COOKIE].split(".")[1] != old.jar[SESSION_COOKIE].split(".")[1]
    dropped = Harness(tenant, compiled[0], keys=new_key)
    assert dropped.handle("/app/x", cookies=dict(old.jar), navigate=False).status == 401
    assert isinstance(dropped.handle("/app/x", cookies=dict(rotated.jar)), Forward)


def test_an_expired_session_is_no_session(harness):
    harness.sign_in()
    assert isinstance(harness.handle("/app/x"), Forward)
    harness.clock.now += harness.config.sessions.lifetime + 1
    assert harness.handle("/app/x").code == "signin_redirect"


def test_an_identity_too_large_for_a_cookie_is_kept_in_kv(tenant, tmp_path):
    groups = [f"{n:08x}-1111-4111-8111-111111111111" for n in range(90)]
    aliases = "\n".join(f'g{n} = "{group}"' for n, group in enumerate(groups))
    directory = tmp_path / "policy"
    directory.mkdir()
    names = ", ".join(f'"g{n}"' for n in range(90))
    (directory / "p.toml").write_text(f"[groups]\n{aliases}\n[[routes]]\nname = \"app\"\npaths = [\"/app/**\"]\n"
                                      f"login = true\nallow = {{ groups = [{names}] }}\n")
    big = Harness(tenant, json.loads(compile_policies(directory).json_text))
    big.gateway.signin._policy_groups = frozenset(groups)
    big.sign_in(groups=groups, name="A" * 300)
    assert len(big.jar[SESSION_COOKIE]) < 400
    assert any(key.startswith("entragate:session:") for key in big.store.data)
    result = big.handle("/app/x")
    assert isinstance(result, Forward) and len(result.identity.groups) == 90


# --- return paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "https://evil.example/x", "//evil.example/x", "/\\evil.example", "\\\\evil.example", "/%2F%2Fevil.example",
    "/%5Cevil.example", "/%2f%2fevil", "javascript:alert(1)", "/\x00x", "/x\ny", " /x", "/é", "", None, "evil",
    "/" + "a" * 3000,
])
def test_return_paths_that_could_leave_the_host_become_the_start_page(path):
    assert safe_return_path(path) == "/"


@pytest.mark.parametrize("path", ["/", "/app/x?y=1&z=%2F", "/app/a%20b#frag"])
def test_return_paths_on_this_host_are_kept(path):
    assert safe_return_path(path) == path


@pytest.mark.parametrize("rd", ["https://evil.example/", "//evil.example", "/%5C%5Cevil", "%2F%2Fevil"])
def test_an_explicit_sign_in_never_returns_to_another_host(harness, rd):
    harness.handle(f"/.well-known/entragate/signin?rd={rd}")
    state = [name for name in harness.jar if name.startswith(FLOW_COOKIE_PREFIX)]
    started = harness.handle(f"/.well-known/entragate/signin?rd={rd}")
    query = parse_qs(urlsplit(header(started, "location")).query)
    harness.http.pending_nonce = query["nonce"][0]
    done = harness.handle(f"/.well-known/entragate/callback?code=c&state={query['state'][0]}")
    assert header(done, "location") == "/" and state


# --- logout ------------------------------------------------------------------------------------

def test_logout_get_asks_first_with_the_sessions_csrf_token(harness):
    harness.sign_in()
    page = harness.handle("/.well-known/entragate/logout")
    assert page.status == 200 and page.code == "logout_confirm"
    assert 'method="post"' in page.body and 'name="csrf"' in page.body


def _csrf(page) -> str:
    return page.body.split('name="csrf" value="')[1].split('"')[0]


def test_logout_post_revokes_everywhere_and_goes_to_entra(harness, tenant, compiled):
    harness.sign_in()
    old_jar = dict(harness.jar)
    csrf = _csrf(harness.handle("/.well-known/entragate/logout"))
    done = harness.handle("/.well-known/entragate/logout", method="POST", body=f"csrf={csrf}".encode(),
                          headers={"sec-fetch-site": "same-origin", "origin": ORIGIN})
    assert done.status == 302 and done.code == "logout"
    location = urlsplit(header(done, "location"))
    assert location.path.endswith("/oauth2/v2.0/logout")
    assert parse_qs(location.query)["post_logout_redirect_uri"] == [ORIGIN + "/.well-known/entragate/signed-out"]
    assert SESSION_COOKIE not in harness.jar
    assert harness.handle("/app/x", cookies=old_jar, navigate=False).status == 401  # this isolate
    elsewhere = Harness(tenant, compiled[0], keys=harness.keys, store=harness.store)  # another isolate, same KV
    assert elsewhere.handle("/app/x", cookies=old_jar, navigate=False).status == 401


@pytest.mark.parametrize("headers,body", [
    ({"sec-fetch-site": "cross-site"}, "RIGHT"),
    ({"origin": "https://evil.example"}, "RIGHT"),
    ({"sec-fetch-site": "same-origin"}, "csrf=wrong"),
    ({"sec-fetch-site": "same-origin"}, ""),
])
def test_a_logout_post_that_is_not_the_sessions_own_changes_nothing(harness, headers, body):
    harness.sign_in()
    csrf = _csrf(harness.handle("/.well-known/entragate/logout"))
    result = harness.handle("/.well-known/entragate/logout", method="POST",
                            body=(f"csrf={csrf}" if body == "RIGHT" else body).encode(), headers=headers)
    assert result.status in (400, 403) and harness.store.data == {}
    assert isinstance(harness.handle("/app/x"), Forward)


def test_front_channel_logout_from_entra_revokes_that_entra_session(harness, tenant):
    harness.sign_in()
    issuer = f"https://login.microsoftonline.com/{tenant.tenant_id}/v2.0"
    assert harness.handle(f"/.well-known/entragate/frontchannel-logout?sid=entra-sid-1&iss=https://evil/v2.0").status == 400
    result = harness.handle(f"/.well-known/entragate/frontchannel-logout?sid=entra-sid-1&iss={issuer}")
    assert result.status == 200
    harness.gateway.signin._cache._entries.clear()
    assert harness.handle("/app/x", navigate=False).status == 401


# --- against the mock tenant's real authorize and token endpoints ------------------------------

class RealHarness(Harness):
    """The gateway talks to the mock tenant's real token endpoint (PKCE and client
    authentication checked as Entra checks them); a browser picks a user on its sign-in page."""

    def __init__(self, tenant, policy_json, **kwargs):
        super().__init__(tenant, policy_json, certificate=tenant.client_certificate_pem, secret=tenant.client_secret,
                         **kwargs)
        if ORIGIN + "/.well-known/entragate/callback" not in tenant.redirect_uris:
            tenant.redirect_uris.append(ORIGIN + "/.well-known/entragate/callback")  # registered, as in Entra
        self.http = UrllibHttp()
        self.gateway.signin._entra._http = self.http

    def code_for(self, started, user="ada") -> tuple[str, str]:
        """(code, state) Entra gives the browser that followed `started` and picked `user`."""
        from fixtures.signin_stack import Browserless

        location = header(started, "location")
        browser = Browserless()
        status, headers, _ = browser.request("GET", location)
        assert status == 200, status
        status, headers, _ = browser.request("POST", location, body=f"user={user}".encode(),
                                             headers={"content-type": "application/x-www-form-urlencoded"})
        assert status == 302, status
        answer = parse_qs(urlsplit(headers["location"]).query)
        return answer["code"][0], answer["state"][0]


@pytest.fixture(params=["certificate", "secret"])
def real(request, tenant, compiled):
    return RealHarness(tenant, compiled[0], client_secret=request.param == "secret")


def test_real_token_endpoint_accepts_the_gateways_client_credential(real, tenant):
    code, state = real.code_for(real.handle("/app/x"))
    done = real.handle(f"/.well-known/entragate/callback?code={code}&state={state}")
    assert done.code == "signin_complete" and isinstance(real.handle("/app/x"), Forward)


def test_a_code_injected_into_another_browsers_flow_fails_pkce(real):
    """The attacker has the victim's code, and runs the callback with their own flow (state,
    flow cookie, verifier): the token endpoint refuses the verifier, no session."""
    victim = real.handle("/app/x", cookies={})
    code, _ = real.code_for(victim)
    attacker_state = parse_qs(urlsplit(header(real.handle("/app/x"), "location")).query)["state"][0]
    done = real.handle(f"/.well-known/entragate/callback?code={code}&state={attacker_state}")
    assert done.code == "signin_failed" and "invalid_grant" in done.body and "AADSTS501481" in done.body
    assert SESSION_COOKIE not in real.jar


def test_a_replayed_code_is_refused(real):
    code, state = real.code_for(real.handle("/app/x"))
    assert real.handle(f"/.well-known/entragate/callback?code={code}&state={state}").code == "signin_complete"
    real.jar.clear()  # another browser, holding the stolen code
    later_state = parse_qs(urlsplit(header(real.handle("/app/y"), "location")).query)["state"][0]
    again = real.handle(f"/.well-known/entragate/callback?code={code}&state={later_state}")
    assert again.code == "signin_failed" and "invalid_grant" in again.body


def test_a_wrong_client_credential_is_no_session(tenant, compiled):
    wrong = RealHarness(tenant, compiled[0], client_secret=True)
    wrong.gateway.signin._entra._credential._secret = "not-the-secret"
    code, state = wrong.code_for(wrong.handle("/app/x"))
    done = wrong.handle(f"/.well-known/entragate/callback?code={code}&state={state}")
    assert done.code == "signin_failed" and "invalid_client" in done.body


def test_the_token_endpoint_down_is_a_transient_page_not_a_session(real, tenant):
    code, state = real.code_for(real.handle("/app/x"))
    tenant.set_mode("error500", target="token")
    try:
        done = real.handle(f"/.well-known/entragate/callback?code={code}&state={state}")
    finally:
        tenant.set_mode("ok", target="token")
    assert (done.status, done.code) == (502, "entra_unavailable") and SESSION_COOKIE not in real.jar


def test_sign_in_endpoints_come_from_discovery_only_on_the_configured_authority(tenant):
    from entragate.keys import signin_endpoints

    good = {"authorization_endpoint": f"{tenant.authority}/t/oauth2/v2.0/authorize",
            "token_endpoint": f"{tenant.authority}/t/oauth2/v2.0/token",
            "end_session_endpoint": f"{tenant.authority}/t/oauth2/v2.0/logout"}
    assert signin_endpoints(good, tenant.authority)["token"] == good["token_endpoint"]
    for member in good:
        for bad in ("https://evil.example/authorize", f"{tenant.authority}\\@evil.example/x",
                    f"{tenant.authority}/../x", None, f"{tenant.authority}/a?b=c"):
            assert signin_endpoints({**good, member: bad}, tenant.authority) is None, (member, bad)


def test_without_usable_endpoints_a_navigation_gets_a_transient_page_not_a_redirect(harness):
    from dataclasses import replace

    v2 = harness.gateway.signin._id_tokens._keys
    asyncio.run(v2.current(lambda coroutine: coroutine.close()))
    v2._set = replace(v2._set, endpoints=None)
    result = harness.handle("/app/x")
    assert (result.status, result.code) == (502, "entra_unavailable")
    assert not any(name == "location" for name, _ in result.headers)
