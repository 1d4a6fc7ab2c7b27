"""ROME rank-one editing (Meng et al. 2022, §3): :func:`rome_edit` runs ROME's named steps.

1. :func:`.prefixes.context_prefixes`: the empty prefix and short texts sampled from the model itself.
2. :func:`.key.compute_key`: k* = the MLP key (input of W_out) at the last subject token, averaged over prefixes.
3. :func:`.value.compute_value`: v* = the W_out output there plus a vector delta, optimised so that the model says
   the new target (NLL), keeps its idea of what the subject is (KL on "{} is a"), with weight decay and a norm clamp.
4. :func:`.update.rank_one_update`: W_out <- W_out + right u^T, with the statistics C = E[k k^T] of
   :func:`.stats.second_moment`.

It returns an :class:`.update.EditHandle` whose ``undo()`` restores the weights bit for bit.
"""

from __future__ import annotations

from lmscope import config as check
from lmscope.methods.rome.config import EditRequest, RomeConfig
from lmscope.methods.rome.key import compute_key
from lmscope.methods.rome.prefixes import context_prefixes
from lmscope.methods.rome.stats import SecondMoment, second_moment
from lmscope.methods.rome.update import EditHandle, RomeEdit, apply_edit, rank_one_update
from lmscope.methods.rome.value import compute_value
from lmscope.model.edits import weight_digest
from lmscope.model.lm import LM
from lmscope.model.peaks import auto_layer
from lmscope.model.sites import Site
from lmscope.model.tokens import subject_last_token


def resolve_layer(lm: LM, config: RomeConfig) -> tuple[int, str]:
    """(the edit layer, how it was chosen): the configured one, or for "auto" the best known MLP peak."""
    if config.layer != "auto":
        return lm.check(Site(int(config.layer), "mlp_out")).layer, "given"
    peak = auto_layer(lm)
    return lm.check(Site(peak.layer, "mlp_out")).layer, peak.describe()


def rome_edit(lm: LM, request: EditRequest, config: RomeConfig | None = None, stats: SecondMoment | None = None,
              prefixes: list[str] | None = None) -> EditHandle:
    """Edit ``lm`` in place so that ``request.text`` continues with ``request.target``; returns the undo handle.

    ``stats``: the second moment at the edit layer (default: the cached one, computed on first use).
    ``prefixes``: the context prefixes (default: sampled now with the config's seed).
    """
    config = config or RomeConfig()
    check.token_bounds(config, lambda text: lm.tokenize(text)["input_ids"].shape[1])
    layer, source = resolve_layer(lm, config)
    subject_last_token(lm, request.prompt, request.subject)  # bad input fails before any work
    prefixes = prefixes or context_prefixes(lm, config)
    keys = compute_key(lm, request, layer, prefixes)
    moment = None
    if config.mom2_adjustment:
        stats = stats or second_moment(lm, layer, config.stats_corpus, config.stats_samples)
        stats.check(lm, layer)
        moment = stats.matrix
    value = compute_value(lm, request, layer, prefixes, config)
    u, right = rank_one_update(keys.k_star, keys.k, keys.v, value.v_star, moment)
    edit = RomeEdit(model=lm.name, layer=layer, request=request, u=u, right=right,
                    weights=weight_digest(lm, layer), v0_norm=float(value.v0.norm()),
                    delta_norm=float(value.delta.norm()), losses=value.losses, prefixes=prefixes,
                    stats_texts=stats.texts if moment is not None else 0, config=config, layer_source=source)
    return apply_edit(lm, edit)
