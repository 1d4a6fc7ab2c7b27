"""Options of automated interpretability (Bills et al. 2023, as used by Cunningham et al. 2023 §3).

Units of one layer (SAE features, MLP neurons, and the paper's baselines: random directions, PCA and ICA directions
of the same activations) are read over a corpus in one pass; each unit's top-activating excerpts are split between
the explainer and the scorer (never the same excerpt for both), and random excerpts are added for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, text_field
from lmscope.errors import ConfigError

UNIT_KINDS = ("sae", "neurons", "random", "pca", "ica")


@dataclass
class SampleConfig(CorpusConfig):
    """Which units and which text (:class:`CorpusConfig`: left-out positions read as 0), and the example split."""

    tokens: int = text_field(262_144, "tokens read (excerpts of seq-len tokens)")
    seq_len: int = text_field(64, "tokens per excerpt (Bills et al.: 64)")
    batch_size: int = text_field(16, "excerpts per forward pass")

    kinds: tuple[str, ...] = field(default=("sae", "neurons", "random", "pca", "ica"), metadata={
        "help": "unit kinds: sae (needs --sae), neurons (mlp_key), random, pca, ica (directions of the SAE's site)"})
    n_units: int = field(default=50, metadata={"help": "units of each kind (sampled among those that fire)"})
    units: tuple[int, ...] = field(default=(), metadata={
        "help": "explicit SAE feature / neuron indices instead of a sample (for the sae and neurons kinds)"})
    fit_tokens: int = field(default=65_536, metadata={"help": "activations used to fit the PCA / ICA directions"})
    explain_examples: int = field(default=5, metadata={"help": "top excerpts shown to the explainer"})
    score_top: int = field(default=5, metadata={"help": "other top excerpts the explanation is scored on"})
    score_random: int = field(default=5, metadata={"help": "random excerpts the explanation is scored on"})
    score_quantiles: int = field(default=0, metadata={
        "help": "also score on one excerpt from each of this many activation-quantile bins of the active excerpts"})
    unit_seed: int = field(default=0, metadata={"help": "seed of the unit sample, random directions and excerpts"})

    def __post_init__(self) -> None:
        self.kinds, self.units = tuple(self.kinds), tuple(map(int, self.units))
        bad = [k for k in self.kinds if k not in UNIT_KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"unit kinds must be among {', '.join(UNIT_KINDS)}, got {list(self.kinds)}")
        super().__post_init__()
        check.at_least(self, 1, "n_units", "tokens", "fit_tokens", "explain_examples", "score_top")
        check.at_least(self, 0, "score_random", "score_quantiles")


@dataclass
class ScoreConfig:
    """Explainer and simulator: which backend, and how they are asked."""

    backend: str = field(default="local", metadata={
        "help": "local (a model lmscope loads) or http (an OpenAI-compatible endpoint)"})
    explainer: str = field(default="", metadata={"help": "local model for explanations (default: the studied model)"})
    simulator: str = field(default="", metadata={"help": "local model for simulation (default: the explainer)"})
    base_url: str = field(default="", metadata={"help": "http: the endpoint, e.g. http://localhost:8000/v1"})
    api_model: str = field(default="", metadata={"help": "http: the model name sent to the endpoint"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "http: environment variable of the key"})
    timeout: float = field(default=60.0, metadata={"help": "http: seconds per request"})
    retries: int = field(default=4, metadata={"help": "http: retries of a failed request (exponential backoff)"})
    budget: int = field(default=2000, metadata={"help": "http: most requests this run sends (cache hits are free)"})
    concurrency: int = field(default=4, metadata={"help": "http: requests in flight at once"})
    explanation_tokens: int = field(default=40, metadata={"help": "longest explanation, in tokens"})
    prompts: str = field(default="", metadata={"help": "a folder of prompt files overriding the packaged ones"})
    detection: bool = field(default=True, metadata={"help": "also the detection score (activating vs random)"})

    def __post_init__(self) -> None:
        check.one_of(self, "backend", ("local", "http"))
        if self.backend == "http" and not (self.base_url and self.api_model):
            raise ConfigError("the http backend needs --base-url and --api-model")
        check.at_least(self, 0, "retries")
        check.at_least(self, 1, "budget", "concurrency", "explanation_tokens")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")
