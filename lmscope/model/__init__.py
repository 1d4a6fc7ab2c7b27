"""The model layer: loading, family specs, typed sites and the hook core."""

from lmscope.model.families import FAMILIES, FamilySpec, FamilySpecError, infer_spec
from lmscope.model.hooks import Cache, HookError, Op, add, apply, capture, hooks, replace, zero
from lmscope.model.lm import LM, InputError
from lmscope.model.loading import DEFAULT_MODEL, REGISTRY, ModelNotFoundError, list_models, load
from lmscope.model.sites import KINDS, ModuleSite, Site, SiteError

__all__ = [
    "FAMILIES", "KINDS", "REGISTRY", "DEFAULT_MODEL", "LM", "Cache", "FamilySpec", "FamilySpecError", "HookError",
    "InputError", "ModelNotFoundError", "ModuleSite", "Op", "Site", "SiteError", "add", "apply", "capture", "hooks",
    "infer_spec", "list_models", "load", "replace", "zero",
]
