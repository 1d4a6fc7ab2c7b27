"""Options of projector training and of its captioning evaluation.

Schwettmann et al. 2023 / LiMBeR: a linear map from a frozen image encoder into a frozen LM's input embeddings,
trained on captions; LLaVA-1.5: the same with an MLP. The defaults are the recipe of the bundled ``smollm2-dino``
projector (an MLP, 256 concepts, 100 epochs of 32 captions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.errors import ConfigError
from lmscope.model.vlm import CAPTION_PROMPT, IMAGE_TOKEN


@dataclass
class ProjectorConfig:
    """Data, optimisation and evaluation of one projector run."""

    projector: str = field(default="mlp", metadata={
        "help": "mlp (LLaVA-1.5's Linear-GELU-Linear, the bundled projector's) or linear (LiMBeR)"})
    image_size: int = field(default=112, metadata={"help": "image side in pixels (a multiple of the patch size, 14)",
                                                   "min": 14, "max": 518})
    prompt: str = field(default=CAPTION_PROMPT, metadata={
        "help": "text around the image (the image token marks where it goes); the caption follows it. Default: "
                "SmolLM2-Instruct's chat format asking to name the object (64 concepts, 120 steps: 0.47 of new "
                "renderings named, against 0.11 after '<image> A picture of')"})
    image_token: str = field(default=IMAGE_TOKEN, metadata={
        "help": "the image placeholder: one token of the LM's vocabulary, held once by the prompt"})
    epochs: int = field(default=100, metadata={"help": "passes over the training concepts (a new rendering each)",
                                               "min": 1, "max": 1000})
    batch_size: int = field(default=32, metadata={"help": "captions per optimisation step", "min": 1, "max": 4096})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (at most 10)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay", "min": 0, "max": 10})
    warmup_steps: int = field(default=20, metadata={"help": "linear learning-rate warm-up", "min": 0,
                                                    "max": 1_000_000})
    schedule: str = field(default="cosine", metadata={
        "help": "learning rate after the warm-up: cosine (to 0 at the last step, LLaVA-1.5's pretraining) or "
                "constant"})
    heldout_fraction: float = field(default=0.1, metadata={"help": "concepts never seen in training"})
    max_concepts: int = field(default=256, metadata={
        "help": "train on this many concepts of the training split only, drawn at random with the data seed (0: "
                "all): a smaller vocabulary learned in fewer steps; the evaluation's seen concepts are these",
        "min": 0, "max": 1_000_000})
    shapes: bool = field(default=True, metadata={"help": "add coloured shapes to the emoji"})
    rotation: float = field(default=20.0, metadata={
        "help": "each rendering turned by up to this many degrees either way (training and evaluation; 0: upright)",
        "min": 0, "max": 180})
    eval_renders: int = field(default=1, metadata={"help": "held-out renderings per concept in the evaluation",
                                                   "min": 1, "max": 100})
    eval_seen: int = field(default=0, metadata={"help": "seen concepts captioned in the evaluation (0: all)",
                                                "min": 0, "max": 1_000_000})
    max_new_tokens: int = field(default=8, metadata={"help": "caption length at most, in tokens", "min": 1,
                                                     "max": 64})
    standardize: bool = field(default=True, metadata={
        "help": "start from centred, scaled patch features at the token embeddings' norm (folded into the "
                "projector's weights; a first run without it gave 45 different captions for 319 held-out images, "
                "with it 93)"})
    data_seed: int = field(default=0, metadata={"help": "seed of the split, the renderings and the initialisation",
                                                "min": 0, "max": 2**32 - 1})

    def __post_init__(self) -> None:
        check.one_of(self, "projector", ("linear", "mlp"))
        check.one_of(self, "schedule", ("cosine", "constant"))
        check.at_least(self, 1, "epochs", "batch_size", "eval_renders", "max_new_tokens")
        check.at_least(self, 14, "image_size")
        check.at_least(self, 0, "warmup_steps", "weight_decay", "eval_seen")
        check.positive(self, "lr")
        check.bounds(self)
        if self.lr > 10:
            raise ConfigError(f"lr must be at most 10, got {self.lr}")
        if self.image_size % 14:
            raise ConfigError(f"image-size must be a multiple of 14 (the patch size), got {self.image_size}")
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"heldout-fraction must be in [0, 1), got {self.heldout_fraction}")
        if not isinstance(self.image_token, str) or not self.image_token.strip():
            raise ConfigError(f"image-token must be a token's text, got {self.image_token!r}")
        if not isinstance(self.prompt, str) or self.prompt.count(self.image_token) != 1:
            raise ConfigError(f"prompt must hold the image token {self.image_token!r} exactly once (where the image "
                              f"goes), got {self.prompt!r}")
