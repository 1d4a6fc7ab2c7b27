"""ROME (Meng et al. 2022): rank-one model editing, its second-moment statistics, and CounterFact evaluation.

Modules, lowest first: ``config`` (EditRequest, RomeConfig), ``prefixes`` (step 1), ``key`` (step 2), ``stats``
(C = E[k k^T]), ``shipped`` (the statistics shipped for the bundled models' default layers), ``value`` (step 3),
``update`` (step 4, the edit as data, apply / undo), ``edit`` (:func:`rome_edit`, the public entry), ``evaluate``
(CounterFact), ``reference`` (ROME's procedure, the oracle).
"""

from lmscope.methods.rome.config import EditRequest, RomeConfig
from lmscope.methods.rome.edit import resolve_layer, rome_edit
from lmscope.methods.rome.evaluate import CounterFactResult, EvalConfig, evaluate_counterfact
from lmscope.methods.rome.key import Keys, compute_key
from lmscope.methods.rome.prefixes import context_prefixes
from lmscope.methods.rome.stats import SecondMoment, StatsConfig, second_moment
from lmscope.methods.rome.update import EditHandle, RomeEdit, apply_edit, rank_one_update
from lmscope.methods.rome.value import Value, compute_value

__all__ = [
    "CounterFactResult", "EditHandle", "EditRequest", "EvalConfig", "Keys", "RomeConfig", "RomeEdit", "SecondMoment",
    "StatsConfig", "Value", "apply_edit", "compute_key", "compute_value", "context_prefixes", "evaluate_counterfact",
    "rank_one_update", "resolve_layer", "rome_edit", "second_moment",
]
