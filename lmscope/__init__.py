"""lmscope: find where a transformer language model stores what it knows, decompose it, and edit it."""

import logging

from lmscope.errors import (
    ArtifactError,
    AssetError,
    ConfigError,
    DataError,
    EditError,
    FamilySpecError,
    HookError,
    InputError,
    LmscopeError,
    ModelNotFoundError,
    PatternHookError,
    RunError,
    SiteError,
    SubjectError,
)
from lmscope.io import Result, load_result
from lmscope.methods.lens import LensConfig, LogitLensResult, logit_lens
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
    "DEFAULT_MODEL", "FAMILIES", "KINDS", "LM", "REGISTRY", "ActivationCache", "ArtifactError", "AssetError", "Cache",
    "ConfigError", "CounterFactResult", "DataError", "EditError", "EditRequest", "EvalConfig", "FamilySpec",
    "FamilySpecError", "HookError", "InputError", "LensConfig", "LesionConfig", "LesionResult", "LmscopeError",
    "LogitLensResult", "ModelNotFoundError", "ModuleSite", "Op", "PatternHookError", "Result", "RomeConfig",
    "RomeEdit", "RunError", "Site", "SiteError", "StagesConfig", "StagesResult", "SubjectError", "TraceConfig",
    "TraceDatasetResult", "TraceResult", "add", "apply", "apply_edit", "capture", "causal_trace",
    "evaluate_counterfact", "hooks", "infer_spec", "lesion_prompt", "list_models", "load", "load_result",
    "logit_lens", "replace", "restored_prob", "rome_edit", "second_moment", "stages", "trace_dataset", "zero",
]
