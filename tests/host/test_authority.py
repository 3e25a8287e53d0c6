"""authority.py: the configured authority's one spelling, and URLs from its documents accepted
only as that spelling plus a plain path. The same cases run through workerd's WHATWG parser
in tests/runtime/test_urls.py."""

from urllib.parse import urlsplit

import pytest
from fixtures.url_differentials import ACCEPTED, AUTHORITY, CANONICAL, NOT_AUTHORITIES, NOT_STRINGS, REFUSED

from entragate.authority import UnsafeUrl, canonical_authority, document_url


@pytest.mark.parametrize("authority,url", ACCEPTED)
def test_a_plain_url_on_the_authority_is_fetched_as_written(authority, url):
    assert document_url(url, authority) == url


@pytest.mark.parametrize("authority,url", REFUSED)
def test_anything_parsers_could_read_differently_is_refused(authority, url):
    with pytest.raises(UnsafeUrl):
        document_url(url, authority)


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_a_document_value_that_is_not_a_string_is_refused(value):
    with pytest.raises(UnsafeUrl):
        document_url(value, AUTHORITY)


def test_what_is_fetched_is_built_from_the_authority_not_copied_from_the_document():
    """The returned string starts with the authority object the caller holds, so no spelling
    of the document's (case, port, escapes) can survive into the fetch."""
    url = document_url(f"{AUTHORITY}/common/discovery/keys", AUTHORITY)
    assert url.startswith(AUTHORITY + "/") and url[len(AUTHORITY):] == "/common/discovery/keys"


def _urlsplit_same_origin(url, authority):
    """The check keys.py made before (scheme, hostname, port compared after urlsplit)."""
    try:
        a, b = urlsplit(url), urlsplit(authority)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:
        return False


def test_the_list_holds_urls_the_old_urlsplit_check_let_through():
    """The list is adversarial for the check it replaces: urlsplit put these on the
    authority (the WHATWG reading of them, in workerd, is in tests/runtime/test_urls.py)."""
    passed_old_check = [url for authority, url in REFUSED if _urlsplit_same_origin(url, authority)]
    assert "https://evil.example\\@login.microsoftonline.com/keys" in passed_old_check
    assert "https://login.microsoftonline.com\t.evil.example/keys" not in passed_old_check


@pytest.mark.parametrize("configured,canonical", CANONICAL.items())
def test_the_configured_authority_is_reduced_to_one_spelling(configured, canonical):
    assert canonical_authority(configured) == canonical
    assert canonical_authority(canonical) == canonical  # idempotent


@pytest.mark.parametrize("configured", NOT_AUTHORITIES)
def test_authorities_with_more_than_scheme_host_and_port_are_refused(configured):
    with pytest.raises(ValueError):
        canonical_authority(configured)
