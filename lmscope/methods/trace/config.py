"""Options of causal tracing (ROME's defaults) and the names every trace module shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.errors import ConfigError

TRACE_KINDS = ("hidden", "mlp", "attn")
SITE_KIND = {"hidden": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}  # what a trace kind restores


@dataclass
class TraceConfig:
    """Options of causal tracing; the defaults are ROME's."""

    kinds: tuple[str, ...] = field(default=TRACE_KINDS, metadata={"help": "what to restore: hidden, mlp, attn",
                                                                      "max_items": 3})
    samples: int = field(default=10, metadata={"help": "noise samples averaged per cell", "min": 1, "max": 1000})
    window: int = field(default=10, metadata={"help": "layers restored together for mlp / attn (centred, clipped)",
                                              "min": 1, "max": 1024})
    noise: float | None = field(default=None, metadata={
        "help": "noise scale; default: noise_factor x the model's embedding std (estimated once, cached)",
        "min": 0, "max": 1e4})
    noise_factor: float = field(default=3.0, metadata={"help": "multiple of the embedding std used as noise scale",
                                                       "min": 0, "max": 1000})
    uniform_noise: bool = field(default=False, metadata={
        "help": "uniform noise in [-scale, scale] instead of Gaussian"})
    sever: tuple[str, ...] = field(default=(), metadata={
        "help": "also trace hidden states with these kinds (mlp, attn) frozen at later layers (ROME Fig. 3)",
        "max_items": 2})
    noise_seed: int = field(default=1, metadata={"help": "seed of the noise draws (the same draws for every cell)",
                                                 "min": 0, "max": 2**32 - 1})
    batch_tokens: int = field(default=4096, metadata={"help": "tokens per forward pass (speed / memory only)",
                                                      "min": 1, "max": 1 << 20})

    def __post_init__(self) -> None:
        self.kinds, self.sever = tuple(self.kinds), tuple(self.sever)
        bad = [k for k in self.kinds if k not in TRACE_KINDS] + [k for k in self.sever if k not in ("mlp", "attn")]
        if bad:
            raise ConfigError(f"unknown trace kind {bad[0]!r}: kinds are {TRACE_KINDS}, sever takes mlp / attn")
        if not self.kinds and not self.sever:
            raise ConfigError("nothing to trace: give at least one kind (hidden, mlp, attn) or sever")
        check.at_least(self, 1, "samples", "window", "batch_tokens")
        check.positive(self, "noise_factor")
        if self.noise is not None:
            check.at_least(self, 0, "noise")
        check.bounds(self)


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """ROME's window: layers [layer - window//2, layer + ceil(window/2)), clipped at both ends."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))
