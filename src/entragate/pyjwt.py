"""PyJWT as the edge uses it: the library's own parsing and claim checks, its other costs removed.

1. Import. `import jwt` runs jwt/__init__, which imports jwt.jwks_client and with it
   urllib.request, http.client, ssl and the email package: about 0.3 s of a Pyodide cold
   start, for a client the edge never uses (signing keys come from Workers fetch, keys.py).
   Under Pyodide a stand-in takes its place; constructing PyJWKClient through it raises.
   Likewise jwt.algorithms, PyJWT's own signature algorithms (HMAC, and RSA/EC through the
   `cryptography` package, which the edge does not have): the edge verifies signatures with
   WebCrypto, never through PyJWT, and compiling that module and importing `hmac` for it cost
   ~40 ms of a cold start. Its stand-in registers no algorithm at all, so PyJWT at the edge
   cannot verify anything, `none` and HS256 included: a call that asked it to would fail.
   On the host PyJWT is imported as it is (the origin helper uses PyJWKClient).
2. `calendar`. jwt.api_jwt imports `calendar.timegm` at import time, for encoding datetime
   claims, which the edge never does; importing calendar (enum classes, locale tables) costs
   50-80 ms of a Pyodide cold start. Under Pyodide, if nothing has imported it yet, a lazy
   stand-in is registered: the first call of `timegm` or use of any other attribute imports
   the real module, which then replaces the stand-in. Behaviour is the stdlib's, only later.
3. Segment decoding. PyJWT 2.15 checks the base64url alphabet one character at a time in a
   Python generator (GHSA-hxm8-2xgr-2p9m), ~0.2 ms per token on CPython and more in Pyodide.
   StrictJWS does the same check with one compiled regular expression, checks PyJWT's
   canonical-encoding rule on the last character instead of re-encoding the segment, and
   additionally refuses `=` padding, which Entra never sends.
"""

import binascii
import importlib
import re
import sys
import types

if sys.platform == "emscripten" and "jwt" not in sys.modules:
    _stand_in = types.ModuleType("jwt.jwks_client")

    class PyJWKClient:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("PyJWKClient is not loaded at the edge; signing keys come from entragate.keys")

    _stand_in.PyJWKClient = PyJWKClient
    sys.modules["jwt.jwks_client"] = _stand_in

    _no_algorithms = types.ModuleType("jwt.algorithms")

    class Algorithm:
        """PyJWT's algorithm base class; at the edge no algorithm derives from it."""

    def get_default_algorithms() -> dict:
        return {}

    _no_algorithms.Algorithm = Algorithm
    _no_algorithms.get_default_algorithms = get_default_algorithms
    _no_algorithms.has_crypto = False
    _no_algorithms.requires_cryptography = frozenset()
    sys.modules["jwt.algorithms"] = _no_algorithms

    if "calendar" not in sys.modules:

        def _real_calendar():
            if sys.modules.get("calendar") is _lazy_calendar:
                del sys.modules["calendar"]
            return importlib.import_module("calendar")

        class _LazyCalendar(types.ModuleType):
            def __getattr__(self, name):
                if name.startswith("__"):  # the import system probing (`__path__`), not a user
                    raise AttributeError(name)
                return getattr(_real_calendar(), name)

        def _timegm(time_tuple):
            return _real_calendar().timegm(time_tuple)

        _lazy_calendar = _LazyCalendar("calendar")
        _lazy_calendar.timegm = _timegm
        sys.modules["calendar"] = _lazy_calendar

import jwt  # noqa: E402
from jwt.api_jws import PyJWS  # noqa: E402
from jwt.exceptions import DecodeError  # noqa: E402
from jwt.utils import base64url_decode  # noqa: E402

class StrictDecodeError(DecodeError):
    """A refusal by entragate's own strict reading rather than PyJWT's: its message names the
    rule and holds nothing taken from the token, so the 401 can say which rule refused."""


_SEGMENT_NAMES = {"crypto": "signature"}
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*+")  # possessive: no backtrack points to record
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# By length mod 4: 1 is never base64; the last character of a segment of length 2 or 3 carries
# 4 or 2 bits that encode no data, which base64url_encode writes as zero, so a segment is
# canonical exactly when they are zero (False: refused; None: nothing to check).
_CANONICAL_LAST = {0: None, 2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}


class StrictJWS(PyJWS):
    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        """PyJWT's decoding, without its per-character Python loop and its re-encoding check
        (same verdicts: tests/host/test_pyjwt.py compares the two)."""
        canonical_last = _CANONICAL_LAST.get(len(segment) % 4, False)
        if canonical_last is False or not _BASE64URL.fullmatch(segment):
            raise StrictDecodeError(f"{_SEGMENT_NAMES.get(name, name)} segment is not unpadded base64url")
        if canonical_last is not None and segment[-1] not in canonical_last:
            # non-canonical trailing bits: another spelling of the same bytes
            raise StrictDecodeError(f"{_SEGMENT_NAMES.get(name, name)} segment is not canonical base64url")
        padding = b"=" * (-len(segment) % 4)
        return binascii.a2b_base64(segment.translate(_URLSAFE_TO_STANDARD) + padding, strict_mode=True)


__all__ = ["jwt", "StrictJWS", "StrictDecodeError", "base64url_decode"]
