"""Where each image token of a vision-language model's input comes from: the frame it reads and its pixel box.

A *frame* is one picture the vision tower sees: a tile, a base or global view, or the whole image. The *image* is
the input image as the model knows it: as the processor resized it (LLaVA, PaliGemma, Gemma 3, Qwen2-VL: the
pixels it was given; Idefics3 / SmolVLM: the resized image its tiles were cut from), or at its original size for
LLaVA-NeXT (``image_sizes``). Boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive; a pixel (row i, column j)
belongs to a box when its centre (j + 0.5, i + 0.5) does.

Per family, in input order (one image a batch row):

- LLaVA, PaliGemma: one token per vision patch, a row-major grid over the image.
- Gemma 3: the patch grid average-pooled (kernel k): a token covers k x k patches.
- Qwen2-VL / Qwen2.5-VL: ``spatial_merge_size``^2 patches a token, row-major over the ``image_grid_thw`` grid
  (Qwen2.5-VL's window order is undone by the model before the decoder).
- Idefics3 / SmolVLM: the tiles (rows x cols, row-major), then the global image; pixel shuffle merges
  ``scale_factor``^2 patches into a token, row-major in each frame.
- LLaVA-NeXT: the base image (squashed to a square) then the tiles as one grid, unpadded as the model unpads it,
  each grid row ended by an image-newline token, which covers no pixels (frame -1, NaN boxes).

Nothing here runs the model: the layouts follow the families' own code, and the tests check them against it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmscope.errors import FamilySpecError, InputError, LmscopeError

log = logging.getLogger(__name__)

NO_VIEW = -1  # ``view`` of a token that belongs to no view of the image (a LLaVA-NeXT row end)


@dataclass
class TokenLayout:
    """Where one batch row's image tokens come from, in the order they stand in the input (n image tokens)."""

    frame: torch.Tensor  # (n,) long: the frame each token reads (-1: none)
    frame_box: torch.Tensor  # (n, 4) float: the token's pixels in its frame (NaN: none)
    box: torch.Tensor  # (n, 4) float: the token's pixels in the image (NaN: none, or padding only)
    view: torch.Tensor  # (n,) long: 0 the base / global / only view, 1 the tiles (t: temporal patch t); -1 none
    size: tuple[int, int]  # (height, width) of the image
    grid: tuple[int, int] | None = None  # (rows, cols) when the tokens are one row-major grid over the image


def image_token_id(config) -> int | None:
    """The image placeholder id of a vision-language model's config (``image_token_id`` or ``image_token_index``)."""
    for name in ("image_token_id", "image_token_index"):
        token = getattr(config, name, None)
        if token is not None:
            return int(token)
    return None


