"""ROME (Meng et al. 2022): rank-one model editing, its second-moment statistics, and CounterFact evaluation."""

from lmscope.methods.rome.edit import (
    EditHandle,
    EditRequest,
    RomeConfig,
    RomeEdit,
    apply_edit,
    compute_key,
    context_prefixes,
    rank_one_update,
    rome_edit,
)
from lmscope.methods.rome.stats import SecondMoment, second_moment
from lmscope.methods.rome.value import compute_value

__all__ = [
    "EditHandle", "EditRequest", "RomeConfig", "RomeEdit", "SecondMoment", "apply_edit", "compute_key",
    "compute_value", "context_prefixes", "rank_one_update", "rome_edit", "second_moment",
]
