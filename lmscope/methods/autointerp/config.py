"""Options of automated interpretability (Bills et al. 2023, as used by Cunningham et al. 2023 §3).

Units of one layer (SAE features, MLP neurons, and the paper's baselines: random directions, PCA and ICA directions
of the same activations) are read over a corpus in one pass; each unit's top-activating excerpts are split between
the explainer and the scorer (never the same excerpt for both), and random excerpts are added for scoring.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, text_field
from lmscope.errors import ConfigError

UNIT_KINDS = ("sae", "neurons", "random", "pca", "ica", "planted")


def check_url(base_url: str) -> None:
    """``base_url`` is an http(s) address with a host (one :class:`ConfigError` otherwise)."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        _ = parts.port  # an invalid port raises here
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed address (an invalid port or IPv6 host)
        ok = False
    if not ok:
        raise ConfigError(f"base-url must be an http:// or https:// address, e.g. http://localhost:8000/v1, got "
                          f"{base_url!r}")


@dataclass
class SampleConfig(CorpusConfig):
    """Which units and which text (:class:`CorpusConfig`: left-out positions read as 0), and the example split."""

    tokens: int = text_field(262_144, "tokens read (excerpts of seq-len tokens)")
    seq_len: int = text_field(64, "tokens per excerpt (Bills et al.: 64)")
    batch_size: int = text_field(16, "excerpts per forward pass")

    kinds: tuple[str, ...] = field(default=("sae", "neurons", "random", "pca", "ica", "planted"), metadata={
        "help": "unit kinds: sae (needs --sae), neurons (mlp_key), random, pca, ica (directions of the SAE's site), "
                "planted (positive controls: the indicator of a word set, e.g. capital cities, read at embed)",
        "max_items": len(UNIT_KINDS)})
    n_units: int = field(default=50, metadata={"help": "units of each kind (sampled among those that fire)",
                                               "min": 1, "max": 100_000})
    n_baseline_units: int = field(default=0, metadata={
        "help": "units of each baseline kind (random, pca, ica) when it should differ from n-units (0: n-units; "
                "Cunningham et al. compare against fewer baseline directions than features)", "min": 0,
        "max": 100_000})
    units: tuple[int, ...] = field(default=(), metadata={
        "help": "explicit SAE feature / neuron indices instead of a sample (for the sae and neurons kinds)",
        "min": 0, "max": 2**31 - 1, "max_items": 100_000})
    fit_tokens: int = field(default=65_536, metadata={"help": "activations used to fit the PCA / ICA directions",
                                                      "min": 16, "max": 1 << 24})
    explain_examples: int = field(default=5, metadata={"help": "top excerpts shown to the explainer",
                                                       "min": 1, "max": 100})
    score_top: int = field(default=5, metadata={"help": "other top excerpts the explanation is scored on",
                                                "min": 1, "max": 100})
    score_random: int = field(default=10, metadata={"help": "random excerpts the explanation is scored on (as many "
                                                           "as the activating ones: top + quantiles)",
                                                   "min": 0, "max": 100})
    score_quantiles: int = field(default=5, metadata={
        "help": "also score on one excerpt from each of this many activation-quantile bins of the active excerpts "
                "(Paulo et al. 2024: explanations are judged on weak activations too, not only the top)",
        "min": 0, "max": 100})
    quiet_below: float = field(default=0.25, metadata={
        "help": "random excerpts are drawn among the quiet ones (peak below this fraction of the unit's top peak, "
                "as delphi's non-activating negatives) when the unit has enough; else among all (Bills "
                "et al.'s uniform random excerpts); 0: always among all", "min": 0.0, "max": 1.0})
    window: int = field(default=32, metadata={
        "help": "tokens of each excerpt shown (explained and scored): a window around its peak, 3/4 of it before "
                "(random excerpts: a random window); 0 or seq-len: the whole excerpt", "min": 0, "max": 1 << 16})
    unit_seed: int = field(default=0, metadata={"help": "seed of the unit sample, random directions and excerpts",
                                                "min": 0, "max": 2**32 - 1})

    def __post_init__(self) -> None:
        self.kinds, self.units = tuple(self.kinds), tuple(map(int, self.units))
        bad = [k for k in self.kinds if k not in UNIT_KINDS]
        if bad or not self.kinds or len(set(self.kinds)) < len(self.kinds):
            raise ConfigError(f"unit kinds must be among {', '.join(UNIT_KINDS)}, each once, got {list(self.kinds)}")
        super().__post_init__()
        check.at_least(self, 1, "n_units", "tokens", "fit_tokens", "explain_examples", "score_top")
        check.at_least(self, 0, "score_random", "score_quantiles", "window", "n_baseline_units")
        check.bounds(self)
        if self.tokens < self.seq_len:
            raise ConfigError(f"tokens ({self.tokens}) must be at least one excerpt of seq-len ({self.seq_len}) "
                              "tokens")
        if self.units and not {"sae", "neurons"} & set(self.kinds):
            raise ConfigError(f"units are SAE feature / neuron indices: they need the kind sae or neurons, and the "
                              f"kinds are {', '.join(self.kinds)}")


