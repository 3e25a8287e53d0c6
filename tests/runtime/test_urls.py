"""authority.py against the runtime's own URL parser: every URL the gateway would fetch from a
document is read by WHATWG `new URL()`, inside workerd, as exactly the string that was
checked, on the authority's origin (tests/runtime/workers/check_urls.py)."""

from urllib.parse import urlsplit

import pytest
from fixtures.url_differentials import ACCEPTED, CANONICAL, NOT_AUTHORITIES, REFUSED


@pytest.fixture(scope="module")
def report(edge_checks):
    return edge_checks.run("urls", {"documents": ACCEPTED + REFUSED, "authorities": list(CANONICAL) + NOT_AUTHORITIES})


def test_the_edge_gives_the_verdicts_the_host_gives(report):
    fetched = {(authority, url): result for authority, url, result in report["documents"]}
    assert {case for case in ACCEPTED if fetched[case] == case[1]} == set(ACCEPTED)
    assert [case for case in REFUSED if fetched[case] is not None] == []
    assert report["authorities"] == {**CANONICAL, **dict.fromkeys(NOT_AUTHORITIES)}


@pytest.mark.parametrize("authority,url", ACCEPTED)
def test_whatwg_reads_every_accepted_url_as_written_on_the_authority(report, authority, url):
    parsed = report["parsed"][url]
    assert parsed["href"] == url, "WHATWG would fetch another string than the one checked"
    assert parsed["origin"] == authority
    assert (parsed["username"], parsed["password"], parsed["search"], parsed["hash"]) == ("", "", "", "")
    assert authority + parsed["pathname"] == url


def test_whatwg_prints_every_canonical_authority_as_its_origin(report):
    for canonical in set(CANONICAL.values()):
        parsed = report["parsed"][canonical]
        assert parsed["origin"] == canonical and parsed["href"] == canonical + "/"


def _urlsplit_origin(url):
    try:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port
    except ValueError:
        return None


def test_the_refused_list_holds_real_differentials(report):
    """The list would have caught the old check: URLs urlsplit put on the authority that WHATWG
    fetches from elsewhere, and others WHATWG reads on the authority but at another string."""
    elsewhere = []
    rewritten = []
    for authority, url in REFUSED:
        parsed = report["parsed"][url]
        if "error" in parsed:
            continue
        if _urlsplit_origin(url) == _urlsplit_origin(authority) and parsed["origin"] != authority:
            elsewhere.append(url)
        if parsed["origin"] == authority and parsed["href"] != url:
            rewritten.append(url)
    assert "https://evil.example\\@login.microsoftonline.com/keys" in elsewhere
    assert report["parsed"]["https://evil.example\\@login.microsoftonline.com/keys"]["host"] == "evil.example"
    # WHATWG's own rewrites: tabs deleted, case folded, default port dropped, dot segments resolved.
    for url in ("https://login.micro\tsoftonline.com/keys", "https://LOGIN.microsoftonline.com/keys",
                "https://login.microsoftonline.com:443/keys", "https://login.microsoftonline.com/../evil.example/keys"):
        assert url in rewritten, url
