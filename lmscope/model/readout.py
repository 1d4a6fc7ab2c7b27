"""The readout seam: how a residual stream becomes a layer's prediction.

Every place that reads a layer's prediction (the lens of a prompt, the stages analysis, the held-out comparison,
the workbench's lens view) calls ``readout.logits(lm, h, row)`` = ``lm.unembed(readout.transform_hidden(h, row))``:

- :data:`LOGIT` (the logit lens, nostalgebraist 2020): ``transform_hidden`` is the identity.
- :class:`TunedLens` (Belrose et al. 2023): an affine translator per residual stream, ``h + W_row h + b_row``
  (the residual form of tuned-lens, so weight decay pulls it towards the identity), for the rows 0 .. n_layers - 1;
  the last row is the model's own output and reads through the identity.

Rows are lmscope's lens rows: row 0 is the embeddings (the input of block 0), row ``l + 1`` the output of block
``l`` (tuned-lens' ``hidden_states[l + 1]``: the same numbering). A tuned lens is saved as ``cfg.json`` +
safetensors in the store, one per model (:func:`lens_path`); tuned-lens' own folders (``config.json`` +
``params.pt``) are read by :func:`read_tuned_lens_folder` with ``torch.load(weights_only=True)``: tensors only, no
pickled code runs.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmscope import store
from lmscope.errors import ArtifactError, InputError
from lmscope.io import CFG_NAME, Result, read_json
from lmscope.model.lm import LM

log = logging.getLogger(__name__)

READOUTS = ("auto", "logit", "tuned")


def readout_field(default: str):
    """The ``readout`` option of every config that reads a layer's prediction (the lens, stages)."""
    return field(default=default, metadata={
        "help": "how a layer's prediction is read: logit (final norm + unembedding), tuned (the tuned lens of this "
                "model in the store), auto (tuned when one is in the store, else logit)",
        "choices": READOUTS})


class Unembeds:
    """What every readout shares: its logits are the model's unembedding of ``transform_hidden(h, row)``."""

    def transform_hidden(self, h: torch.Tensor, row: int) -> torch.Tensor:  # noqa: D102 (each readout's own)
        raise NotImplementedError

    def logits(self, lm: LM, h: torch.Tensor, row: int) -> torch.Tensor:
        """(..., d_model) -> (..., vocab)."""
        return lm.unembed(self.transform_hidden(h, row))


class LogitReadout(Unembeds):
    """The logit lens: the final norm and the unembedding applied to the residual stream as it is."""

    kind = "logit"
    label = "logit lens"

    def transform_hidden(self, h: torch.Tensor, row: int) -> torch.Tensor:
        """The residual stream unchanged."""
        return h

    def describe(self) -> dict:
        """What a result records of its readout."""
        return {"kind": self.kind, "label": self.label}


LOGIT = LogitReadout()


def unembed_hash(lm: LM) -> str:
    """tuned-lens' hash of the unembedding (sha256 of NumPy's one-decimal summary: robust to dtype and rounding)."""
    return hashlib.sha256(np.array_str(lm.W_U.detach().float().cpu().numpy(), precision=1).encode()).hexdigest()


@dataclass
class TunedLens(Result, Unembeds):
    """One affine translator per residual stream but the last: ``h + weight[row] h + bias[row]``."""

    model: str
    weight: torch.Tensor  # (n_layers, d_model, d_model) float32, as nn.Linear's (out, in)
    bias: torch.Tensor  # (n_layers, d_model) float32
    unembed_hash: str = ""  # tuned-lens' hash of the unembedding it was trained through
    fingerprint: str = ""  # lmscope's fingerprint of the weights it was trained on
    source: str = "lmscope"  # "lmscope" or "tuned-lens <folder>"
    training: dict = field(default_factory=dict)  # tokens, steps, seconds, the config, the last losses

    kind = "tuned"
    label = "tuned lens"

    @classmethod
    def identity(cls, lm: LM, bias: bool = True) -> TunedLens:
        """The paper's initialisation: every translator the identity (zero residual)."""
        d = lm.d_model
        return cls(model=lm.name, weight=torch.zeros(lm.n_layers, d, d), bias=torch.zeros(lm.n_layers, d),
                   unembed_hash=unembed_hash(lm), fingerprint=lm.fingerprint())

    @property
    def n_translators(self) -> int:
        """Rows with a translator (the model's layers: every row but the output's)."""
        return self.weight.shape[0]

    def transform_hidden(self, h: torch.Tensor, row: int) -> torch.Tensor:
        """``h + W h + b`` for rows 0 .. n_layers - 1, ``h`` for the last row (the model's output)."""
        if row >= self.n_translators:
            return h
        w, b = self.weight[row].to(h.dtype), self.bias[row].to(h.dtype)
        return h + F.linear(h, w, b)

    def describe(self) -> dict:
        """What a result records of its readout."""
        return {"kind": self.kind, "label": self.label, "source": self.source,
                "tokens": self.training.get("tokens"), "steps": self.training.get("steps")}

    def summary(self) -> dict:
        """Model, shape, where it came from and how it was trained."""
        return {"model": self.model, "n_translators": self.n_translators, "d_model": int(self.weight.shape[-1]),
                "source": self.source, "fingerprint": self.fingerprint, "training": self.training}

    def check_model(self, lm: LM) -> None:
        """Refuse a lens of another shape or unembedding; say so (and go on) when only other weights trained it."""
        if tuple(self.weight.shape) != (lm.n_layers, lm.d_model, lm.d_model):
            raise ArtifactError(f"this tuned lens has {self.n_translators} translators of width "
                                f"{self.weight.shape[-1]}; {lm.name} has {lm.n_layers} layers of width {lm.d_model}")
        if self.unembed_hash and self.unembed_hash != unembed_hash(lm):
            raise ArtifactError(f"this tuned lens was trained through another unembedding than {lm.name}'s "
                                f"(tuned-lens' unembedding hash differs): it reads another model")
        if self.fingerprint and self.fingerprint != lm.fingerprint():
            log.info("the tuned lens of %s was trained on other weights of it (an edit?); its unembedding is the "
                     "same, so it is used", lm.name)


