"""canonical_path / canonical_host: what is matched, and what is refused as ambiguous."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entragate.errors import AmbiguousPath
from entragate.paths import canonical_host, canonical_path

ACCEPTED = [
    ("/", "/"),
    ("/healthz", "/healthz"),
    ("/api/items/7", "/api/items/7"),
    ("/api/", "/api/"),  # one trailing slash is a distinct, unambiguous path
    ("/a/b/c/", "/a/b/c/"),
    ("/a%20b", "/a b"),
    ("/%41%42c", "/ABc"),
    ("/caf%C3%A9", "/café"),
    ("/café", "/café"),  # raw non-ASCII, as decoding %C3%A9 would give
    ("/100%25", "/100%"),  # %25 not followed by two hex digits: a literal percent
    ("/100%25off", "/100%off"),
    ("/a.b/.hidden/...", "/a.b/.hidden/..."),  # dots that are not dot segments
    ("/a%2Eb", "/a.b"),
    ("/x/..y", "/x/..y"),
    ("/q=1&r=2", "/q=1&r=2"),  # only a '?' starts the query
    ("/~user/@me/:colon/[b]", "/~user/@me/:colon/[b]"),
    ("/a+b/a,b/a!b", "/a+b/a,b/a!b"),
    ("/wait\u2026", "/wait\u2026"),  # ellipsis normalises to '...', which is no dot segment
    ("/A/B", "/A/B"),  # case is kept (matching is case-sensitive)
]

REFUSED = [
    ("", "start with '/'"),
    ("api/x", "start with '/'"),
    ("/a%2Fb", "encoded slash"),
    ("/a%2fb", "encoded slash"),
    ("/a%5Cb", "encoded backslash"),
    ("/a%5cb", "encoded backslash"),
    ("/a\\b", "backslash"),
    ("/a%23b", "encoded '#'"),
    ("/a%3Fb", "encoded '?'"),
    ("/a%3fb", "encoded '?'"),
    ("/a#b", "'#'"),
    ("/a?b", "'?'"),
    ("/a%00b", "encoded control character (%00)"),
    ("/a%0Ab", "encoded control character (%0A)"),
    ("/a%0db", "encoded control character (%0D)"),
    ("/a%7Fb", "encoded control character (%7F)"),
    ("/a\x00b", "control character"),
    ("/a\nb", "control character"),
    ("/a\tb", "control character"),
    ("/a\x7fb", "control character"),
    ("/a%C2%85b", "control character (U+0085)"),  # C1 control, encoded
    ("/a\x85b", "control character"),
    ("/./a", "dot segment"),
    ("/a/.", "dot segment"),
    ("/a/..", "dot segment"),
    ("/a/../b", "dot segment"),
    ("/a/%2e/b", "dot segment"),
    ("/a/%2E%2E/b", "dot segment"),
    ("/a/.%2e/b", "dot segment"),
    ("/a/%2e./b", "dot segment"),
    ("/a;b", "';' path parameter"),
    ("/a;jsessionid=1/b", "';' path parameter"),
    ("/a%3Bb", "encoded ';'"),
    ("//a", "empty path segment"),
    ("/a//b", "empty path segment"),
    ("//", "empty path segment"),
    ("/a%", "invalid percent-encoding"),
    ("/a%4", "invalid percent-encoding"),
    ("/a%zz", "invalid percent-encoding"),
    ("/a%g1", "invalid percent-encoding"),
    ("/a%%41", "invalid percent-encoding"),
    ("/%252e%252e/", "double encoding"),
    ("/%252f", "double encoding"),
    ("/%2541", "double encoding"),
    ("/%25%32%65", "double encoding"),  # decodes to '%2e'
    ("/%FF", "not valid UTF-8"),
    ("/%C3", "not valid UTF-8"),
    ("/%C0%AF", "not valid UTF-8"),  # overlong '/'
    ("/a%EF%BC%8Fb", "normalises to a delimiter"),  # full-width solidus U+FF0F
    ("/a\uff3cb", "normalises to a delimiter"),  # full-width backslash
    ("/\uff0e\uff0e/x", "dot segment"),  # full-width dots
]


@pytest.mark.parametrize("raw,expected", ACCEPTED)
def test_accepted(raw, expected):
    assert canonical_path(raw) == expected


@pytest.mark.parametrize("raw,detail", REFUSED)
def test_refused(raw, detail):
    with pytest.raises(AmbiguousPath) as info:
        canonical_path(raw)
    assert detail in info.value.detail
    assert info.value.status == 400 and info.value.code == "ambiguous_path"


@pytest.mark.parametrize("raw,expected", ACCEPTED)
def test_idempotent_on_canonical_paths(raw, expected):
    if "%" not in expected:
        assert canonical_path(expected) == expected


def test_query_string_is_not_part_of_the_path():
    # The gateway passes only the path component; a '?' inside it is refused, never split.
    with pytest.raises(AmbiguousPath):
        canonical_path("/admin?x=/api")


_ALPHABET = st.sampled_from(
    list("/%.;\\#?aZ09-_~ ") + ["%2e", "%2E", "%2f", "%25", "%5c", "%3b", "%00", "%41", "%C3%A9", "%ff",
                                "\x00", "\n", "\x85", "é", "\uff0e", "\uff0f", "..", "//"]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(_ALPHABET, max_size=16).map(lambda parts: "/" + "".join(parts))))
def test_property_only_ambiguous_path_and_clean_output(raw):
    try:
        out = canonical_path(raw)
    except AmbiguousPath:
        return
    assert out.startswith("/")
    probe = out + "/"
    assert "//" not in out
    assert "/./" not in probe and "/../" not in probe
    if "%" not in out:
        assert canonical_path(out) == out


@pytest.mark.parametrize(
    "host,expected",
    [
        ("Example.COM", "example.com"),
        ("example.com:443", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("Example.com.:8443", "example.com"),
        ("[::1]:8443", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("example.com..", "example.com.."),  # not a name a URL parser produces: matches nothing
    ],
)
def test_canonical_host(host, expected):
    assert canonical_host(host) == expected
