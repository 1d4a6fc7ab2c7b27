"""Captioned images made offline: rendered emoji and simple coloured shapes.

Emoji come from Debian's fonts-noto-color-emoji, rendered with Pillow and captioned from their Unicode names ("RED
APPLE" -> "a red apple"); shapes are drawn in colours ("a blue circle").

Every image is drawn from a seeded generator (background colour, size, position), so a split is a list of
seeds: the same concept appears in the training and held-out splits as different renderings, and a set of held-out
concepts never appears in training.

A user's image is read by :func:`read_image`: its size is checked from the header before anything is decoded, and a
JPEG larger than needed is decoded at a reduced size (Pillow's draft mode).
"""

from __future__ import annotations

import random
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lmscope.errors import AssetError, InputError

EMOJI_FONTS = (Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
               Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"))
EMOJI_RANGES = ((0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF), (0x2600, 0x26FF))
EMOJI_SIZE = 109  # the one size Noto Color Emoji's bitmaps come in
MAX_PIXELS = 50_000_000  # decoded at most (50 megapixels: ~0.2 GB as RGBA); Pillow's own limit is 179 million
DRAFT_SIDE = 1024  # a JPEG wider and taller than this is decoded at 1/2, 1/4 or 1/8 scale, keeping both sides >= it
COLOURS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (235, 205, 40),
           "orange": (245, 140, 30), "purple": (140, 60, 180), "black": (20, 20, 20), "pink": (240, 130, 180)}
SHAPES = ("circle", "square", "triangle", "star")
_SKIP = ("SKIN TONE", "REGIONAL INDICATOR", "VARIATION", "COMBINING", "ZERO WIDTH", "TAG ")


@dataclass(frozen=True)
class Concept:
    """One thing an image can show: how to draw it and what to call it."""

    kind: str  # "emoji" or "shape"
    key: str  # the emoji character, or "colour shape"
    caption: str  # "a red apple"


def emoji_font(path: str | Path | None = None):
    """Noto Color Emoji as a Pillow font; :class:`AssetError` with the install command when it is missing."""
    from PIL import ImageFont

    candidates = [Path(path)] if path else list(EMOJI_FONTS)
    for p in candidates:
        if p.is_file():
            return ImageFont.truetype(str(p), EMOJI_SIZE)
    raise AssetError("no emoji font: install Debian's fonts-noto-color-emoji (apt-get install -y "
                     "fonts-noto-color-emoji) or pass its path")


def _caption(name: str) -> str:
    words = name.lower()
    return f"an {words}" if words[0] in "aeiou" else f"a {words}"


def emoji_concepts(font=None) -> list[Concept]:
    """Every emoji of :data:`EMOJI_RANGES` that has a Unicode name and a glyph in the font, in code point order."""
    font = font or emoji_font()
    out = []
    for start, end in EMOJI_RANGES:
        for cp in range(start, end + 1):
            name = unicodedata.name(chr(cp), "")
            if not name or any(s in name for s in _SKIP):
                continue
            if emoji_glyph(chr(cp), font) is not None:
                out.append(Concept("emoji", chr(cp), _caption(name)))
    return out


def shape_concepts() -> list[Concept]:
    """Every colour x shape."""
    return [Concept("shape", f"{c} {s}", f"a {c} {s}") for c in COLOURS for s in SHAPES]


def _background(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(200, 255) for _ in range(3))  # light, so the object stands out