def _grid_boxes(rows: int, cols: int, cell_h: float, cell_w: float) -> torch.Tensor:
    """(rows * cols, 4) boxes of a row-major grid of cells."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    r, c = r.flatten().double(), c.flatten().double()
    return torch.stack([c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h], 1)


def _scaled(boxes: torch.Tensor, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> torch.Tensor:
    """Boxes mapped by x -> x * sx + dx, y -> y * sy + dy."""
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype) + torch.tensor([dx, dy, dx, dy],
                                                                                    dtype=boxes.dtype)


def _one_grid(rows: int, cols: int, cell: float, size: tuple[int, int]) -> TokenLayout:
    """One frame that is the image, tokens a row-major grid of ``cell``-pixel squares."""
    boxes = _grid_boxes(rows, cols, cell, cell)
    n = rows * cols
    return TokenLayout(torch.zeros(n, dtype=torch.long), boxes, boxes.clone(), torch.zeros(n, dtype=torch.long),
                       size, (rows, cols))


def _images_per_row(count: int, batch: int, what: str) -> None:
    if count != batch:
        raise InputError(f"image token layouts map one image a row: {count} {what} for {batch} rows")


def _square_grid(model, inputs: dict, side: int, cell: float) -> list[TokenLayout]:
    pixels = inputs["pixel_values"]  # (images, channels, height, width)
    _images_per_row(pixels.shape[0], inputs["input_ids"].shape[0], "images")
    return [_one_grid(side, side, cell, tuple(pixels.shape[-2:])) for _ in range(pixels.shape[0])]


def _llava(model, inputs: dict, tiles, tokenizer) -> list[TokenLayout]:
    vision = model.config.vision_config
    if getattr(model.config, "vision_feature_select_strategy", "default") != "default":
        raise FamilySpecError("image token layouts: a vision_feature_select_strategy other than 'default' keeps the "
                              "CLS token among the image tokens, which covers no one patch")
    pixels = inputs["pixel_values"]  # (images, channels, height, width): the tower reads the size it is given
    _images_per_row(pixels.shape[0], inputs["input_ids"].shape[0], "images")
    rows, cols = pixels.shape[-2] // vision.patch_size, pixels.shape[-1] // vision.patch_size
    return [_one_grid(rows, cols, vision.patch_size, tuple(pixels.shape[-2:])) for _ in range(pixels.shape[0])]


def _paligemma(model, inputs: dict, tiles, tokenizer) -> list[TokenLayout]:
    vision = model.config.vision_config
    return _square_grid(model, inputs, vision.image_size // vision.patch_size, vision.patch_size)


def _gemma3(model, inputs: dict, tiles, tokenizer) -> list[TokenLayout]:
    vision = model.config.vision_config
    patches = vision.image_size // vision.patch_size  # per side
    kernel = patches // math.isqrt(model.config.mm_tokens_per_image)  # the average pool's kernel and stride
    return _square_grid(model, inputs, (patches - kernel) // kernel + 1, kernel * vision.patch_size)


def _qwen2_vl(model, inputs: dict, tiles, tokenizer) -> list[TokenLayout]:
    vision = model.config.vision_config
    grids = inputs["image_grid_thw"]  # (images, 3): t, h, w in patches
    _images_per_row(grids.shape[0], inputs["input_ids"].shape[0], "images (image_grid_thw rows)")
    p, m = vision.patch_size, vision.spatial_merge_size
    out = []
    for t, h, w in grids.tolist():
        one = _one_grid(h // m, w // m, m * p, (h * p, w * p))
        n = one.frame.numel()
        frame = torch.arange(t).repeat_interleave(n)  # (t * n,) temporal patches one after another (t = 1: an image)
        grid = one.grid if t == 1 else None
        out.append(TokenLayout(frame, one.frame_box.repeat(t, 1), one.box.repeat(t, 1), frame.clone(), one.size, grid))
    return out


def _best_resolution(size: tuple[int, int], pinpoints: list) -> tuple[int, int]:
    from transformers.image_processing_utils import select_best_resolution

    return tuple(select_best_resolution(size, [tuple(p) for p in pinpoints]))


def _resized_in_canvas(size: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int, int, int]:
    """(height, width, top, left) of an image of ``size`` resized into ``canvas`` and centred.

    As LLaVA-NeXT's processor does it (``get_patch_output_size``, ``_get_padding_size``).
    """
    (h, w), (ch, cw) = size, canvas
    if cw / w < ch / h:
        nh, nw = min(math.ceil(h * cw / w), ch), cw
    else:
        nh, nw = ch, min(math.ceil(w * ch / h), cw)
    return nh, nw, (ch - nh) // 2, (cw - nw) // 2


def _llava_next_tiles(model, size: tuple[int, int]) -> TokenLayout:
    """The tile tokens of an image of ``size`` (height, width), in the model's order.

    The tiles' patch grid unpadded as the model unpads it, row-major, each row ended by a newline token; tile frames
    count from 1 (0 is the base image).
    """
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    vision = model.config.vision_config
    tile, p = vision.image_size, vision.patch_size
    side = tile // p  # patches per tile side
    canvas = _best_resolution(size, model.config.image_grid_pinpoints)  # (height, width), whole tiles
    tiles_w = canvas[1] // tile
    cells = torch.arange(canvas[0] // p * (canvas[1] // p)).view(1, canvas[0] // p, canvas[1] // p)
    kept = unpad_image(cells, list(size))[0]  # (rows, cols): the cells the model keeps, by their index
    rows, cols = kept.shape
    r, c = kept.flatten() // (canvas[1] // p), kept.flatten() % (canvas[1] // p)  # (rows * cols,) each
    in_tile = torch.stack([c % side, r % side, c % side + 1, r % side + 1], 1).double() * p
    nh, nw, top, left = _resized_in_canvas(size, canvas)
    on_canvas = torch.stack([c, r, c + 1, r + 1], 1).double() * p
    boxes = _clipped(_scaled(on_canvas, size[1] / nw, size[0] / nh, -left * size[1] / nw, -top * size[0] / nh), size)

    def with_newlines(x: torch.Tensor, end) -> torch.Tensor:  # (rows * cols, ...) -> (rows * (cols + 1), ...)
        x = x.view(rows, cols, -1)
        return torch.cat([x, torch.full((rows, 1, x.shape[-1]), end, dtype=x.dtype)], 1).view(rows * (cols + 1), -1)

    frame = 1 + (r // side) * tiles_w + c // side
    return TokenLayout(with_newlines(frame, -1).flatten(), with_newlines(in_tile, math.nan),
                       with_newlines(boxes, math.nan), with_newlines(torch.ones_like(frame), NO_VIEW).flatten(), size)


def _llava_next_row(model, size: tuple[int, int]) -> TokenLayout:
    """One image of ``size`` (height, width): the base image's tokens (squashed to one tile), then the tiles'."""
    vision = model.config.vision_config
    side, p = vision.image_size // vision.patch_size, vision.patch_size
    base = _grid_boxes(side, side, p, p)
    tiles = _llava_next_tiles(model, size)
    zeros = torch.zeros(side * side, dtype=torch.long)
    return TokenLayout(torch.cat([zeros, tiles.frame]), torch.cat([base, tiles.frame_box]),
                       torch.cat([_scaled(base, size[1] / vision.image_size, size[0] / vision.image_size), tiles.box]),
                       torch.cat([zeros, tiles.view]), size)


def _clipped(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boxes clipped to an image of ``size``; one left with no area (padding only) is NaN."""
    h, w = size
    out = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                       boxes[:, 3].clamp(0, h)], 1)
    empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
    out[empty] = math.nan
    return out


