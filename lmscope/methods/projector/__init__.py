"""Projector training for the bundled vision-language model: ``config`` -> ``train`` (:func:`train_projector`)."""

from lmscope.methods.projector.config import ProjectorConfig
from lmscope.methods.projector.train import ProjectorResult, caption, train_projector

__all__ = ["ProjectorConfig", "ProjectorResult", "caption", "train_projector"]
