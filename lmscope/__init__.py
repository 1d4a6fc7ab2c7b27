"""lmscope: find where a transformer language model stores what it knows, decompose it, and edit it."""

import logging

from lmscope.io import ArtifactError
from lmscope.methods.lens import LensConfig, LogitLensResult, logit_lens
from lmscope.methods.rome import EditRequest, RomeConfig, RomeEdit, apply_edit, rome_edit, second_moment
from lmscope.methods.rome.evaluate import CounterFactResult, EvalConfig, evaluate_counterfact
from lmscope.methods.trace import SubjectError, TraceConfig, TraceResult, causal_trace, restored_prob
from lmscope.methods.trace_dataset import TraceDatasetResult, trace_dataset
from lmscope.model import (
    DEFAULT_MODEL,
    FAMILIES,
    KINDS,
    LM,
    REGISTRY,
    Cache,
    FamilySpec,
    FamilySpecError,
    HookError,
    InputError,
    ModelNotFoundError,
    ModuleSite,
    Op,
    Site,
    SiteError,
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
    "DEFAULT_MODEL", "FAMILIES", "KINDS", "LM", "REGISTRY", "ArtifactError", "Cache", "FamilySpec",
    "FamilySpecError", "HookError", "InputError", "LensConfig", "LogitLensResult", "ModelNotFoundError",
    "ModuleSite", "Op", "Site", "SiteError", "add", "apply", "capture", "hooks", "infer_spec", "list_models",
    "load", "logit_lens", "replace", "zero", "SubjectError", "TraceConfig", "TraceResult", "causal_trace",
    "restored_prob", "TraceDatasetResult", "trace_dataset", "EditRequest", "RomeConfig", "RomeEdit", "apply_edit",
    "rome_edit", "second_moment", "CounterFactResult", "EvalConfig", "evaluate_counterfact",
]
