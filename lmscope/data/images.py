"""Captioned images made offline: rendered emoji and simple coloured shapes.

Emoji come from Debian's fonts-noto-color-emoji, rendered with Pillow and captioned from their Unicode names ("RED
APPLE" -> "a red apple"); shapes are drawn in colours ("a blue circle").

Every image is drawn from a seeded generator (background colour, size, position), so a split is a list of
seeds: the same concept appears in the training and held-out splits as different renderings, and a set of held-out
concepts never appears in training.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lmscope.errors import AssetError

EMOJI_FONTS = (Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
               Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"))
EMOJI_RANGES = ((0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF), (0x2600, 0x26FF))
EMOJI_SIZE = 109  # the one size Noto Color Emoji's bitmaps come in
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
    from PIL import Image, ImageDraw

    font = font or emoji_font()
    out = []
    for start, end in EMOJI_RANGES:
        for cp in range(start, end + 1):
            name = unicodedata.name(chr(cp), "")
            if not name or any(s in name for s in _SKIP):
                continue
            canvas = Image.new("RGBA", (EMOJI_SIZE + 27, EMOJI_SIZE + 19), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((0, 0), chr(cp), font=font, embedded_color=True)
            if canvas.getbbox():
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


def render(concept: Concept, size: int, seed: int, font=None):
    """The concept drawn on a ``size`` x ``size`` RGB canvas; background, scale and position come from ``seed``."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), _background(rng))
    side = int(size * rng.uniform(0.55, 0.9))
    x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
    if concept.kind == "shape":
        colour, shape = concept.key.split(" ")
        _draw_shape(ImageDraw.Draw(image), shape, COLOURS[colour], (x0, y0, x0 + side, y0 + side))
        return image
    glyph = Image.new("RGBA", (EMOJI_SIZE + 27, EMOJI_SIZE + 19), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((0, 0), concept.key, font=font or emoji_font(), embedded_color=True)
    glyph = glyph.crop(glyph.getbbox()).resize((side, side))
    image.paste(glyph, (x0, y0), glyph)
    return image
