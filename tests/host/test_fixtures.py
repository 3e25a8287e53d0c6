"""Tests for the test fixtures themselves: the mock Entra tenant and the echo origin.

Everything here talks HTTP to 127.0.0.1 only, the way the gateway will.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from entragate_mocks.echo_origin import EchoOrigin
from entragate_mocks.mock_entra import (
    DEFAULT_APP_ROLES,
    DEFAULT_GROUPS,
    DEFAULT_TENANT_ID,
    DEFAULT_UPN,
    HUGE_BYTES,
    MockTenant,
    b64url,
)

REPO = Path(__file__).resolve().parents[2]
OTHER_TENANT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
HTTP_TIMEOUT = 5


def http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def get_json(url: str) -> dict:
    status, content_type, body = http_get(url)
    assert status == 200, (status, body[:200])
    assert content_type.startswith("application/json")
    return json.loads(body)


def post_json(url: str, obj: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def b64url_uint(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def served_jwk(tenant: MockTenant, kid: str, version: str = "2.0") -> dict:
    """The JWK for kid, found the way a gateway finds it: discovery -> jwks_uri -> JWKS."""
    jwks_uri = get_json(tenant.discovery_url(version))["jwks_uri"]
    keys = {k["kid"]: k for k in get_json(jwks_uri)["keys"]}
    return keys[kid]


@pytest.fixture
def tenant():
    with MockTenant() as t:
        yield t


@pytest.fixture
def origin():
    with EchoOrigin() as o:
        yield o


# --- discovery ------------------------------------------------------------------


def test_discovery_v1_for_a_guid_tenant(tenant):
    doc = get_json(f"{tenant.authority}/{DEFAULT_TENANT_ID}/.well-known/openid-configuration")
    assert doc["issuer"] == f"https://sts.windows.net/{DEFAULT_TENANT_ID}/"
    assert doc["jwks_uri"] == f"{tenant.authority}/common/discovery/keys"
    assert doc["token_endpoint"] == f"{tenant.authority}/{DEFAULT_TENANT_ID}/oauth2/token"
    assert doc["authorization_endpoint"] == f"{tenant.authority}/{DEFAULT_TENANT_ID}/oauth2/authorize"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["tenant_region_scope"] == "NA"


def test_discovery_v2_for_a_guid_tenant(tenant):
    doc = get_json(f"{tenant.authority}/{OTHER_TENANT}/v2.0/.well-known/openid-configuration")
    assert doc["issuer"] == f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    assert doc["jwks_uri"] == f"{tenant.authority}/{OTHER_TENANT}/discovery/v2.0/keys"
    assert doc["token_endpoint"] == f"{tenant.authority}/{OTHER_TENANT}/oauth2/v2.0/token"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "openid" in doc["scopes_supported"]


@pytest.mark.parametrize("segment", ["organizations", "common"])
def test_discovery_for_multi_tenant_segments_uses_the_tenantid_template(tenant, segment):
    v1 = get_json(f"{tenant.authority}/{segment}/.well-known/openid-configuration")
    v2 = get_json(f"{tenant.authority}/{segment}/v2.0/.well-known/openid-configuration")
    assert v1["issuer"] == "https://sts.windows.net/{tenantid}/"
    assert v2["issuer"] == "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert v1["jwks_uri"] == f"{tenant.authority}/common/discovery/keys"
    assert v2["jwks_uri"] == f"{tenant.authority}/{segment}/discovery/v2.0/keys"
    assert v2["tenant_region_scope"] is None


def test_unknown_paths_are_404(tenant):
    assert http_get(f"{tenant.authority}/{DEFAULT_TENANT_ID}/nope")[0] == 404
    assert http_get(f"{tenant.authority}/")[0] == 404


# --- JWKS -----------------------------------------------------------------------


def test_jwks_key_matches_the_signing_key_and_its_certificate(tenant):
    jwk = served_jwk(tenant, tenant.signing_kid, version="1.0")
    assert (jwk["kty"], jwk["use"]) == ("RSA", "sig")
    assert "issuer" not in jwk  # v1 keys carry no issuer

    private = serialization.load_pem_private_key(tenant.private_key_pem().encode(), password=None)
    expected = private.public_key().public_numbers()
    assert (b64url_uint(jwk["n"]), b64url_uint(jwk["e"])) == (expected.n, expected.e)

    (cert_b64,) = jwk["x5c"]
    der = base64.b64decode(cert_b64)
    assert jwk["x5t"] == b64url(hashlib.sha1(der).digest())
    cert = x509.load_der_x509_certificate(der)
    assert cert.public_key().public_numbers() == expected
    assert jwk["kid"] != jwk["x5t"]  # so a gateway that looks keys up by x5t gets caught
    assert len(jwk["kid"]) == 27


def test_v2_jwks_keys_carry_the_issuer(tenant):
    guid_keys = get_json(f"{tenant.authority}/{DEFAULT_TENANT_ID}/discovery/v2.0/keys")["keys"]
    org_keys = get_json(f"{tenant.authority}/organizations/discovery/v2.0/keys")["keys"]
    assert [k["issuer"] for k in guid_keys] == [f"https://login.microsoftonline.com/{DEFAULT_TENANT_ID}/v2.0"]
    assert [k["issuer"] for k in org_keys] == ["https://login.microsoftonline.com/{tenantid}/v2.0"]
    tenant_v1 = get_json(f"{tenant.authority}/{DEFAULT_TENANT_ID}/discovery/keys")["keys"]
    assert [k["kid"] for k in tenant_v1] == [tenant.signing_kid]


def test_rotate_and_retire_change_the_served_jwks(tenant):
    url = f"{tenant.authority}/common/discovery/keys"
    old = tenant.signing_kid
    new = tenant.rotate()
    assert new != old and tenant.signing_kid == new
    assert [k["kid"] for k in get_json(url)["keys"]] == [old, new]
    assert jwt.get_unverified_header(tenant.mint())["kid"] == new

    tenant.retire(old)
    assert [k["kid"] for k in get_json(url)["keys"]] == [new]
    # A retired key still signs, so tests can present tokens the JWKS no longer vouches for.
    assert jwt.get_unverified_header(tenant.mint(kid=old))["kid"] == old
    with pytest.raises(KeyError):
        tenant.retire(old)

    prepublished = tenant.rotate(activate=False)
    assert tenant.signing_kid == new
    assert [k["kid"] for k in get_json(url)["keys"]] == [new, prepublished]


def test_publish_adds_an_arbitrary_key_verbatim(tenant):
    extra = {"kty": "EC", "use": "sig", "kid": "extra-ec", "crv": "P-256", "x": "AA", "y": "AA"}
    tenant.publish(extra)
    keys = get_json(f"{tenant.authority}/common/discovery/v2.0/keys")["keys"]
    assert keys[-1] == extra
    with pytest.raises(KeyError):
        tenant.mint(kid="extra-ec")  # no private key behind it


# --- tokens ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_minted_user_token_verifies_against_the_served_jwks(tenant, version):
    token = tenant.mint(version=version)
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWK(served_jwk(tenant, header["kid"], version))
    audience = tenant.client_id if version == "2.0" else tenant.app_id_uri
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=tenant.issuer(version))

    assert header["typ"] == "JWT" and header["alg"] == "RS256"
    assert ("x5t" in header) == (version == "1.0")
    assert claims["ver"] == version
    assert claims["tid"] == DEFAULT_TENANT_ID
    assert claims["oid"] == tenant.user_oid
    assert claims["scp"] == "access_as_user"
    assert claims["groups"] == list(DEFAULT_GROUPS)
    assert "roles" not in claims and "idtyp" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    assert len(claims["uti"]) == 22
    if version == "2.0":
        assert claims["iss"] == f"https://login.microsoftonline.com/{DEFAULT_TENANT_ID}/v2.0"
        assert (claims["azp"], claims["azpacr"]) == (tenant.client_app_id, "0")
        assert claims["preferred_username"] == DEFAULT_UPN
        assert "upn" not in claims and "appid" not in claims
    else:
        assert claims["iss"] == f"https://sts.windows.net/{DEFAULT_TENANT_ID}/"
        assert (claims["appid"], claims["appidacr"]) == (tenant.client_app_id, "0")
        assert claims["upn"] == claims["unique_name"] == DEFAULT_UPN
        assert claims["amr"] == ["pwd"]
        assert "azp" not in claims


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_app_only_token_shape(tenant, version):
    claims = jwt.decode(tenant.mint(version=version, kind="app"), options={"verify_signature": False})
    assert claims["idtyp"] == "app"
    assert claims["roles"] == list(DEFAULT_APP_ROLES)
    assert claims["oid"] == claims["sub"] == tenant.service_principal_oid
    for user_claim in ("scp", "name", "upn", "preferred_username", "unique_name", "groups"):
        assert user_claim not in claims
    if version == "2.0":
        assert (claims["azp"], claims["azpacr"]) == (tenant.client_app_id, "1")
    else:
        assert (claims["appid"], claims["appidacr"]) == (tenant.client_app_id, "1")


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_minted_id_token_is_shaped_like_entras(tenant, version):
    """The samples of Microsoft's "ID tokens" page: same keys and issuer as access tokens, aud the
    client id in both versions, a nonce, and none of the claims of an access token."""
    token = tenant.mint_id_token(version=version)
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWK(served_jwk(tenant, header["kid"], version))
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=tenant.client_id, issuer=tenant.issuer(version))
    assert header["typ"] == "JWT" and ("x5t" in header) == (version == "1.0")
    assert claims["ver"] == version and claims["tid"] == DEFAULT_TENANT_ID and claims["oid"] == tenant.user_oid
    assert claims["nonce"] and claims["aio"] and claims["groups"] == list(DEFAULT_GROUPS)
    assert claims["exp"] - claims["iat"] == 3600 and claims["name"] == "Ada Lovelace"
    for access_token_claim in ("scp", "roles", "azp", "azpacr", "appid", "appidacr", "idtyp"):
        assert access_token_claim not in claims
    access = jwt.decode(tenant.mint(version=version), options={"verify_signature": False})
    assert claims["sub"] == access["sub"]  # pairwise for this registration, which is both client and API
    if version == "2.0":
        assert claims["preferred_username"] == DEFAULT_UPN and "upn" not in claims
    else:
        assert claims["unique_name"] == claims["upn"] == DEFAULT_UPN and claims["amr"] == ["pwd"]
        assert "preferred_username" not in claims
    overridden = jwt.decode(tenant.mint_id_token({"roles": ["R"]}, version=version, omit=("nonce",), tid=OTHER_TENANT),
                            options={"verify_signature": False})
    assert overridden["roles"] == ["R"] and "nonce" not in overridden
    assert overridden["tid"] == OTHER_TENANT and overridden["iss"] == tenant.issuer(version, OTHER_TENANT)


def test_mint_overrides(tenant):
    token = tenant.mint(
        {"roles": ["Admin"], "scp": "other"},
        tid=OTHER_TENANT,
        audience="api://elsewhere",
        lifetime=60,
        now=1_700_000_000,
        omit=("groups", "aio"),
        headers={"kid": "forged", "x-extra": 1},
    )
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["kid"] == "forged" and header["x-extra"] == 1
    assert claims["tid"] == OTHER_TENANT
    assert claims["iss"] == f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    assert claims["aud"] == "api://elsewhere"
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (1_700_000_000, 1_700_000_000, 1_700_000_060)
    assert claims["roles"] == ["Admin"] and claims["scp"] == "other"
    assert "groups" not in claims and "aio" not in claims
    with pytest.raises(ValueError):
        tenant.mint(version="3.0")
    with pytest.raises(KeyError):
        tenant.mint(kid="no-such-kid")


def test_sign_raw_signs_arbitrary_json(tenant):
    token = tenant.sign_raw({"alg": "RS256", "kid": tenant.signing_kid}, {"exp": "tomorrow"})
    key = jwt.PyJWK(tenant.public_jwk(tenant.signing_kid))
    assert json.loads(jwt.PyJWS().decode(token, key, algorithms=["RS256"])) == {"exp": "tomorrow"}
    # The header may lie about alg; the signature is RS256 regardless.
    lying = tenant.sign_raw({"alg": "HS256"}, {"sub": "x"})
    assert jwt.get_unverified_header(lying)["alg"] == "HS256"


def test_token_endpoint_mints_a_usable_token(tenant):
    status, body = post_json(
        f"{tenant.authority}/_mock/token", {"version": "1.0", "kind": "user", "claims": {"roles": ["Reader"]}}
    )
    assert status == 200
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    key = jwt.PyJWK(served_jwk(tenant, tenant.signing_kid, "1.0"))
    claims = jwt.decode(body["access_token"], key, algorithms=["RS256"], audience=tenant.app_id_uri)
    assert claims["ver"] == "1.0" and claims["roles"] == ["Reader"]
    assert post_json(f"{tenant.authority}/_mock/token", {"version": "9"})[0] == 400
    assert post_json(f"{tenant.authority}/_mock/token", {"bogus": 1})[0] == 400
    assert tenant.hits("token") == 3


# --- faults and counters --------------------------------------------------------


def test_fault_modes_on_the_keys_endpoint(tenant):
    url = f"{tenant.authority}/common/discovery/keys"
    discovery = tenant.discovery_url("1.0")

    tenant.set_mode("error500")
    assert http_get(url)[0] == 500
    assert get_json(discovery)["jwks_uri"] == url  # discovery is unaffected

    tenant.set_mode("html")
    status, content_type, body = http_get(url)
    assert (status, content_type.split(";")[0]) == (200, "text/html")
    assert body.lstrip().startswith(b"<")

    tenant.set_mode("truncated")
    status, _, body = http_get(url)
    assert status == 200 and body.startswith(b'{"keys":[')
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)

    tenant.set_mode("empty")
    assert get_json(url) == {"keys": []}

    tenant.set_mode("huge")
    status, _, body = http_get(url)
    assert status == 200 and len(body) > HUGE_BYTES
    assert json.loads(body)["keys"][0]["kid"] == tenant.signing_kid

    tenant.set_mode("slow", delay=0.2)
    started = time.monotonic()
    assert get_json(url)["keys"][0]["kid"] == tenant.signing_kid
    assert time.monotonic() - started >= 0.2

    tenant.set_mode("reset")
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(url, timeout=HTTP_TIMEOUT)

    tenant.set_mode("ok")
    assert get_json(url)["keys"][0]["kid"] == tenant.signing_kid
    with pytest.raises(ValueError):
        tenant.set_mode("sideways")


def test_streamed_modes_send_the_real_document_chunked_and_record_how_it_ended(tenant, monkeypatch):
    import entragate_mocks.mock_entra as mock_entra

    url = f"{tenant.authority}/common/discovery/keys"
    monkeypatch.setattr(mock_entra, "STREAM_BYTES", 1024 * 1024)
    tenant.set_mode("chunked_huge")
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
        assert response.headers["Transfer-Encoding"] == "chunked" and response.headers["Content-Length"] is None
        body = response.read()
    assert len(body) > 1024 * 1024 and json.loads(body)["keys"][0]["kid"] == tenant.signing_kid
    tenant.set_mode("drip", delay=0.001)
    assert get_json(url)["keys"][0]["kid"] == tenant.signing_kid
    deadline = time.monotonic() + HTTP_TIMEOUT
    while any(record["ended"] is None for record in tenant.streams()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(r["mode"], r["ended"], r["sent"] == r["total"]) for r in tenant.streams()] == [
        ("chunked_huge", "finished", True), ("drip", "finished", True)]

    # A reader that stops early is noticed: the stream ends "closed", short of its total.
    monkeypatch.setattr(mock_entra, "STREAM_BYTES", 64 * 1024 * 1024)
    tenant.reset_hits()
    tenant.set_mode("chunked_huge")
    connection = http.client.HTTPConnection("127.0.0.1", tenant.port, timeout=HTTP_TIMEOUT)
    connection.request("GET", "/common/discovery/keys")
    connection.getresponse().read(100_000)
    connection.close()
    deadline = time.monotonic() + HTTP_TIMEOUT
    while tenant.streams()[0]["ended"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = tenant.streams()
    assert record["ended"] == "closed" and record["sent"] < record["total"]
    tenant.set_mode("ok")


def test_fault_modes_can_target_discovery(tenant):
    tenant.set_mode("error500", target="discovery")
    assert http_get(tenant.discovery_url("2.0"))[0] == 500
    assert http_get(tenant.discovery_url("1.0"))[0] == 500
    assert get_json(f"{tenant.authority}/common/discovery/keys")["keys"]
    tenant.set_mode("empty", target="discovery")
    assert get_json(tenant.discovery_url()) == {}
    with pytest.raises(ValueError):
        tenant.set_mode("ok", target="elsewhere")


def test_hit_counters(tenant):
    get_json(tenant.discovery_url("2.0"))
    get_json(tenant.discovery_url("1.0"))
    get_json(f"{tenant.authority}/common/discovery/keys")
    tenant.set_mode("error500")
    http_get(f"{tenant.authority}/organizations/discovery/v2.0/keys")  # failed fetches count too
    assert tenant.hits("discovery") == 2
    assert tenant.hits("jwks") == 2
    assert tenant.hits("/common/") == 1
    assert tenant.hits(f"/{DEFAULT_TENANT_ID}/") == 2
    with pytest.raises(ValueError):
        tenant.hits("jwk")

    stats = get_json(f"{tenant.authority}/_mock/stats")
    assert stats["hits"]["jwks"] == 2 and stats["hits"]["discovery"] == 2
    assert stats["paths"]["/common/discovery/keys"] == 1

    tenant.reset_hits()
    assert tenant.hits("jwks") == tenant.hits("discovery") == tenant.hits("/") == 0


def test_stop_severs_keep_alive_connections():
    tenant = MockTenant().start()
    conn = http.client.HTTPConnection("127.0.0.1", tenant.port, timeout=HTTP_TIMEOUT)
    conn.request("GET", "/common/discovery/keys")
    assert conn.getresponse().read()
    tenant.stop()
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/common/discovery/keys")
        conn.getresponse()
    conn.close()


def test_tenants_share_the_process_key_pool():
    with MockTenant() as a, MockTenant(OTHER_TENANT) as b:
        assert a.signing_kid == b.signing_kid  # Entra's keys are shared across tenants too
        assert a.authority != b.authority


# --- echo origin ----------------------------------------------------------------


def test_echo_reports_a_content_length_request(origin):
    body = b"hello world" * 1000
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=HTTP_TIMEOUT)
    conn.putrequest("PUT", "//a/%2e%2E/b%2Fc;x?q=1&q=%20&", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", "example.test")
    conn.putheader("X-Dup", "one")
    conn.putheader("x-dup", "two")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    echo = json.loads(resp.read())
    conn.close()

    assert resp.status == 200
    assert echo["method"] == "PUT"
    assert echo["path"] == "//a/%2e%2E/b%2Fc;x"  # raw: no decoding, no slash collapsing
    assert echo["query"] == "q=1&q=%20&"
    assert echo["raw_target"] == "//a/%2e%2E/b%2Fc;x?q=1&q=%20&"
    assert echo["headers"] == [
        ["Host", "example.test"],
        ["X-Dup", "one"],
        ["x-dup", "two"],
        ["Content-Length", str(len(body))],
    ]
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["body_length"] == len(body)
    assert origin.last == echo and origin.requests == [echo]


def test_echo_reads_a_large_chunked_body(origin):
    piece = os.urandom(1 << 20)
    pieces = [piece] * 12 + [b"tail"]
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=HTTP_TIMEOUT)
    conn.putrequest("POST", "/upload")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for i, chunk in enumerate(pieces):
        extension = b";ext=1" if i == 0 else b""
        conn.send(b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk))
    conn.send(b"0\r\nX-Trailer: t\r\n\r\n")
    resp = conn.getresponse()
    echo = json.loads(resp.read())

    expected = hashlib.sha256(b"".join(pieces))
    assert resp.status == 200
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/upload", "")
    assert echo["body_length"] == 12 * (1 << 20) + 4
    assert echo["body_sha256"] == expected.hexdigest()

    # The connection stays usable: the body was consumed exactly.
    conn.request("GET", "/again")
    assert json.loads(conn.getresponse().read())["path"] == "/again"
    conn.close()


def test_echo_answers_any_method(origin):
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=HTTP_TIMEOUT)
    for method in ("GET", "DELETE", "OPTIONS", "PATCH", "PURGE"):
        conn.request(method, "/m")
        assert json.loads(conn.getresponse().read())["method"] == method
    conn.request("HEAD", "/m")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    assert [r["method"] for r in origin.requests] == ["GET", "DELETE", "OPTIONS", "PATCH", "PURGE", "HEAD"]
    assert origin.requests[0]["body_length"] == 0
    conn.close()
    origin.clear()
    assert origin.requests == [] and origin.last is None


def test_echo_special_paths(origin):
    status, _, body = http_get(f"{origin.url}/__status/503/x?y=1")
    assert status == 503 and json.loads(body)["query"] == "y=1"
    started = time.monotonic()
    status, _, body = http_get(f"{origin.url}/__slow/0.2/z")
    assert status == 200 and json.loads(body)["path"] == "/__slow/0.2/z"
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    status, _, body = http_get(f"{origin.url}/api/z?a=1&__slow=0.2")
    assert status == 200 and json.loads(body)["query"] == "a=1&__slow=0.2"
    assert time.monotonic() - started >= 0.2


# --- CLIs -----------------------------------------------------------------------


CLI_COMMANDS = {  # the scripts as the README runs them (no PYTHONPATH), the module with tools/ on the path
    "mock_entra_script": ["tools/entragate_mocks/mock_entra.py", "--tenant", OTHER_TENANT],
    "mock_entra_module": ["-m", "entragate_mocks.mock_entra"],
    "echo_origin_script": ["tools/entragate_mocks/echo_origin.py"],
}


@pytest.fixture(scope="module")
def cli_processes():
    """All CLIs at once, so their interpreter start-ups overlap instead of adding up."""
    plain = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(plain, PYTHONPATH=str(REPO / "tools")) if args[0] == "-m" else plain,
        )
        for name, args in CLI_COMMANDS.items()
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def check_cli(proc: subprocess.Popen, sig: int, url_from_ready) -> None:
    """Ready line, one request answered, then a clean exit on the signal."""
    ready_fds, _, _ = select.select([proc.stdout], [], [], 15)
    assert ready_fds, "no ready line"
    ready = json.loads(proc.stdout.readline())
    assert ready["ready"] is True
    assert http_get(url_from_ready(ready))[0] == 200
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr.read() == b""  # no traceback
    assert proc.stdout.read() == b""  # exactly one line


def test_mock_entra_cli_as_a_script(cli_processes):
    def url(ready):
        assert ready["tenant_id"] == OTHER_TENANT
        assert ready["app_id_uri"] == f"api://{ready['client_id']}"
        return f"{ready['authority']}/{OTHER_TENANT}/v2.0/.well-known/openid-configuration"

    check_cli(cli_processes["mock_entra_script"], signal.SIGINT, url)


def test_mock_entra_cli_as_a_module_stops_on_sigterm(cli_processes):
    check_cli(cli_processes["mock_entra_module"], signal.SIGTERM, lambda r: f"{r['authority']}/common/discovery/keys")


def test_echo_origin_cli(cli_processes):
    check_cli(cli_processes["echo_origin_script"], signal.SIGINT, lambda r: f"{r['url']}/ping")
