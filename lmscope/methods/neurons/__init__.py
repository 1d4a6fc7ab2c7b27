"""Neurons that write a token: forward contribution and gradient x activation, causal checks, editing.

Modules, lowest first: ``config`` (NeuronConfig, AblationConfig, CaptionConfig, OcclusionConfig, NeuronEditConfig),
``result`` (NeuronResult, AblationResult, OcclusionResult, SensitivityResult, NeuronEdit), ``scores`` (one scoring
pass), ``find`` (:func:`find_neurons`), ``causal`` (:func:`ablate_neurons`, :func:`sensitivity`), ``edit``
(:func:`neuron_edit`), ``vision`` (the same for an image: neurons per caption word, patch maps,
:func:`occlusion_check`).
"""

from lmscope.methods.neurons.causal import ablate_neurons, ablation_ops, key_stats, sensitivity
from lmscope.methods.neurons.config import (
    AblationConfig,
    CaptionConfig,
    NeuronConfig,
    NeuronEditConfig,
    OcclusionConfig,
)
from lmscope.methods.neurons.edit import NeuronEditHandle, apply_neuron_edit, neuron_edit
from lmscope.methods.neurons.find import find_neurons
from lmscope.methods.neurons.result import (
    AblationResult,
    NeuronEdit,
    NeuronResult,
    OcclusionResult,
    SensitivityResult,
)
from lmscope.methods.neurons.scores import score_batch, vocab_projection
from lmscope.methods.neurons.vision import caption_targets, find_image_neurons, occlusion_check

__all__ = ["AblationConfig", "AblationResult", "CaptionConfig", "NeuronConfig", "NeuronEdit", "NeuronEditConfig",
           "NeuronEditHandle", "NeuronResult", "OcclusionConfig", "OcclusionResult", "SensitivityResult",
           "ablate_neurons", "ablation_ops", "apply_neuron_edit", "caption_targets", "find_image_neurons",
           "find_neurons", "key_stats", "neuron_edit", "occlusion_check", "score_batch", "sensitivity",
           "vocab_projection"]
