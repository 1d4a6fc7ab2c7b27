"""Lenses: every residual stream read as a prediction, through the logit lens or a tuned lens.

The readout seam (the logit lens, a tuned lens, the store's lens, tuned-lens folders) is in the model layer,
:mod:`lmscope.model.readout`, since every method that reads a layer's prediction uses it.

Modules, lowest first: ``config`` (LensConfig, TuneConfig, CompareConfig), ``logit`` (the lens of one prompt),
``train`` (training a tuned lens), ``compare`` (the logit and the tuned lens layer by layer on held-out text).
"""

from lmscope.methods.lens.compare import LensComparison, compare_lenses
from lmscope.methods.lens.config import CompareConfig, LensConfig, TuneConfig
from lmscope.methods.lens.logit import LogitLensResult, logit_lens
from lmscope.methods.lens.train import train_tuned_lens
from lmscope.model.readout import (
    LOGIT,
    READOUTS,
    LogitReadout,
    Readout,
    TunedLens,
    lens_path,
    read_tuned_lens_folder,
    resolve_readout,
    stored_lens,
)

__all__ = [
    "LOGIT", "READOUTS", "CompareConfig", "LensComparison", "LensConfig", "LogitLensResult", "LogitReadout",
    "Readout", "TuneConfig", "TunedLens", "compare_lenses", "lens_path", "logit_lens", "read_tuned_lens_folder",
    "resolve_readout", "stored_lens", "train_tuned_lens",
]
