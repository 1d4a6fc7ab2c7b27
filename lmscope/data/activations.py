"""The one activation stream: text of a corpus, packed into token rows, run through the model, captured at sites.

Every method that reads a corpus through the model (SAE harvest, evaluation and feature pages, autointerp's
excerpts and fits, stages, neuron statistics, causal tracing's noise scale) uses :func:`activation_batches` (or
:func:`corpus_batches` for the token rows alone) with a :class:`CorpusConfig` (or a :class:`TextConfig`): which
corpus and split, how many tokens in rows of ``seq_len``, ``batch_size`` rows per forward pass, and which positions
count (special tokens, each row's first position, attention sinks above ``sink_factor`` x the median norm). The
methods' configs derive from these two, redeclaring only their defaults.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from lmscope import config as check
from lmscope.data.corpus import iter_texts, token_batches
from lmscope.model.hooks import ActivationCache
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import below_sinks, kept_positions


@dataclass
class TextConfig:
    """Which text: a corpus, its split, and how many tokens in rows of ``seq_len``, ``batch_size`` rows at a time."""

    corpus: str = field(default="wiki", metadata={"help": "packaged corpus (wiki, bbc) or a .txt / .jsonl / folder"})
    split: str = field(default="test", metadata={"help": "corpus split: train, test (held out) or all"})
    tokens: int = field(default=65_536, metadata={"help": "tokens read (whole rows)"})
    seq_len: int = field(default=128, metadata={"help": "tokens per row"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})

    def __post_init__(self) -> None:
        check.one_of(self, "split", ("train", "test", "all"))
        check.at_least(self, 2, "seq_len")
        check.at_least(self, 1, "batch_size")


@dataclass
class CorpusConfig(TextConfig):
    """Which text, and which of its positions count (the configs of every method reading activations derive it)."""

    drop_special: bool = field(default=True, metadata={"help": "leave out BOS / EOS / padding positions"})
    drop_first: bool = field(default=True, metadata={
        "help": "leave out the first position of every row: BOS, or the attention sink of a model without one "
                "(SmolLM2's reaches norm ~100x the others)"})
    sink_factor: float = field(default=10.0, metadata={
        "help": "leave out positions whose norm exceeds this multiple of the median norm (attention sinks; 0: "
                "keep all)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check.at_least(self, 0, "sink_factor")

    @property
    def drops(self) -> bool:
        """Whether any position is left out."""
        return self.drop_special or self.drop_first or self.sink_factor > 0


def text_field(default, help: str):
    """A :class:`TextConfig` / :class:`CorpusConfig` field redeclared by a method's config with its own default."""
    return field(default=default, metadata={"help": help})


def corpus_batches(tokenizer, cfg: TextConfig, tokens: int | None = None) -> Iterator[torch.Tensor]:
    """Token rows (batch_size, seq_len) of ``cfg.tokens`` (or ``tokens``) tokens of the corpus, documents packed."""
    return token_batches(tokenizer, iter_texts(cfg.corpus, split=cfg.split), cfg.seq_len, cfg.batch_size,
                         max_tokens=cfg.tokens if tokens is None else tokens)


@dataclass
class ActivationBatch:
    """One forward pass: the token rows, the captured activations and the positions that count."""

    ids: torch.Tensor  # (batch, seq) on the model's device
    acts: ActivationCache  # site -> (batch, seq, d) as captured, keyed by the sites as given
    keep: torch.Tensor | None  # (batch, seq) bool; None when nothing is left out

    def kept(self, site: Site) -> torch.Tensor:
        """The activations at ``site`` of the positions that count, float32: (n, d)."""
        x = self.acts[site]
        return x[self.keep].float() if self.keep is not None else x.float().flatten(0, 1)


def deepest_stop(sites: Sequence[Site]) -> Site:
    """Where a pass capturing ``sites`` may stop: the embeddings, or the output of the deepest block."""
    if all(s.kind == "embed" for s in sites):
        return Site(0, "embed")
    return Site(max(s.layer for s in sites), "resid_post")


@torch.no_grad()
def run_batch(lm: LM, ids: torch.Tensor, sites: Sequence[Site], cfg: CorpusConfig,
              stop_after: Site | None = None) -> ActivationBatch:
    """Run one batch of token rows, capturing ``sites``, and work out the positions that count.

    Sinks are looked for at the sites in their given order: a sink at any site leaves the position out.
    """
    ids = ids.to(lm.device)
    _, cache = lm.run_with_cache(ids, list(sites), stop_after=stop_after or deepest_stop(sites))
    keep = None
    if cfg.drops:
        keep = kept_positions(lm, ids, cfg.drop_special, cfg.drop_first)
        for site in sites:
            keep = below_sinks(cache[site], keep, cfg.sink_factor)
    return ActivationBatch(ids, cache, keep)


def activation_batches(lm: LM, sites: Sequence[Site], cfg: CorpusConfig, tokens: int | None = None,
                       stop_after: Site | None = None) -> Iterator[ActivationBatch]:
    """Every batch of the corpus run through the model (see :func:`run_batch`); ``tokens`` overrides the config's."""
    for ids in corpus_batches(lm.tokenizer, cfg, tokens):
        yield run_batch(lm, ids, sites, cfg, stop_after)
