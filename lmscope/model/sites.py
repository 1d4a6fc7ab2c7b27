"""Typed activation sites: ``Site(layer, kind)``, turned into a module and hook point in exactly one place.

Kinds (shapes for a batch of token sequences):

============== ============================================ =========================================
kind           what                                         shape
============== ============================================ =========================================
embed          token embeddings (output of the embedding)   (batch, pos, d_model)
resid_pre      residual stream entering block ``layer``     (batch, pos, d_model)
resid_post     residual stream leaving block ``layer``      (batch, pos, d_model)
attn_out       what attention adds to the residual          (batch, pos, d_model)
mlp_in         input of the MLP (after the pre-MLP norm):   (batch, pos, d_model)
               what a transcoder reads
mlp_out        what the MLP adds to the residual            (batch, pos, d_model)
mlp_key        MLP hidden activation = input of W_out       (batch, pos, d_mlp)
mlp_value      output of W_out (before any post-MLP norm)   (batch, pos, d_model)
mlp_pre        MLP pre-activation = output of W_in (gate)   (batch, pos, d_mlp)
attn_pattern   attention probabilities                      (batch, head, query_pos, key_pos)
attn_heads     every head's output, concatenated = input of (batch, pos, n_heads * d_head)
               the attention output projection (TransformerLens' hook_z, flattened); head h is columns
               [h * d_head, (h + 1) * d_head)
============== ============================================ =========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lmscope.errors import SiteError

Kind = Literal["embed", "resid_pre", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_key", "mlp_value",
               "mlp_pre", "attn_pattern", "attn_heads"]
KINDS: tuple[str, ...] = ("embed", "resid_pre", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_key", "mlp_value",
                          "mlp_pre", "attn_pattern", "attn_heads")
Where = Literal["input", "output", "pattern"]


@dataclass(frozen=True)
class Site:
    """An activation site: ``Site(5, "mlp_out")``. ``embed`` has only layer 0. Negative layers count from the end."""

    layer: int
    kind: Kind

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SiteError(f"unknown site kind {self.kind!r}; kinds are {', '.join(KINDS)}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise SiteError(f"site layer must be an int, got {self.layer!r}")
        if self.kind == "embed" and self.layer != 0:
            raise SiteError("the embed site has only layer 0: Site(0, 'embed')")

    @property
    def pos_dim(self) -> int:
        """The dimension of token positions (query positions for attention patterns)."""
        return 2 if self.kind == "attn_pattern" else 1

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> Site:
        """A site from its name: lmscope's or a TransformerLens hook name.

        ``"resid_post.15"``, ``"resid_post:15"``, ``"blocks.15.hook_resid_post"``, ``"blocks.3.mlp.hook_post"`` and
        ``"hook_embed"`` are all read. A TransformerLens hook with no lmscope kind (``hook_resid_mid``,
        ``attn.hook_q``, ...) is one clear :class:`SiteError` naming what lmscope has instead.
        """
        if not isinstance(text, str) or not text.strip():
            raise SiteError(f"not a site: {text!r} (expected kind.layer, e.g. resid_post.15)")
        text = text.strip()
        if text == "hook_embed":
            return cls(0, "embed")
        if text.startswith("blocks."):
            return cls._parse_hook(text)
        kind, _, layer = text.replace(":", ".").rpartition(".")
        if not kind or not layer.lstrip("-").isdigit():
            raise SiteError(f"not a site: {text!r} (expected kind.layer, e.g. resid_post.15, or a TransformerLens "
                            "hook name, e.g. blocks.15.hook_resid_post)")
        return cls(int(layer), kind)  # type: ignore[arg-type]

    @classmethod
    def _parse_hook(cls, text: str) -> Site:
        _, layer, hook = text.split(".", 2) if text.count(".") >= 2 else (text, "", "")
        if not layer.isdigit():
            raise SiteError(f"not a TransformerLens hook name: {text!r} (expected blocks.LAYER.HOOK)")
        kind = {tl: k for k, tl in TL_HOOKS.items()}.get(hook)
        if hook in ("ln2.hook_normalized", "hook_mlp_in"):
            raise SiteError(f"TransformerLens hook {hook!r} is the MLP's input without its norm's weight (folded into "
                            "W_in); lmscope's mlp_in is with it, so a dictionary trained there would read other "
                            f"numbers: give --site mlp_in.{layer} to use it there anyway")
        if kind is None:
            raise SiteError(f"TransformerLens hook {hook!r} has no lmscope site; lmscope reads "
                            + ", ".join(f"{tl} ({k})" for k, tl in TL_HOOKS.items()))
        return cls(int(layer), kind)  # type: ignore[arg-type]

    @property
    def tl_name(self) -> str | None:
        """The TransformerLens hook name of this site (None where it has none exactly: ``mlp_value``, ``mlp_in``)."""
        if self.kind == "embed":
            return "hook_embed"
        hook = TL_HOOKS.get(self.kind)
        return None if hook is None or self.layer < 0 else f"blocks.{self.layer}.{hook}"


# TransformerLens' hook for each lmscope kind (attn_heads: hook_z, flattened over heads). mlp_value has none, nor has
# mlp_in: TransformerLens' ln2.hook_normalized / hook_mlp_in are the MLP's input without the norm's weight
# (TransformerLens folds it into W_in), so a dictionary trained there reads other numbers than lmscope's mlp_in
TL_HOOKS: dict[str, str] = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post",
                            "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "mlp_key": "mlp.hook_post",
                            "mlp_pre": "mlp.hook_pre", "attn_pattern": "attn.hook_pattern",
                            "attn_heads": "attn.hook_z"}


@dataclass(frozen=True)
class HookPoint:
    """Where a site's value appears: a module's first input, its (first) output, or its attention pattern."""

    module: nn.Module
    where: Where
    pos_dim: int = 1


@dataclass(frozen=True)
class ModuleSite:
    """Escape hatch: a raw module path under the root (``where`` = "input" or "output")."""

    path: str
    where: Where = "output"
    pos_dim: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.where}"
