"""QR codes for verification URLs: pure functions of the URL, SVG or PNG, error correction M or better.

segno picks the smallest version and boosts the error correction level when that costs no extra modules, so a
short URL often gets Q or H. The mask is chosen by segno's ISO 18004 penalty score (fixing it would save about 3 ms
but risk a pattern scanners find hard); the result is cached per URL instead, which makes repeats free.
"""

from __future__ import annotations

import io
from functools import lru_cache

import segno

QUIET_ZONE = 4  # modules of light border, the minimum ISO 18004 requires
_CACHE_SIZE = 2048


@lru_cache(maxsize=_CACHE_SIZE)
def _code(url: str) -> segno.QRCode:
    if not url:
        raise ValueError("a QR code needs a non-empty URL")
    return segno.make(url, error="m", micro=False, boost_error=True)


@lru_cache(maxsize=_CACHE_SIZE)
def qr_svg(url: str) -> bytes:
    """A scalable SVG (viewBox, no fixed size), dark on white, with a <title> naming the URL."""
    buffer = io.BytesIO()
    _code(url).save(
        buffer, kind="svg", scale=1, border=QUIET_ZONE, dark="#000", light="#fff", xmldecl=False,
        omitsize=True, title=f"QR code for {url}", nl=False,
    )  # fmt: skip
    return buffer.getvalue()


@lru_cache(maxsize=_CACHE_SIZE)
def qr_png(url: str, scale: int = 8) -> bytes:
    """A PNG with `scale` pixels per module (1 to 40)."""
    if not 1 <= scale <= 40:
        raise ValueError("scale must be between 1 and 40 pixels per module")
    buffer = io.BytesIO()
    _code(url).save(buffer, kind="png", scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
    return buffer.getvalue()
