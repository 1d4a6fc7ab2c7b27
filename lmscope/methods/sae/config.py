"""Options of sparse autoencoders: the dictionary, its training, and the activations it learns from.

Every paper default is a field. Each architecture's loss is its paper's: the tied model of Cunningham et al.
(2023) takes the mean squared error over coordinates + alpha ||c||_1; the untied ReLU model (Anthropic, April 2024)
the squared error summed over coordinates + lambda sum_i c_i ||W_dec,i||; TopK (Gao et al. 2024) and BatchTopK
(Bussmann et al. 2024) the summed squared error + AuxK. Reported metrics (MSE, FVE, L0) are computed the same way
for all of them (:mod:`.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, text_field
from lmscope.errors import ConfigError
from lmscope.methods.sae import registry


def __getattr__(name: str):
    """Names earlier code imported from here, now answered by the registered architectures' own classes."""
    derived = {"ARCHITECTURES": lambda: registry.architectures(),
               "L1_ARCHITECTURES": lambda: tuple(n for n in registry.architectures()
                                                 if registry.sae_class(n).resamples),
               "DEFAULT_L1": lambda: {n: registry.sae_class(n).default_l1 for n in registry.architectures()
                                      if registry.sae_class(n).default_l1 is not None},
               "DEFAULT_LR": lambda: {n: registry.sae_class(n).default_lr for n in registry.architectures()}}
    if name in derived:
        return derived[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


K_DEFAULT = 32  # Gao et al.'s k


@dataclass
class SaeConfig:
    """One dictionary: its architecture, size and sparsity."""

    architecture: str = field(default="tied", metadata={
        "help": "tied (the paper's), relu, topk, batchtopk, jumprelu, matryoshka, gated, or any registered "
                "architecture"})
    d_in: int = field(default=0, metadata={
        "help": "input width (0: the site's width, filled in when training; a width given must be the site's)"})
    transcoder: bool = field(default=False, metadata={
        "help": "read one site and predict another (a transcoder: MLP input -> MLP output); b_dec is then in the "
                "output space and not subtracted from the input"})
    skip: bool = field(default=False, metadata={
        "help": "transcoder: add an affine skip term x W_skip^T (a skip transcoder, Paulo et al. 2025)"})
    d_out: int = field(default=0, metadata={
        "help": "transcoder output width (0: the target site's width, filled in when training)"})
    ratio: float = field(default=8.0, metadata={"help": "dictionary size / d_in (paper: up to 8)"})
    width: int = field(default=0, metadata={"help": "dictionary size; overrides ratio when > 0"})
    l1_coefficient: float | None = field(default=None, metadata={
        "help": "sparsity weight of the L1 variants (default: tied 8.6e-4, the paper's alpha; relu 5.0)"})
    k: int = field(default=K_DEFAULT, metadata={
        "help": "active latents per token (topk) or on average (batchtopk); at most d_sae"})
    aux_k: int = field(default=0, metadata={"help": "dead latents in the AuxK loss (0: d_in / 2, Gao et al.)"})
    aux_coefficient: float = field(default=1 / 32, metadata={"help": "weight of the AuxK loss (Gao et al.: 1/32)"})
    threshold_momentum: float = field(default=0.99, metadata={
        "help": "batchtopk: EMA momentum of the inference threshold (the smallest kept activation)"})
    matryoshka_widths: tuple[int, ...] = field(default=(), metadata={
        "help": "matryoshka: the end of every nested prefix of the dictionary (empty: d_sae / 16, / 8, / 4, / 2)",
        "min": 1})
    l0_coefficient: float = field(default=1.0, metadata={
        "help": "jumprelu: weight lambda of the sparsity term (inputs at norm sqrt(d_in))"})
    jumprelu_loss: str = field(default="step", metadata={
        "help": "jumprelu sparsity term: step (L0, the paper's), tanh (Anthropic 2025) or quadratic (around "
                "--target-l0, Gemma Scope 2)"})
    jumprelu_bandwidth: float = field(default=0.001, metadata={
        "help": "jumprelu: bandwidth epsilon of the straight-through estimators' kernel (the paper's 0.001)"})
    jumprelu_init_threshold: float = field(default=0.001, metadata={
        "help": "jumprelu: every latent's threshold at the start (the paper's 0.001)"})
    jumprelu_ste_to_input: bool = field(default=False, metadata={
        "help": "jumprelu: the estimators' gradient reaches the pre-activations too (Anthropic 2025), not only the "
                "thresholds (the paper's)"})
    jumprelu_tanh_scale: float = field(default=4.0, metadata={"help": "jumprelu tanh term: its scale c (Anthropic: 4)"})
    target_l0: float = field(default=0.0, metadata={"help": "jumprelu quadratic term: the target L0 (> 0)"})

    def __post_init__(self) -> None:
        check.one_of(self, "architecture", registry.architectures())
        check.at_least(self, 0, "d_in", "d_out", "width", "aux_k", "aux_coefficient")
        if (self.skip or self.d_out) and not self.transcoder:
            raise ConfigError(f"{'skip' if self.skip else 'd-out'} is a transcoder's: give --transcoder too (an SAE "
                              "writes back where it reads)")
        if self.transcoder and not registry.sae_class(self.architecture).can_transcode:
            raise ConfigError(f"a {self.architecture} dictionary cannot be a transcoder (its encoder is its decoder's "
                              "transpose, so it writes where it reads); use relu, topk, batchtopk or jumprelu")
        check.positive(self, "ratio")
        check.at_least(self, 1, "k")
        if self.l1_coefficient is None:
            self.l1_coefficient = registry.sae_class(self.architecture).default_l1 or 0.0
        check.at_least(self, 0, "l1_coefficient")
        widths = list(self.matryoshka_widths)
        if widths != sorted(set(widths)) or (widths and widths[0] < 1):
            raise ConfigError(f"matryoshka-widths must be prefix ends >= 1 in increasing order, got {widths}")
        check.one_of(self, "jumprelu_loss", ("step", "tanh", "quadratic"))
        check.at_least(self, 0, "l0_coefficient", "jumprelu_init_threshold", "target_l0")
        check.positive(self, "jumprelu_bandwidth", "jumprelu_tanh_scale")
        if self.architecture == "jumprelu" and self.jumprelu_loss == "quadratic" and not self.target_l0:
            raise ConfigError("jumprelu-loss quadratic needs --target-l0 > 0 (the L0 the term pulls toward)")
        if not 0 <= self.threshold_momentum < 1:
            raise ConfigError(f"threshold-momentum must be in [0, 1), got {self.threshold_momentum}")
        if (self.d_in or self.width) and (self.k != K_DEFAULT or self.matryoshka_widths):  # must fit a known size
            self.check_k()  # (the default is checked where the SAE is trained or used: train_saes, check_sae)

    @property
    def uses_k(self) -> bool:
        """Whether the architecture keeps k latents (TopK variants); the L1 variants ignore k."""
        return registry.sae_class(self.architecture).sweep_knob == "k"

    def check_k(self) -> None:
        """Refuse k > d_sae for the architectures that keep k latents, and prefixes past d_sae (one ConfigError)."""
        if self.matryoshka_widths and self.matryoshka_widths[-1] > self.d_sae:
            raise ConfigError(f"matryoshka-widths end at {self.matryoshka_widths[-1]}, past the dictionary's "
                              f"{self.d_sae} latents")
        if self.uses_k and self.k > self.d_sae:
            size = f"width {self.width}" if self.width else f"ratio {self.ratio:g} x d_in {self.d_in}"
            raise ConfigError(f"k {self.k} is more latents than the dictionary has (d_sae {self.d_sae}: {size}); "
                              f"give k <= {self.d_sae} or a larger dictionary")

    @property
    def d_sae(self) -> int:
        """The dictionary size."""
        size = self.width or round(self.ratio * self.d_in)
        if size < 1:
            raise ConfigError(f"the dictionary has no latents (width {self.width}, ratio {self.ratio}, d_in "
                              f"{self.d_in}); give a positive width or ratio")
        return size

    @property
    def out_width(self) -> int:
        """The width it writes: d_out for a transcoder (d_in when not given), else d_in."""
        return (self.d_out or self.d_in) if self.transcoder else self.d_in

    @property
    def k_aux(self) -> int:
        """Dead latents the AuxK loss may use."""
        return self.aux_k or max(1, self.out_width // 2)


SHARD_TOKENS = 262_144  # the only value HarvestConfig.shard_tokens takes (the field is kept for older settings)


@dataclass
class HarvestConfig(CorpusConfig):
    """Where the activations come from: text, and which positions are kept (:class:`CorpusConfig`), and buffers."""

    split: str = text_field("train", "corpus split: train, test or all")
    tokens: int = text_field(1_000_000, "tokens to harvest (whole rows)")
    seq_len: int = text_field(128, "tokens per row (context)")
    batch_size: int = text_field(32, "rows per forward pass")
    buffer_rows: int = field(default=65_536, metadata={"help": "activations shuffled together (memory only)"})
    shard_tokens: int = field(default=SHARD_TOKENS, metadata={
        "help": "not used: a cached shard holds one buffer (set --buffer-rows); any other value is refused"})
    shuffle_seed: int = field(default=0, metadata={"help": "seed of the shuffling"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check.at_least(self, 1, "tokens", "buffer_rows", "shard_tokens")
        if self.shard_tokens != SHARD_TOKENS:  # kept so that older run folders' settings still match
            raise ConfigError(f"shard-tokens {self.shard_tokens} would be ignored: each cached shard holds one buffer "
                              "of --buffer-rows activations; set --buffer-rows instead and leave --shard-tokens out")


@dataclass
class TrainConfig:
    """How the dictionaries are trained (Adam; each architecture's paper defaults where lr is left at 0)."""

    batch_tokens: int = field(default=4096, metadata={"help": "activations per optimisation step"})
    epochs: int = field(default=1, metadata={
        "help": "passes over the harvested tokens, each buffer shuffled anew (for corpora smaller than the run)"})
    lr: float = field(default=0.0, metadata={
        "help": "Adam learning rate (0: the architecture's default: tied 1e-3, relu 5e-5, topk / batchtopk 2e-4)"})
    beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    warmup_steps: int = field(default=100, metadata={"help": "steps of linear learning-rate warm-up"})
    l1_warmup_fraction: float = field(default=0.05, metadata={
        "help": "fraction of the steps over which the L1 coefficient rises linearly from 0 (Anthropic: 5%)"})
    decay_fraction: float = field(default=0.2, metadata={
        "help": "fraction of the steps at the end over which the learning rate decays linearly to 0 (Anthropic)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip (0: none)"})
    b_dec_init: str = field(default="geometric_median", metadata={
        "help": "decoder bias init from the first batch: geometric_median, mean or zeros"})
    normalize_inputs: bool = field(default=True, metadata={
        "help": "scale inputs to E|x| = sqrt(d_in) while training; folded into the weights when saved"})
    dead_tokens: int = field(default=1_000_000, metadata={"help": "a latent is dead after this many tokens unfired"})
    resample_every: int = field(default=0, metadata={
        "help": "L1 variants: resample dead latents toward badly reconstructed inputs every N steps (0: never)"})
    autocast: bool = field(default=False, metadata={
        "help": "run the SAEs' matmuls in bfloat16 (weights and Adam stay float32), as SAELens' autocast; left off, "
                "with a warning, where bfloat16 is slower than float32 (a CPU without native bfloat16)"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (resume point)"})
    init_seed: int = field(default=0, metadata={"help": "seed of the initialisation (and of resampling)"})

    def __post_init__(self) -> None:
        check.at_least(self, 1, "batch_tokens", "epochs", "checkpoint_every")
        check.at_least(self, 0, "lr", "warmup_steps", "grad_clip", "dead_tokens", "resample_every")
        for name in ("beta1", "beta2", "l1_warmup_fraction", "decay_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        check.one_of(self, "b_dec_init", ("geometric_median", "mean", "zeros"))


def training_steps(harvest: HarvestConfig, train: TrainConfig) -> int:
    """The optimisation steps of a run, tokens x epochs / batch_tokens: at least one, or one ConfigError."""
    steps = harvest.tokens * train.epochs // train.batch_tokens
    if steps < 1:
        raise ConfigError(f"tokens {harvest.tokens} x epochs {train.epochs} make no training batch of batch-tokens "
                          f"{train.batch_tokens}: give --tokens >= {-(-train.batch_tokens // train.epochs)} or a "
                          "smaller --batch-tokens")
    return steps
