"""StrictJWS decodes exactly the canonical unpadded base64url that PyJWT's own check accepts."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from entragate.pyjwt import StrictJWS


def encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@pytest.mark.parametrize("segment", [b"ab!c", b"ab+c", b"ab/c", b"a", b"abcde", b"ab c", b"YQ==", b"YR", b"\xc3\xa9"])
def test_refuses_what_is_not_canonical_unpadded_base64url(segment):
    with pytest.raises(DecodeError):
        StrictJWS._decode_base64url_segment(segment, "payload")


@given(st.binary(max_size=64))
def test_agrees_with_pyjwt_on_canonical_segments(data):
    segment = encode(data)
    assert StrictJWS._decode_base64url_segment(segment, "x") == PyJWS._decode_base64url_segment(segment, "x") == data


@given(st.binary(max_size=24))
def test_never_accepts_what_pyjwt_refuses(segment):
    try:
        PyJWS._decode_base64url_segment(segment, "x")
    except DecodeError:
        with pytest.raises(DecodeError):
            StrictJWS._decode_base64url_segment(segment, "x")



@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=63))
def test_non_canonical_last_character_is_refused_like_pyjwt(data, replacement):
    segment = bytearray(encode(data))
    segment[-1] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[replacement]
    segment = bytes(segment)
    try:
        expected = PyJWS._decode_base64url_segment(segment, "x")
    except DecodeError:
        with pytest.raises(DecodeError):
            StrictJWS._decode_base64url_segment(segment, "x")
    else:
        assert StrictJWS._decode_base64url_segment(segment, "x") == expected


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=12))
def test_same_verdict_as_pyjwt_on_any_base64url_text(text):
    """Every length and every last character: StrictJWS accepts exactly the unpadded segments
    PyJWT accepts, and decodes them to the same bytes."""
    segment = text.encode()
    try:
        expected = PyJWS._decode_base64url_segment(segment, "x")
    except DecodeError:
        expected = None
    if expected is None or b"=" in segment:
        with pytest.raises(DecodeError):
            StrictJWS._decode_base64url_segment(segment, "x")
    else:
        assert StrictJWS._decode_base64url_segment(segment, "x") == expected