def _llava_next(model, inputs: dict, tiles, tokenizer) -> list[TokenLayout]:
    if getattr(model.config, "vision_feature_select_strategy", "default") != "default":
        raise FamilySpecError("image token layouts: LLaVA-NeXT's tiles need vision_feature_select_strategy 'default'")
    sizes = inputs["image_sizes"]  # (images, 2): height, width of each original image
    _images_per_row(sizes.shape[0], inputs["input_ids"].shape[0], "images (image_sizes rows)")
    return [_llava_next_row(model, (int(h), int(w))) for h, w in sizes.tolist()]


_ROW_COL = re.compile(r"^<row_(\d+)_col_(\d+)>$")


def _tags(tokenizer) -> dict[int, tuple[int, int]]:
    """Token id -> (row, col) of the tokenizer's ``<row_R_col_C>`` tile tags (Idefics3 / SmolVLM), 1-based."""
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return {}
    return {i: (int(m[1]), int(m[2])) for t, i in tokenizer.get_vocab().items() if (m := _ROW_COL.match(t))}


def _tiles_of(ids: torch.Tensor, tags: dict[int, tuple[int, int]], frames: int,
              given: tuple[int, int] | None) -> tuple[int, int]:
    """(rows, cols) of one row's tiles: given, read from its tile tags, or (0, 0) for one unsplit frame."""
    if given is None:
        found = [tags[i] for i in ids.tolist() if i in tags]
        given = (max(r for r, _ in found), max(c for _, c in found)) if found else None
    if given is None and frames == 1:
        given = (0, 0)
    if given is None:
        raise InputError(f"{frames} frames but no <row_R_col_C> tags in the input: pass tiles=(rows, cols) (the "
                         "processor's rows and cols)")
    if (given[0] * given[1] + 1 if given != (0, 0) else 1) != frames:
        raise InputError(f"tiles {given[0]} x {given[1]} (+ the global image) do not fit the row's {frames} frames")
    return given


