"""Baked badges: the achievement's image with the signed credential inside (OB 3.0 §"Baking", via
`verifier.baking`), and a generated default image for achievements that have none.

Achievement images are URLs chosen by whoever wrote the achievement. `data:` URIs are decoded here; anything
else is fetched with `verifier.fetch.HttpFetcher` (https only, public addresses only, 2 MB, 5 s), accepted
only when its bytes are a PNG or an SVG, and otherwise replaced by the default image with a logged warning:
a badge download never fails because someone else's server did.

The default image draws no text, so it needs no fonts and looks right for an achievement named in any script;
its colour is chosen from the achievement's name, so different achievements look different.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from math import cos, pi, sin
from typing import Literal
from xml.sax.saxutils import escape

from verifier.baking import PNG_SIGNATURE, bake_png, bake_svg, detect_kind
from verifier.errors import FetchError, VerifierError

from .pdf import parse_data_uri

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 2_000_000
SIZE = 512  # pixels of the default badge (and its SVG viewBox)
# Muted, print-friendly colours (dark, light): a name always gets the same one.
PALETTE = (
    ("#1d3557", "#457b9d"),
    ("#1b4332", "#40916c"),
    ("#4c1d95", "#8e5cc7"),
    ("#7f1d1d", "#c0563a"),
    ("#134e4a", "#2a9d8f"),
    ("#1e3a8a", "#5b7fc7"),
    ("#713f12", "#c8922a"),
    ("#334155", "#64748b"),
)
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

ImageKind = Literal["png", "svg"]
ImageFetcher = Callable[..., bytes]


@dataclass(frozen=True)
class BadgeImage:
    kind: ImageKind
    data: bytes


# ------------------------------------------------------------------------------------------------ baking


def baked_png(credential_json: str, image_png: bytes | None, *, achievement_name: str) -> bytes:
    """A PNG carrying the credential (an `openbadgecredential` iTXt chunk); the default image when none is given."""
    return bake_png(image_png or default_badge_png(achievement_name), credential_json)


def baked_svg(credential_json: str, image_svg: bytes | None, *, achievement_name: str) -> bytes:
    """An SVG carrying the credential (`<openbadges:credential>`); the default image when none is given."""
    return bake_svg(image_svg or default_badge_svg(achievement_name), credential_json)


def png_as_svg(png: bytes) -> bytes:
    """An SVG that shows a PNG at its own size: how a PNG-only achievement gets a baked SVG."""
    if not png.startswith(PNG_SIGNATURE) or len(png) < 24:
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<image width="{width}" height="{height}" href="data:image/png;base64,{data}" '
        f'xlink:href="data:image/png;base64,{data}"/></svg>'
    ).encode("ascii")


# ------------------------------------------------------------------------------------------------ the image


def achievement_image(image: object, fetcher: ImageFetcher) -> BadgeImage | None:
    """The achievement's image (`achievement.image`: an Image object or a URL) as PNG or SVG bytes, or None.

    None when there is no image, or it cannot be had safely (logged): the caller uses the default image.
    """
    url = image.get("id") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        return None
    try:
        if url[:5].lower() == "data:":
            _media_type, data = parse_data_uri(url)
        else:
            data = fetcher(url, accept="image/png, image/svg+xml;q=0.9")
    except (ValueError, FetchError, VerifierError) as error:
        log.warning("achievement image %s not used, baking into the default image: %s", url[:200], error)
        return None
    if len(data) > MAX_IMAGE_BYTES:
        log.warning("achievement image %s is larger than %d bytes; using the default image", url[:200], MAX_IMAGE_BYTES)
        return None
    kind = detect_kind(data)
    if kind not in ("png", "svg"):
        log.warning("achievement image %s is neither PNG nor SVG; using the default image", url[:200])
        return None
    return BadgeImage(kind, data)


# ------------------------------------------------------------------------------------------------ default image


def badge_colours(name: str, colour: str | None = None) -> tuple[str, str]:
    """(dark, light): `colour` as the dark one when it is `#rrggbb`, else a palette entry chosen by the name."""
    if colour is not None and _HEX.fullmatch(colour):
        return colour.lower(), _mix(colour, "#ffffff", 0.35)
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def _mix(a: str, b: str, t: float) -> str:
    ca, cb = _rgb(a), _rgb(b)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


# The drawing, in a 512-unit square: two ribbon tails, a medal with a white ring, a five-pointed star.
_CENTRE = (256.0, 214.0)
_LEFT_TAIL = ((206.0, 318.0), (150.0, 488.0), (198.0, 462.0), (226.0, 506.0), (266.0, 338.0))
_RIGHT_TAIL = tuple((512.0 - x, y) for x, y in _LEFT_TAIL)
_MEDAL, _RING, _RING_WIDTH, _FACE = 186.0, 163.0, 7.0, 148.0


def _star(outer: float = 88.0, inner: float = 36.0) -> list[tuple[float, float]]:
    cx, cy = _CENTRE
    return [
        (cx + r * cos(-pi / 2 + k * pi / 5), cy + r * sin(-pi / 2 + k * pi / 5))
        for k, r in ((k, outer if k % 2 == 0 else inner) for k in range(10))
    ]


@lru_cache(maxsize=256)
def default_badge_svg(name: str, colour: str | None = None) -> bytes:
    """The default badge as SVG: vector, 512×512, the achievement's name as its <title>."""
    dark, light = badge_colours(name, colour)
    tail = _mix(dark, "#000000", 0.25)
    cx, cy = _CENTRE

    def points(shape: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in shape)

    title = escape(_NOT_XML.sub("", name)[:300] or "Badge")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}">'
        f"<title>{title}</title>"
        f'<polygon points="{points(_LEFT_TAIL)}" fill="{tail}"/>'
        f'<polygon points="{points(_RIGHT_TAIL)}" fill="{tail}"/>'
        f'<circle cx="{cx:g}" cy="{cy:g}" r="{_MEDAL:g}" fill="{dark}"/>'
        f'<circle cx="{cx:g}" cy="{cy:g}" r="{_RING:g}" fill="none" stroke="#ffffff" stroke-width="{_RING_WIDTH:g}"/>'
        f'<circle cx="{cx:g}" cy="{cy:g}" r="{_FACE:g}" fill="{light}"/>'
        f'<polygon points="{points(_star())}" fill="#ffffff"/>'
        "</svg>"
    ).encode()


@lru_cache(maxsize=256)
def default_badge_png(name: str, colour: str | None = None) -> bytes:
    """The same drawing as `default_badge_svg`, rasterised with Pillow (4× supersampled, then downscaled)."""
    from PIL import Image, ImageDraw

    dark, light = badge_colours(name, colour)
    tail = _mix(dark, "#000000", 0.25)
    k = 4
    image = Image.new("RGBA", (SIZE * k, SIZE * k), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)

    def scaled(shape: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * k, y * k) for x, y in shape]

    def disc(radius: float, fill: str) -> None:
        cx, cy = _CENTRE
        draw.ellipse([(cx - radius) * k, (cy - radius) * k, (cx + radius) * k, (cy + radius) * k], fill=fill)

    draw.polygon(scaled(_LEFT_TAIL), fill=tail)
    draw.polygon(scaled(_RIGHT_TAIL), fill=tail)
    disc(_MEDAL, dark)
    disc(_RING + _RING_WIDTH / 2, "#ffffff")
    disc(_RING - _RING_WIDTH / 2, dark)
    disc(_FACE, light)
    draw.polygon(scaled(_star()), fill="#ffffff")
    out = io.BytesIO()
    image.resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(out, format="PNG", optimize=True)
    return out.getvalue()
