"""The path and host that policy matching sees.

Policy must match the path the origin will act on. The gateway forwards the request's raw
path unchanged, so the only safe thing to match on is a decoding of that raw path whose
segment structure cannot differ from what any reasonable origin reads. `canonical_path`
accepts what is unambiguous, decodes it, and refuses (raises `AmbiguousPath`, a 400) what is
not, rather than guessing.

Input: the path component of the request URL exactly as received — percent-encoded, as the
WHATWG URL parser in the Workers runtime leaves it (`new URL(request.url).pathname`). Never
the query string, never `X-Forwarded-*` / `X-Original-*` headers: those are not consulted
anywhere in matching.

Output: the decoded path (a `str`) that routes are matched against, segment by segment, as
written; other spellings of it are handled by the policy (below, `fold_path`).

Rules, in the order they are applied (the first that fails names the refusal):

1. The path must start with `/`.
2. Every `%` must be followed by two hex digits (`invalid percent-encoding`).
3. Encoded characters that would change structure or meaning are refused:
   `%2F` (encoded slash), `%5C` (encoded backslash), `%23` / `%3F` (encoded `#` / `?`),
   `%3B` (encoded `;`), `%00`-`%1F` and `%7F` (encoded control characters), and `%25`
   followed by two hex digits (double encoding such as `%252e`, `%252f`).
4. The remaining escapes are decoded as UTF-8; bytes that are not valid UTF-8 are refused.
5. In the decoded path (which includes every raw character, so the rules hold for raw and
   encoded forms alike) these characters are refused: `\\` (backslash), `#`, `?`, `;`
   (path parameters, which some servers strip and others keep), and any control character
   (Unicode category Cc: C0, DEL and C1).
6. A `%` that survives decoding must not start a new escape (`%` + two hex digits): an
   origin that decodes twice would read something else (double encoding, e.g.
   `%25%32%65`).
7. Segments (the text between `/`): an empty segment (`//`) is refused; a single trailing
   `/` is allowed (`/a/` is a path distinct from `/a`). Dot segments `.` and `..` are
   refused whether raw or percent-encoded (`%2e`, `.%2E` ...).
8. Non-ASCII characters whose compatibility normalisation (NFKC) contains `/`, `\\`, `?`,
   `#`, `;` or `%`, or a segment whose NFKC form is `.` or `..` (full-width dots), are refused:
   some servers apply Unicode normalisation after decoding.
9. A segment that begins or ends with whitespace (`%20`, `%C2%A0`, any Unicode space) is
   refused: some frameworks trim path segments before routing (Spring's AntPathMatcher
   `trimTokens`, CVE-2016-5007), so `/admin%20` would be matched here as a path other than
   the one the origin serves. Whitespace inside a segment (`/a%20b`) is fine.

Accepted escapes (`%41`, `%20`, `%C3%A9`, `%25` not followed by two hex digits, ...) are
decoded; their decoding cannot change the segment structure. Because the same rules apply
to decoded and raw characters, a canonical path that contains no `%` is its own canonical
form (`canonical_path(canonical_path(p)) == canonical_path(p)` for such paths).

Spellings (`fold_path`): many origins serve several spellings of a path as one resource, so
a policy that routed them differently could be bypassed by respelling (see `fold_path` for
the classes and the origins behind them). The policy uses the folded form either to refuse
a spelling that would be routed differently from its folded form (the default) or to match
on it (`spellings = "fold"`); see `policy.py`.

Hosts (`canonical_host`): compared lower-cased, without a port (`:443` and any other
`:digits` suffix are dropped; `[v6]:port` keeps the bracketed literal). A single trailing
dot is stripped: `example.com.` is the same DNS name as `example.com`, and matching it as a
different host would let a request slip from an exact-host route to a less specific one.
Policy files may not contain trailing dots or ports.
"""

import re
import unicodedata

from .errors import AmbiguousPath

_HEX = "0123456789abcdefABCDEF"
# Fast path: printable ASCII without space % \ # ? ; needs no decoding, only the segment checks.
_SIMPLE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset("%\\#?;")
_DOUBLE_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_REFUSED_DECODED = {
    "\\": "backslash",
    "#": "'#' in path",
    "?": "'?' in path",
    ";": "';' path parameter",
}
_NFKC_REFUSED = frozenset("/\\?#;%")


def _refuse_escape(byte: int) -> str | None:
    if byte == 0x2F:
        return "encoded slash (%2F)"
    if byte == 0x5C:
        return "encoded backslash (%5C)"
    if byte == 0x23:
        return "encoded '#' (%23)"
    if byte == 0x3F:
        return "encoded '?' (%3F)"
    if byte == 0x3B:
        return "encoded ';' (%3B)"
    if byte < 0x20 or byte == 0x7F:
        return f"encoded control character (%{byte:02X})"
    return None


def _decode(raw: str) -> str:
    parts = raw.split("%")
    out = bytearray(parts[0].encode("utf-8", "surrogatepass"))
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            raise AmbiguousPath("invalid percent-encoding")
        byte = int(part[:2], 16)
        why = _refuse_escape(byte)
        if why is not None:
            raise AmbiguousPath(why)
        if byte == 0x25 and len(part) >= 4 and part[2] in _HEX and part[3] in _HEX:
            raise AmbiguousPath("double encoding (%25 followed by two hex digits)")
        out.append(byte)
        out += part[2:].encode("utf-8", "surrogatepass")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousPath("percent-encoded bytes are not valid UTF-8") from None


