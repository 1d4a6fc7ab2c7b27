"""Sparse autoencoders (Cunningham et al. 2023): harvest activations, train dictionaries, evaluate, use.

Modules, lowest first: ``config`` (SaeConfig, HarvestConfig, TrainConfig), ``registry`` (the architectures by
name), ``arch/`` (tied, relu, topk, batchtopk, jumprelu, matryoshka behind one interface, each registering
itself; all but tied may be transcoders), ``harvest`` (buffers of the activation stream and their disk cache, per
torchrun rank), ``artifacts`` (save / load, SAELens and
sparsify layouts, :func:`check_sae` before use), ``dead`` (dead latents, resampling), ``splice`` (hooks that use an
SAE in the model), ``train`` (:func:`train_saes`, sweeps included), ``evaluate`` (:func:`evaluate_sae`),
``features`` (examples of each feature for its page), ``synthetic`` (activations drawn from a known dictionary, and
how well a dictionary recovers it).
"""

from lmscope.distributed import World
from lmscope.methods.sae.arch import CLASSES, ForwardOutput, SparseAutoencoder, build_sae
from lmscope.methods.sae.artifacts import check_sae, check_target, load_sae, save_sae
from lmscope.methods.sae.config import ARCHITECTURES, HarvestConfig, SaeConfig, TrainConfig
from lmscope.methods.sae.evaluate import EvalConfig, SaeEvalResult, evaluate_sae
from lmscope.methods.sae.features import FeatureConfig, FeatureExamples, feature_examples
from lmscope.methods.sae.harvest import ActivationStream, harvest, parse_site, site_key
from lmscope.methods.sae.splice import feature_acts, set_feature, splice, splice_transcoder
from lmscope.methods.sae.synthetic import SynthConfig, SyntheticActivations, recovery
from lmscope.methods.sae.train import Job, fit_saes, train_saes

__all__ = [
    "ARCHITECTURES", "ActivationStream", "CLASSES", "EvalConfig", "FeatureConfig", "FeatureExamples", "ForwardOutput",
    "HarvestConfig", "Job", "SaeConfig", "SaeEvalResult", "SparseAutoencoder", "SynthConfig", "SyntheticActivations",
    "TrainConfig", "World", "build_sae", "check_sae", "check_target", "evaluate_sae", "feature_acts",
    "feature_examples", "fit_saes", "harvest", "load_sae", "parse_site", "recovery", "save_sae", "set_feature",
    "site_key", "splice", "splice_transcoder", "train_saes",
]