Readout = LogitReadout | TunedLens


def lens_path(lm: LM) -> Path:
    """Where the store keeps the tuned lens of ``lm``'s model (by name: an edited model keeps its lens)."""
    return store.tuned_lens_dir(lm.name)


def stored_lens(lm: LM) -> TunedLens | None:
    """The tuned lens of ``lm`` in the store, checked against it, or None."""
    folder = lens_path(lm)
    if not (folder / CFG_NAME).is_file():
        return None
    lens = TunedLens.load(folder)
    lens.check_model(lm)
    return lens


def resolve_readout(lm: LM, choice: str = "auto") -> Readout:
    """``logit``, ``tuned`` (the store's; an error when there is none) or ``auto`` (tuned when stored)."""
    if choice == "logit":
        return LOGIT
    lens = stored_lens(lm)
    if lens is None and choice == "tuned":
        raise InputError(f"no tuned lens of {lm.name} in the store ({lens_path(lm)}): train one with "
                         f"'lmscope --model {lm.name} lens train', or import a tuned-lens folder with 'lens import'")
    return lens or LOGIT


def read_tuned_lens_folder(folder: str | Path, lm: LM) -> TunedLens:
    """A folder written by tuned-lens (``config.json`` + ``params.pt``) as a :class:`TunedLens` for ``lm``.

    ``params.pt`` is read with ``torch.load(weights_only=True)``: a pickle that holds anything but tensors is refused,
    none of its code runs. The translators must be tuned-lens' linear ones, one per layer, of ``lm``'s width.
    """
    folder = Path(folder)
    cfg, params = folder / "config.json", folder / "params.pt"
    if not cfg.is_file() or not params.is_file():
        raise ArtifactError(f"{folder} is not a tuned-lens folder (config.json and params.pt expected)")
    meta = read_json(cfg)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{cfg} holds no tuned-lens config")
    if meta.get("lens_type", "linear_tuned_lens") != "linear_tuned_lens":
        raise ArtifactError(f"{cfg}: lens_type {meta['lens_type']!r} is not tuned-lens' linear lens")
    try:
        state = torch.load(params, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle / zip errors of every kind: one line)
        raise ArtifactError(f"{params} is not a weights-only tuned-lens checkpoint: {str(err).splitlines()[0]}") \
            from None
    return _from_tuned_lens_state(state, meta, lm, folder)


def _from_tuned_lens_state(state, meta: dict, lm: LM, folder: Path) -> TunedLens:
    """Stack tuned-lens' ``{i}.weight`` / ``{i}.bias`` into a :class:`TunedLens`, every shape checked."""
    n, d = meta.get("num_hidden_layers"), meta.get("d_model")
    if (n, d) != (lm.n_layers, lm.d_model):
        raise ArtifactError(f"{folder}: a lens for {n} layers of width {d}; {lm.name} has {lm.n_layers} of width "
                            f"{lm.d_model}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{folder}/params.pt holds no state dict of tensors")
    has_bias = meta.get("bias", True)
    expected = {f"{i}.weight" for i in range(n)} | ({f"{i}.bias" for i in range(n)} if has_bias else set())
    if set(state) != expected:
        extra, missing = sorted(set(state) - expected)[:3], sorted(expected - set(state))[:3]
        raise ArtifactError(f"{folder}/params.pt: unexpected keys {extra} / missing {missing} (tuned-lens' linear "
                            f"translators expected)")
    weight = torch.stack([state[f"{i}.weight"].float() for i in range(n)])
    bias = torch.stack([state[f"{i}.bias"].float() if f"{i}.bias" in state else torch.zeros(d) for i in range(n)])
    if weight.shape != (n, d, d) or bias.shape != (n, d) or not bool(weight.isfinite().all() & bias.isfinite().all()):
        raise ArtifactError(f"{folder}/params.pt: translators of shape {tuple(weight.shape)} (expected {(n, d, d)}) "
                            f"or non-finite values")
    lens = TunedLens(model=lm.name, weight=weight, bias=bias, unembed_hash=unembed_hash(lm), fingerprint="",
                     source=f"tuned-lens {folder}", training={"base_model": meta.get("base_model_name_or_path")})
    theirs = meta.get("unembed_hash")
    if theirs and theirs != unembed_hash(lm):
        log.warning("%s was trained through another unembedding than %s's (tuned-lens' hash differs): it may read "
                    "another model", folder, lm.name)
    return lens
