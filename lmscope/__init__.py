"""lmscope: find where a transformer language model stores what it knows, decompose it, and edit it.

The main entry points are here (``lmscope.load``, ``lmscope.Site``, ``lmscope.causal_trace``, ...); each method
family's whole API is under its namespace: ``lmscope.sae``, ``lmscope.rome``, ``lmscope.trace``, ``lmscope.neurons``,
``lmscope.patching``, ``lmscope.autointerp``, ``lmscope.lens``, ``lmscope.projector``, ``lmscope.graphs`` (and
``lmscope.methods.stages``), where names are unique: ``lmscope.sae.EvalConfig`` and ``lmscope.rome.EvalConfig``.
Everything is imported on first use (PEP 562), so ``import lmscope`` and ``lmscope --help`` are quick.
"""

import importlib
import logging
import warnings

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS: dict[str, tuple[str, ...]] = {
    "lmscope.errors": (
        "ArtifactError", "AssetError", "ConfigError", "DataError", "EditError", "EndpointError", "FamilySpecError",
        "HookError", "InputError", "LmscopeError", "ModelNotFoundError", "PatternHookError", "RunError", "SiteError",
        "SubjectError", "TrainingError"
    ),
    "lmscope.io": (
        "Result", "load_result"
    ),
    "lmscope.methods.autointerp": (
        "AutointerpResult", "SampleConfig", "ScoreConfig", "autointerp"
    ),
    "lmscope.methods.graphs": (
        "AttributionGraph", "GraphConfig", "attribution_graph"
    ),
    "lmscope.methods.lens": (
        "CompareConfig", "LensComparison", "LensConfig", "LogitLensResult", "TuneConfig", "TunedLens",
        "compare_lenses", "logit_lens", "train_tuned_lens"
    ),
    "lmscope.methods.neurons": (
        "AblationConfig", "AblationResult", "CaptionConfig", "NeuronConfig", "NeuronEdit", "NeuronEditConfig",
        "NeuronResult", "SensitivityResult", "ablate_neurons", "apply_neuron_edit", "caption_targets",
        "find_image_neurons", "find_neurons", "neuron_edit", "sensitivity"
    ),
    "lmscope.methods.patching": (
        "PatchConfig", "PatchingResult", "activation_patching", "attribution_patching", "logit_diff", "target_prob"
    ),
    "lmscope.methods.patching.ioi": (
        "IOIConfig", "IOIFeatureResult", "ioi_features"
    ),
    "lmscope.methods.projector": (
        "ProjectorConfig", "ProjectorResult", "train_projector"
    ),
    "lmscope.methods.rome": (
        "CounterFactResult", "EditRequest", "EvalConfig", "RomeConfig", "RomeEdit", "apply_edit",
        "evaluate_counterfact", "rome_edit", "second_moment"
    ),
    "lmscope.methods.sae": (
        "FeatureExamples", "HarvestConfig", "Job", "SaeConfig", "SaeEvalResult", "TrainConfig", "evaluate_sae",
        "harvest", "load_sae", "save_sae", "splice", "train_saes"
    ),
    "lmscope.methods.stages": (
        "LesionConfig", "LesionResult", "StagesConfig", "StagesResult", "lesion_prompt", "stages"
    ),
    "lmscope.methods.trace": (
        "TraceConfig", "TraceDatasetResult", "TraceResult", "causal_trace", "restored_prob", "trace_dataset"
    ),
    "lmscope.model": (
        "ActivationCache", "Cache", "DEFAULT_MODEL", "FAMILIES", "FamilySpec", "KINDS", "LM", "ModuleSite", "Op",
        "REGISTRY", "Site", "add", "apply", "capture", "hooks", "infer_spec", "list_models", "load", "replace", "zero"
    ),
    "lmscope.model.vlm_layouts": (
        "image_token_boxes", "image_token_layout"
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
NAMESPACES = ("autointerp", "graphs", "lens", "neurons", "patching", "projector", "rome", "sae", "trace")
# flat names that two families define: they stay for a release, with a warning saying which one they are
AMBIGUOUS = {"EvalConfig": "lmscope.rome.EvalConfig (the SAE's is lmscope.sae.EvalConfig)",
             "Job": "lmscope.sae.Job (an SAE training job)"}

__all__ = sorted(set(_WHERE) - set(AMBIGUOUS)) + list(NAMESPACES)


def __getattr__(name: str):
    if name in NAMESPACES or name in _submodules():  # lmscope.sae, lmscope.data, lmscope.io, ...
        return importlib.import_module(f"lmscope.{name}")
    if name not in _WHERE:
        raise AttributeError(f"module 'lmscope' has no attribute {name!r}")
    if name in AMBIGUOUS:
        warnings.warn(f"lmscope.{name} is ambiguous and will go: use {AMBIGUOUS[name]}", DeprecationWarning,
                      stacklevel=2)
    value = getattr(importlib.import_module(_WHERE[name]), name)
    if name not in AMBIGUOUS:
        globals()[name] = value  # the next access is a plain attribute
    return value


def _submodules() -> set[str]:
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(__path__)}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