def _draw_shape(draw, shape: str, colour: tuple, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    else:  # a five-pointed star
        import math
        pts = [(cx + (r if i % 2 == 0 else r / 2.5) * math.sin(i * math.pi / 5),
                cy - (r if i % 2 == 0 else r / 2.5) * math.cos(i * math.pi / 5)) for i in range(10)]
        draw.polygon(pts, fill=colour)


def render(concept: Concept, size: int, seed: int, font=None, rotation: float = 0.0):
    """The concept drawn on a ``size`` x ``size`` RGB canvas; background, scale, position and angle come from ``seed``.

    The angle is drawn within ``rotation`` degrees either way; with ``rotation=0`` none is drawn, so a seed gives the
    image it gave before rotations existed.
    """
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), _background(rng))
    side = int(size * rng.uniform(0.55, 0.9))
    x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
    angle = rng.uniform(-rotation, rotation) if rotation else 0.0
    if concept.kind == "shape" and not angle:
        colour, shape = concept.key.split(" ")
        _draw_shape(ImageDraw.Draw(image), shape, COLOURS[colour], (x0, y0, x0 + side, y0 + side))
        return image
    layer = _object(concept, side, font)
    if angle:  # turned about its centre, the canvas grown to hold it, then brought back to side x side
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True).resize((side, side))
    image.paste(layer, (x0, y0), layer)
    return image


def _object(concept: Concept, side: int, font=None):
    """The concept alone on a transparent ``side`` x ``side`` RGBA layer."""
    from PIL import Image, ImageDraw

    if concept.kind == "shape":
        colour, shape = concept.key.split(" ")
        layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        _draw_shape(ImageDraw.Draw(layer), shape, COLOURS[colour] + (255,), (0, 0, side, side))
        return layer
    return emoji_glyph(concept.key, font).resize((side, side))


def emoji_glyph(char: str, font=None):
    """The emoji at the font's one size (109 px) on a transparent layer cropped to its ink; None without a glyph."""
    from PIL import Image, ImageDraw

    glyph = Image.new("RGBA", (EMOJI_SIZE + 27, EMOJI_SIZE + 19), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((0, 0), char, font=font or emoji_font(), embedded_color=True)
    box = glyph.getbbox()
    return glyph.crop(box) if box else None


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS, draft_side: int = DRAFT_SIDE):
    """The image at ``path`` as RGB; one :class:`InputError` when it is missing, not an image, or too large.

    The size is read from the header first: an image that would decode to more than ``max_pixels`` pixels is refused
    before a byte of it is decoded. A JPEG is decoded at the smallest scale (1/2, 1/4, 1/8) that keeps both sides at
    least ``draft_side`` (the vision encoders take a few hundred pixels), so a large photo is read cheaply; other
    formats cannot be decoded reduced and count at their full size.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image")
    try:
        with warnings.catch_warnings():  # Pillow warns above 89 million pixels; the limit below is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError as err:
        raise InputError(f"no image at {path}") from err
    except Image.DecompressionBombError as err:  # above twice Pillow's limit: refused before our check can run
        raise InputError(_too_large(path, _header_size(path), max_pixels, str(err))) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path} is not an image Pillow can read ({err})") from err
    with image:
        size = image.size
        if min(size) >= draft_side:
            image.draft("RGB", (draft_side, draft_side))  # a JPEG only: other formats ignore it
        if image.size[0] * image.size[1] > max_pixels:
            raise InputError(_too_large(path, size, max_pixels))
        try:
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as err:
            raise InputError(f"{path} is not an image Pillow can read ({err})") from err


def _too_large(path: Path, size: tuple[int, int] | None, max_pixels: int, detail: str = "") -> str:
    what = f"{size[0]:,} x {size[1]:,} pixels ({size[0] * size[1]:,})" if size else f"too large ({detail})"
    return (f"{path} is {what}; at most {max_pixels:,} pixels are decoded (a JPEG counts at the reduced size it "
            "is decoded at): scale it down first")


def _header_size(path: Path) -> tuple[int, int] | None:
    """The width and height the file's header claims, read without Pillow's size check (None: not found)."""
    from PIL import Image

    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:  # as Image.open tries the formats, minus its decompression-bomb check
            factory, accept = Image.OPEN[fmt]
            accepted = accept is None or accept(prefix)
            if isinstance(accepted, str) or not accepted:  # a str: the format's reason to refuse
                continue
            fp.seek(0)
            try:
                return tuple(factory(fp, str(path)).size)
            except (SyntaxError, IndexError, TypeError, ValueError, OSError, struct.error,
                    Image.DecompressionBombError):
                continue
    return None