def canonical_path(raw_path: str) -> str:
    """Decode `raw_path` for matching, or raise `AmbiguousPath`. See the module docstring."""
    if not isinstance(raw_path, str) or not raw_path.startswith("/"):
        raise AmbiguousPath("path must start with '/'")
    if _SIMPLE_CHARS.issuperset(raw_path):
        probe = raw_path + "/"
        if "//" not in raw_path and "/./" not in probe and "/../" not in probe:
            return raw_path
    path = _decode(raw_path) if "%" in raw_path else raw_path
    for ch in path:
        if ch in _REFUSED_DECODED:
            raise AmbiguousPath(_REFUSED_DECODED[ch])
        if ch < " " or "\x7f" <= ch <= "\x9f":
            raise AmbiguousPath(f"control character (U+{ord(ch):04X})")
    if "%" in path and _DOUBLE_ESCAPE.search(path):
        raise AmbiguousPath("double encoding (decoded path still contains a %XX escape)")
    segments = path[1:].split("/")
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if not seg:
            if i != last:
                raise AmbiguousPath("empty path segment (//)")
            continue
        if seg == "." or seg == "..":
            raise AmbiguousPath(f"dot segment '{seg}' (raw or percent-encoded)")
        if not seg.isascii():
            _check_unicode(seg)
        if seg[0].isspace() or seg[-1].isspace():
            raise AmbiguousPath("path segment begins or ends with whitespace")
    return path


def _check_unicode(seg: str) -> None:
    for ch in seg:
        if ch > "\x7f":
            folded = unicodedata.normalize("NFKC", ch)
            if folded != ch and not _NFKC_REFUSED.isdisjoint(folded):
                raise AmbiguousPath(f"character U+{ord(ch):04X} normalises to a delimiter")
    if unicodedata.normalize("NFKC", seg) in (".", ".."):
        raise AmbiguousPath("segment normalises to a dot segment")


# What origins treat as one path (checked against their code and documentation):
# - letter case: ASP.NET Core routing and IIS / Windows file names ignore case; Express's
#   router ignores it unless `caseSensitive` (app setting "case sensitive routing") is set.
# - one trailing slash: Express unless `strict` ("strict routing"); ASP.NET Core routing;
#   Rails (Journey's normalize_path strips it); Spring MVC before 6.0 (`trailingSlashMatch`
#   defaulted to true, deprecated and false since 6.0).
# - a format suffix on the last segment: Rails routes carry `(.:format)` by default
#   (`/users/1.json` is `/users/1`); Spring MVC before 5.3 matched `/users` as `/users.*`
#   (`useSuffixPatternMatch`); Windows drops trailing dots (`/admin.` is `/admin`).
# - Unicode compatibility forms (NFKC: `ａdmin`, `ﬁle`) for origins that normalise.
# The fold is deliberately wider than any single origin: a wider class can only make the
# gateway refuse (or match together) a few more spellings, a narrower one lets some through.
_FOLD_TO_ASCII = str.maketrans({"\u0130": "i", "\u0131": "i"})  # İ, ı: Java/.NET read them as i/I


def fold_segment(segment: str) -> str:
    """One path segment in its case-folded form: ASCII lower-case, else NFKC + Unicode case
    folding (with the dotted/dotless i of Turkish read as i, as Java's equalsIgnoreCase does)."""
    if segment.isascii():
        return segment.lower()
    folded = unicodedata.normalize("NFKC", segment.translate(_FOLD_TO_ASCII))
    return unicodedata.normalize("NFKC", folded.casefold())


def strip_suffix(segment: str) -> str:
    """`name.json` -> `name`: everything from the first dot that does not start the segment
    (Spring matched `/users` as `/users.*`; `.well-known` keeps its leading dot)."""
    dot = segment.find(".", 1)
    return segment if dot == -1 else segment[:dot]


def fold_path(path: str) -> str:
    """The spelling class of a canonical path: every segment case-folded, one trailing slash
    removed, then a format suffix stripped from the last segment. `/Admin/Users.JSON/`,
    `/admin/users.xml` and `/ADMIN/users` all fold to `/admin/users`. Never raises."""
    if path.isascii():
        folded = path.lower()
    else:  # segment by segment: normalisation must not join characters across a '/'
        folded = "/".join(fold_segment(seg) for seg in path.split("/"))
    if len(folded) > 1 and folded[-1] == "/":
        folded = folded[:-1]
    slash = folded.rfind("/")
    dot = folded.find(".", slash + 2)
    return folded if dot == -1 else folded[:dot]


def host_without_port(host: str) -> str:
    """Lower-cased, without a port; an IPv6 literal keeps its brackets. Never raises."""
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")
    if colon != -1 and (host[colon + 1 :].isdigit() or colon == len(host) - 1):
        host = host[:colon]
    return host


def canonical_host(host: str) -> str:
    """Lower-case, drop a port, strip one trailing dot. Never raises; an odd host simply
    matches no host-specific route."""
    host = host_without_port(host)
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    return host
