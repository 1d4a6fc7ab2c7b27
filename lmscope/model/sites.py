"""Typed activation sites: ``Site(layer, kind)``, turned into a module and hook point in exactly one place.

Kinds (shapes for a batch of token sequences):

============== ============================================ =========================================
kind           what                                         shape
============== ============================================ =========================================
embed          token embeddings (output of the embedding)   (batch, pos, d_model)
resid_pre      residual stream entering block ``layer``     (batch, pos, d_model)
resid_post     residual stream leaving block ``layer``      (batch, pos, d_model)
attn_out       what attention adds to the residual          (batch, pos, d_model)
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

Kind = Literal["embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_key", "mlp_value", "mlp_pre",
               "attn_pattern", "attn_heads"]
KINDS: tuple[str, ...] = ("embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_key", "mlp_value",
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
