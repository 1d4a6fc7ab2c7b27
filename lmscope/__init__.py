"""lmscope: find where a transformer language model stores what it knows, decompose it, and edit it."""

import logging

from lmscope.errors import (
    ArtifactError,
    AssetError,
    ConfigError,
    DataError,
    EditError,
    EndpointError,
    FamilySpecError,
    HookError,
    InputError,
    LmscopeError,
    ModelNotFoundError,
    PatternHookError,
    RunError,
    SiteError,
    SubjectError,
    TrainingError,
)
from lmscope.io import Result, load_result
from lmscope.methods.autointerp import AutointerpResult, SampleConfig, ScoreConfig, autointerp
from lmscope.methods.lens import LensConfig, LogitLensResult, logit_lens
from lmscope.methods.neurons import (
    AblationConfig,
    AblationResult,
    NeuronConfig,
    NeuronEdit,
    NeuronEditConfig,
    NeuronResult,
    SensitivityResult,
    ablate_neurons,
    apply_neuron_edit,
    find_neurons,
    neuron_edit,
    sensitivity,
)
from lmscope.methods.patching import (
    PatchConfig,
    PatchingResult,
    activation_patching,
    attribution_patching,
    logit_diff,
    target_prob,
)
from lmscope.methods.patching.ioi import IOIConfig, IOIFeatureResult, ioi_features
from lmscope.methods.projector import ProjectorConfig, ProjectorResult, train_projector
from lmscope.methods.rome import (
    CounterFactResult,
    EditRequest,
    EvalConfig,
    RomeConfig,
    RomeEdit,
    apply_edit,
    evaluate_counterfact,
    rome_edit,
    second_moment,
)
from lmscope.methods.sae import (
    FeatureExamples,
    HarvestConfig,
    Job,
    SaeConfig,
    SaeEvalResult,
    TrainConfig,
    evaluate_sae,
    harvest,
    load_sae,
    save_sae,
    splice,
    train_saes,
)
from lmscope.methods.stages import LesionConfig, LesionResult, StagesConfig, StagesResult, lesion_prompt, stages
from lmscope.methods.trace import (
    TraceConfig,
    TraceDatasetResult,
    TraceResult,
    causal_trace,
    restored_prob,
    trace_dataset,
)
from lmscope.model import (
    DEFAULT_MODEL,
    FAMILIES,
    KINDS,
    LM,
    REGISTRY,
    ActivationCache,
    Cache,
    FamilySpec,
    ModuleSite,
    Op,
    Site,
    add,
    apply,
    capture,
    hooks,
    infer_spec,
    list_models,
    load,
    replace,
    zero,
)

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AutointerpResult", "FeatureExamples", "IOIConfig", "IOIFeatureResult", "PatchConfig", "PatchingResult",
    "SampleConfig", "ScoreConfig", "activation_patching", "attribution_patching", "autointerp", "ioi_features",
    "logit_diff", "target_prob",
    "AblationConfig", "AblationResult", "NeuronConfig", "NeuronEdit", "NeuronEditConfig", "NeuronResult",
    "SensitivityResult", "ablate_neurons", "apply_neuron_edit", "find_neurons", "neuron_edit", "sensitivity",
    "ProjectorConfig", "ProjectorResult", "train_projector",
    "ActivationCache", "ArtifactError", "AssetError", "Cache", "ConfigError", "CounterFactResult", "DEFAULT_MODEL",
    "DataError", "EditError", "EditRequest", "EvalConfig", "FAMILIES", "FamilySpec", "FamilySpecError",
    "HarvestConfig", "HookError", "InputError", "Job", "KINDS", "LM", "LensConfig", "LesionConfig", "LesionResult",
    "LmscopeError", "LogitLensResult", "ModelNotFoundError", "ModuleSite", "Op", "PatternHookError", "REGISTRY",
    "Result", "RomeConfig", "RomeEdit", "RunError", "SaeConfig", "SaeEvalResult", "Site", "SiteError", "StagesConfig",
    "StagesResult", "SubjectError", "TraceConfig", "TraceDatasetResult", "TraceResult", "TrainConfig",
    "TrainingError", "EndpointError", "add", "apply", "apply_edit", "capture", "causal_trace", "evaluate_counterfact",
    "evaluate_sae",
    "harvest", "hooks", "infer_spec", "lesion_prompt", "list_models", "load", "load_result", "load_sae", "logit_lens",
    "replace", "restored_prob", "rome_edit", "save_sae", "second_moment", "splice", "stages", "trace_dataset",
    "train_saes", "zero",
]
