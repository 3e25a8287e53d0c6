"""URLs the gateway fetches: the configured authority, and URLs named by its documents.

Every URL taken from a remote document (today the discovery document's `jwks_uri`; the
token, authorize and end-session endpoints once sign-in exists) goes through
`document_url`, and the fetch uses the string it returns.

Why one strict place: the URL used to be checked with Python's `urlsplit` and fetched with
the runtime's WHATWG parser, and the two disagree. `https://evil.example\\@login.example/keys`
is `login.example` to `urlsplit` (everything before the last `@` is user info) and
`evil.example` to WHATWG (a backslash ends the host in an https URL), so a discovery
document could have pointed the key fetch at another host, whose keys would then have been
written to KV for every isolate. Other disagreements: tabs and newlines (WHATWG deletes
them anywhere), `https:evil.example` (WHATWG supplies the slashes), dot segments and
percent-escapes (WHATWG resolves `..` and decodes the host), numeric hosts (`127.1`),
default ports, upper case, trailing dots, IDN.

So nothing is parsed leniently: the configured authority is reduced to the one spelling
WHATWG itself would print (`canonical_authority`), and a document's URL is accepted only if
it is that spelling followed by a path of unreserved characters (`document_url`). Such a
string has no part two parsers could read differently: no user info, no escapes, no dot or
empty segments, no query or fragment, nothing WHATWG rewrites. tests/runtime/test_urls.py
checks that WHATWG, inside workerd, reads every accepted URL as exactly this string.
"""

import re

# Entra's endpoints are a few segments of GUIDs, domain names and words; sign-in will append
# its own query to what is returned here.
MAX_URL_CHARS = 2048
MAX_HOST_CHARS = 253
DEFAULT_PORTS = {"https": 443, "http": 80}
# Plain http only to the local machine (a mock tenant): elsewhere anyone on the path could
# supply their own keys.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})

# scheme://host[:port][/], nothing else: no user info, path, query or fragment.
_AUTHORITY = re.compile(r"(?P<scheme>[A-Za-z]+)://(?P<host>[^/:\[\]]+|\[::1\])(?::(?P<port>[0-9]+))?/?", re.ASCII)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
# WHATWG reads a host whose last label is a number (decimal, or 0x hex) as IPv4: `login.0x1`
# is not a name to it, `127.1` is 127.0.0.1.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.ASCII)
_PORT = re.compile(r"[1-9][0-9]{0,4}", re.ASCII)
# One or more `/segment`, each of RFC 3986 unreserved characters, none of them `.` or `..`.
_PATH = re.compile(r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._~-]+)+", re.ASCII)


class UnsafeUrl(ValueError):
    """A URL that is not, character for character, on the configured authority."""


def canonical_authority(url: str) -> str:
    """The configured authority as WHATWG prints its origin: `scheme://host[:port]`, lower
    case, without a default port; ValueError for anything else (user info, a path, a query,
    escapes, IDN or IPv6 hosts other than [::1], numeric hosts other than a dotted quad)."""
    match = _AUTHORITY.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise ValueError("must be scheme://host[:port] with nothing after it")
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if scheme not in DEFAULT_PORTS:
        raise ValueError("must be an https URL")
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ValueError("must be an https URL (plain http is accepted only for a loopback host)")
    if not _valid_host(host):
        raise ValueError("host must be a DNS name of letters, digits and dashes (no IDN), or a dotted IPv4 address")
    if port is not None:
        if not _PORT.fullmatch(port) or int(port) > 65535:
            raise ValueError("port must be 1-65535, without leading zeros")
        if int(port) == DEFAULT_PORTS[scheme]:
            port = None  # WHATWG drops the scheme's own port: so does the spelling compared against
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def _valid_host(host: str) -> bool:
    if host == "[::1]" or _DOTTED_QUAD.fullmatch(host):
        return True
    labels = host.split(".")
    return (len(host) <= MAX_HOST_CHARS
            and all(_LABEL.fullmatch(label) and not label.startswith("xn--") for label in labels)
            and not _NUMERIC_LABEL.fullmatch(labels[-1]))


def document_url(url, authority: str) -> str:
    """The URL to fetch for `url`, named by a document of `authority` (a canonical_authority):
    the authority followed by `url`'s path, if `url` is exactly that; UnsafeUrl otherwise."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise UnsafeUrl("not a URL string of at most 2048 characters")
    if not url.startswith(authority + "/"):  # the "/" ends the host and port: no `authority.evil`
        raise UnsafeUrl("not on the configured authority (exactly as configured: scheme, host and port)")
    path = url[len(authority):]
    if not _PATH.fullmatch(path):
        raise UnsafeUrl("path must be /-separated segments of letters, digits and - . _ ~ (no escapes, "
                        "dot or empty segments, query or fragment)")
    return authority + path