@dataclass
class ScoreConfig:
    """Explainer and simulator: which backend, and how they are asked."""

    backend: str = field(default="local", metadata={
        "help": "local (a model lmscope loads) or http (an OpenAI-compatible endpoint)"})
    explainer: str = field(default="", metadata={"help": "local model for explanations (default: the studied model)"})
    simulator: str = field(default="", metadata={"help": "local model for simulation (default: the explainer)"})
    explainer_dtype: str = field(default="auto", metadata={
        "help": "weights of a local explainer / simulator other than the studied model (auto: bfloat16 where its "
                "matmuls are fast, a GPU or a CPU with native bfloat16, float32 elsewhere, where bfloat16 is emulated "
                "and ~20-40x slower; bfloat16 gave the same answers as float32, P(Yes) within 0.03, on the checks "
                "made)"})
    base_url: str = field(default="", metadata={"help": "http: the endpoint, e.g. http://localhost:8000/v1"})
    api_model: str = field(default="", metadata={"help": "http: the model name sent to the endpoint"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "http: environment variable of the key"})
    timeout: float = field(default=60.0, metadata={"help": "http: seconds per request", "min": 0.01, "max": 3600})
    retries: int = field(default=4, metadata={"help": "http: retries of a failed request (exponential backoff)",
                                              "min": 0, "max": 10})
    budget: int = field(default=2000, metadata={"help": "http: most requests this run sends (cache hits are free)",
                                                "min": 1, "max": 10_000_000})
    concurrency: int = field(default=4, metadata={"help": "http: requests in flight at once", "min": 1, "max": 64})
    explanation_tokens: int = field(default=40, metadata={"help": "longest explanation, in tokens",
                                                          "min": 1, "max": 1000})
    prompts: str = field(default="", metadata={
        "help": "a folder of prompt files (explainer.txt, simulator.txt, simulator_chat.txt, detector.txt) "
                "overriding the packaged ones"})
    simulation: bool = field(default=True, metadata={"help": "the simulation score (Bills et al.: simulated vs true "
                                                              "activations)"})
    detection: bool = field(default=True, metadata={"help": "the detection score (activating vs random excerpts)"})
    fuzzing: bool = field(default=True, metadata={"help": "the fuzzing score (activating tokens marked vs as many "
                                                          "others marked at random)"})
    mark: float = field(default=0.25, metadata={"help": "tokens marked << >> for the chat explainer and fuzzing: at or "
                                                        "above this fraction of the excerpt's peak", "min": 0.0,
                                                "max": 1.0})
    judge: str = field(default="quote", metadata={
        "help": "local detection and fuzzing: quote (the scorer is asked which word fits the explanation, or None; "
                "P(fits) = P(it quotes a word of the text, in fuzzing a marked one) against P(None): a word it "
                "copies from the explanation counts for nothing) or yes-no (P(Yes) against P(No)); small instruct "
                "models answer Yes to nearly anything, and quoting separates far better"})
    chat: str = field(default="auto", metadata={
        "help": "local: ask the explainer and the detector through the model's chat template (auto: when its "
                "tokenizer has one; on; off: plain completion prompts)"})

    def __post_init__(self) -> None:
        check.one_of(self, "backend", ("local", "http"))
        check.one_of(self, "chat", ("auto", "on", "off"))
        check.one_of(self, "judge", ("quote", "yes-no"))
        check.one_of(self, "explainer_dtype", ("auto", "float32", "bfloat16", "float16"))
        if self.backend == "http" and not (self.base_url and self.api_model):
            raise ConfigError("the http backend needs --base-url and --api-model")
        check.at_least(self, 0, "retries")
        check.at_least(self, 1, "budget", "concurrency", "explanation_tokens")
        check.positive(self, "timeout")
        if not (self.simulation or self.detection or self.fuzzing):
            raise ConfigError("every scorer is off (--no-simulation, --no-detection, --no-fuzzing): nothing would "
                              "score the explanations")
        check.bounds(self)
        if self.backend == "http":
            check_url(self.base_url)
