"""Every error a user can cause derives from :class:`LmscopeError`; the command line prints it as one line.

The classes live here, at the bottom of the package, so that every layer raises the same types; the modules that
raise them also re-export them under their old names.
"""

from __future__ import annotations


class LmscopeError(Exception):
    """Base class of every user-facing lmscope error (bad input, a missing or corrupt file, an unknown model)."""


class ConfigError(LmscopeError):
    """A config field with a value that makes no sense (non-positive count, non-finite scale, unknown choice)."""


class InputError(LmscopeError):
    """A prompt or token input the model cannot take (empty prompt, wrong shape, longer than the context)."""


class SubjectError(InputError):
    """The subject string does not occur in the prompt."""


class SiteError(LmscopeError):
    """A site that does not exist in this model (unknown kind, layer out of range)."""


class HookError(LmscopeError):
    """An intervention that cannot be applied (wrong shape, position out of range, ...)."""


class PatternHookError(HookError):
    """Attention patterns cannot be read from this attention module."""


class FamilySpecError(LmscopeError):
    """A family spec does not fit the model, or the structural fallback cannot be sure."""


class ModelNotFoundError(LmscopeError):
    """The name is neither a bundled model, a local folder or .gguf file, nor a reachable hub id."""


class AssetError(LmscopeError):
    """A packaged file could not be found, downloaded or verified."""


class ArtifactError(LmscopeError):
    """An artifact folder is missing, corrupt, or holds another kind of result."""


class DataError(LmscopeError):
    """A dataset file that is missing, unreadable, empty or not in the expected layout."""


class RunError(LmscopeError):
    """An output folder that cannot be used: not writable, or holding a run of another model or configuration."""


class EditError(LmscopeError):
    """A weight edit that cannot be applied or undone (other weights, wrong order)."""


class TrainingError(LmscopeError):
    """Training cannot go on (a non-finite loss); the last good state is checkpointed first."""


class EndpointError(LmscopeError):
    """An HTTP model endpoint cannot be reached, refuses, or the run's request budget is spent."""