def _idefics_row(model, frames: int, frame_side: int, tiles: tuple[int, int]) -> TokenLayout:
    p, s = model.config.vision_config.patch_size, model.config.scale_factor
    side = frame_side // p // s  # tokens per frame side after the pixel shuffle
    one = _grid_boxes(side, side, p * s, p * s)  # (side * side, 4) in a frame
    n = side * side
    rows, cols = tiles
    if frames == 1:
        return TokenLayout(torch.zeros(n, dtype=torch.long), one, one.clone(), torch.zeros(n, dtype=torch.long),
                           (frame_side, frame_side), (side, side))
    tile_boxes = [_scaled(one, 1, 1, (k % cols) * frame_side, (k // cols) * frame_side) for k in range(rows * cols)]
    global_box = _scaled(one, cols, rows)  # the global image is the whole image, squashed into one frame
    return TokenLayout(torch.arange(frames).repeat_interleave(n), one.repeat(frames, 1),
                       torch.cat(tile_boxes + [global_box]),
                       torch.cat([torch.ones(n * rows * cols, dtype=torch.long), torch.zeros(n, dtype=torch.long)]),
                       (rows * frame_side, cols * frame_side))


def _idefics3(model, inputs: dict, tiles, tokenizer) -> list[TokenLayout]:
    pixels = inputs["pixel_values"]  # (batch, frames, channels, height, width), all-zero frames are padding
    real = (pixels != 0).flatten(2).any(-1).sum(1).tolist()  # (batch,) real frames a row, as the model counts them
    tags = _tags(tokenizer)
    per_row = tiles if isinstance(tiles, list) else [tiles] * len(real)
    return [_idefics_row(model, n, pixels.shape[-1], _tiles_of(ids, tags, n, t))
            for ids, n, t in zip(inputs["input_ids"], real, per_row)]


#: ``config.model_type`` -> (model, inputs, tiles, tokenizer) -> one :class:`TokenLayout` per row.
LAYOUTS: dict[str, Callable] = {
    "llava": _llava,
    "llava_next": _llava_next,
    "idefics3": _idefics3,
    "smolvlm": _idefics3,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_vl,
    "gemma3": _gemma3,
    "paligemma": _paligemma,
}
TILED = frozenset({"llava_next", "idefics3", "smolvlm"})  # several views of one image: no single grid


def image_token_layout(lm, inputs: dict, tiles: tuple[int, int] | list[tuple[int, int]] | None = None,
                       ) -> list[TokenLayout]:
    """Where every image token of every row of ``inputs`` (a processor's output, one image a row) comes from.

    ``tiles`` (Idefics3 / SmolVLM only): (rows, cols) of the split image, or one pair per row; by default read from
    the ``<row_R_col_C>`` tags of the input (a single frame needs none). Each row's layout is checked against its
    image tokens: :class:`InputError` when the counts differ.
    """
    model_type = getattr(lm.model.config, "model_type", None)
    if model_type not in LAYOUTS:
        raise FamilySpecError(f"no image token layout for model_type {model_type!r}; known: {', '.join(LAYOUTS)}")
    inputs = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    layouts = LAYOUTS[model_type](lm.model, inputs, tiles, lm.tokenizer)
    counts = (inputs["input_ids"] == image_token_id(lm.model.config)).sum(1).tolist()  # (batch,)
    for b, (layout, n) in enumerate(zip(layouts, counts)):
        if layout.frame.numel() != n:
            raise InputError(f"row {b} holds {n} image tokens but its image gives {layout.frame.numel()} (one image "
                             "a row, built by the model's processor)")
    return layouts


def image_token_boxes(lm, inputs: dict, tiles: tuple[int, int] | list[tuple[int, int]] | None = None,
                      ) -> list[torch.Tensor]:
    """Per row, the (n_image_tokens, 4) pixel box (x0, y0, x1, y1) of each image token in the image.

    NaN for a token that covers no pixels of the image. See :func:`image_token_layout`.
    """
    return [layout.box for layout in image_token_layout(lm, inputs, tiles)]


def token_grid(lm, inputs: dict) -> tuple[int, int] | None:
    """(rows, cols) when every row's image tokens are one row-major grid over its image, the same for all rows.

    None for the tiled families and for models with no known layout.
    """
    model_type = getattr(lm.model.config, "model_type", None)
    if model_type not in LAYOUTS or model_type in TILED:
        return None
    try:
        grids = {layout.grid for layout in image_token_layout(lm, inputs)}
    except (LmscopeError, KeyError) as err:  # inputs this layout cannot place: the caller's default grid stands
        log.debug("no token grid: %s", err)
        return None
    return grids.pop() if len(grids) == 1 else None


def coverage(layout: TokenLayout, view: int | None = None,
             values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, total), each (height, width): how many tokens cover each pixel of the image, and their values' sum.

    ``view``: only the tokens of that view (default: every view); ``values``: (n,) per token (default ones).
    """
    h, w = layout.size
    keep = ~layout.box.isnan().any(1) & (layout.view == view if view is not None else layout.view != NO_VIEW)
    box = layout.box[keep]
    v = (values.double()[keep] if values is not None else torch.ones(len(box), dtype=torch.double))
    cx, cy = torch.arange(w, dtype=torch.double) + 0.5, torch.arange(h, dtype=torch.double) + 0.5
    in_x = ((box[:, :1] <= cx) & (cx < box[:, 2:3])).double()  # (n, width)
    in_y = ((box[:, 1:2] <= cy) & (cy < box[:, 3:4])).double()  # (n, height)
    return in_y.T @ in_x, in_y.T @ (v[:, None] * in_x)  # (height, width) each


def paint(values: torch.Tensor, layout: TokenLayout, view: int | None = None) -> torch.Tensor:
    """A patch map in image coordinates: (height, width), per-token ``values`` (n,) painted over their boxes.

    Each pixel is the mean over the tokens (of ``view``, default every view) that cover it; NaN where none does.
    """
    count, total = coverage(layout, view, values)
    return torch.where(count > 0, total / count.clamp_min(1), math.nan)
