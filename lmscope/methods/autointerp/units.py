"""The units whose activations are explained: SAE features, MLP neurons, and directions of a site's activations.

Every unit set is a :class:`lmscope.model.units.Units` narrowed to the units explained: it reads their
activations from one site's activations, (n, d) -> (n, units). The baselines of
Cunningham et al. are directions in the SAE's site: random unit vectors, the top principal components, and ICA
components (FastICA, symmetric, log-cosh, on the whitened top components), each read as a projection of the
centred activation; ICA signs are chosen so that the heavy tail is positive. A site has at most as many PCA / ICA
directions as the rank of its fit activations (fewer than asked are logged, not padded). A unit whose activation is
not finite on the fit activations (a NaN weight) is an :class:`ArtifactError` naming it, not a unit that never fires.
"""

from __future__ import annotations

import logging

import torch

from lmscope.errors import ArtifactError, InputError
from lmscope.model.sites import Site
from lmscope.model.units import Units, coordinates, projections

log = logging.getLogger(__name__)


def _sample(candidates: torch.Tensor, n: int, gen: torch.Generator) -> list[int]:
    pick = candidates[torch.randperm(candidates.numel(), generator=gen)[:n]]
    return sorted(pick.tolist())


def chosen(explicit: tuple[int, ...], width: int, what: str) -> list[int] | None:
    """Explicit unit indices, checked against the basis width (None: sample instead)."""
    bad = [u for u in explicit if not 0 <= u < width]
    if bad:
        raise InputError(f"{what} {bad} out of range: this layer has {what} 0..{width - 1}")
    return sorted(set(explicit)) or None


def sampled(units: Units, fit: torch.Tensor, n: int, gen: torch.Generator, explicit: tuple[int, ...] = (),
            active: str = "fires", what: str = "units") -> Units:
    """``n`` of ``units`` sampled among the active ones on the fit activations (n_fit, d), or the ``explicit`` ones.

    ``active``: "fires" (an SAE feature that is positive somewhere) or "varies" (a neuron whose activation is not
    constant).
    """
    with torch.no_grad():
        a = units.encode(fit)
        bad = (~torch.isfinite(a)).any(0).nonzero().flatten().tolist()
        if bad:
            raise ArtifactError(f"{what.rstrip('s')} {units.unit_ids[bad[0]]} is not finite on the corpus ({len(bad)} "
                                f"of {a.shape[1]} {what} are not): the weights that read it (the SAE's or the model's) "
                                "hold NaN or infinity; check them, or run in float32")
        mask = (a > 0).any(0) if active == "fires" else a.std(0) > 0
    ids = chosen(explicit, units.n_units, what) or _sample(mask.nonzero().flatten().cpu(), n, gen)
    if not ids:
        raise InputError(f"none of the {units.n_units} {what} at {units.site} "
                         f"{'fires' if active == 'fires' else 'varies'} on the {fit.shape[0]} fit activations: "
                         "nothing to explain (read more with --fit-tokens, or check the weights)")
    return units.select(ids)


def sae_units(features: Units, fit: torch.Tensor, n: int, gen: torch.Generator,
              explicit: tuple[int, ...] = ()) -> Units:
    """``n`` SAE features (``sae.units(site)``) sampled among those that fire on the fit activations."""
    return sampled(features, fit, n, gen, explicit, "fires", "SAE features")


def neuron_units(site: Site, fit: torch.Tensor, n: int, gen: torch.Generator,
                 explicit: tuple[int, ...] = ()) -> Units:
    """``n`` MLP neurons (columns of mlp_key) sampled among those that vary on the fit activations, or ``explicit``."""
    return sampled(coordinates("neurons", site, fit.shape[1]), fit, n, gen, explicit, "varies", "neurons")


def random_units(site: Site, fit: torch.Tensor, n: int, gen: torch.Generator) -> Units:
    """``n`` random unit directions."""
    directions = torch.nn.functional.normalize(torch.randn(n, fit.shape[1], generator=gen), dim=-1)
    return projections("random", site, fit.mean(0).cpu(), directions)


def _rank(s: torch.Tensor) -> int:
    """The number of singular values ``s`` (descending) that are not numerically zero."""
    return int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0


def _fewer(kind: str, n: int, rank: int) -> int:
    if rank < n:
        log.warning("%s: the fit activations span %d dimensions, so %d directions instead of %d", kind, rank, rank, n)
    if rank == 0:
        raise InputError(f"{kind}: the fit activations do not vary, so they have no {kind} directions; read more "
                         "tokens (--fit-tokens) or another layer")
    return min(n, rank)


def pca_units(site: Site, fit: torch.Tensor, n: int) -> Units:
    """The top ``n`` principal components (at most the rank of the activations)."""
    mean = fit.mean(0)
    _, s, vt = torch.linalg.svd((fit - mean).double(), full_matrices=False)
    n = _fewer("pca", n, _rank(s))
    return projections("pca", site, mean.cpu(), vt[:n].float().cpu())


def fast_ica(x: torch.Tensor, n: int, gen: torch.Generator, iters: int = 200, tol: float = 1e-4) -> torch.Tensor:
    """(n, d) unmixing directions of the rows of x (centred inside): s = (x - mean) @ W.T.

    At most as many directions as the rank of x (the whitening divides by its singular values).
    """
    xc = (x - x.mean(0)).double()
    _, s, vt = torch.linalg.svd(xc / xc.shape[0] ** 0.5, full_matrices=False)
    n = _fewer("ica", n, _rank(s))
    whiten = vt[:n] / s[:n, None]  # (n, d): z = xc @ whiten.T has unit covariance
    z = xc @ whiten.T
    w = torch.linalg.qr(torch.randn(n, n, generator=gen).double())[0]
    for _ in range(iters):
        g = torch.tanh(z @ w.T)  # (rows, n)
        new = (g.T @ z) / z.shape[0] - (1 - g.pow(2)).mean(0)[:, None] * w
        u, _, vh = torch.linalg.svd(new)
        new = u @ vh  # symmetric decorrelation: (W W^T)^(-1/2) W
        done = float((torch.diag(new @ w.T).abs() - 1).abs().max()) < tol
        w = new
        if done:
            break
    directions = w @ whiten  # (n, d)
    skew = ((xc @ directions.T) ** 3).mean(0)
    return (directions * torch.sign(skew)[:, None]).float()


def ica_units(site: Site, fit: torch.Tensor, n: int, gen: torch.Generator) -> Units:
    """``n`` independent components of the activations."""
    return projections("ica", site, fit.mean(0).cpu(), fast_ica(fit.cpu(), n, gen))


#: Positive controls: units that are the indicator of a set of words, a meaning known by construction. Each word
#: counts as itself and with a leading space, wherever the model's tokenizer gives it one token.
PLANTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("capital cities", ("Paris", "London", "Berlin", "Rome", "Madrid", "Tokyo", "Moscow", "Beijing", "Vienna",
                        "Athens", "Dublin", "Lisbon", "Cairo", "Delhi", "Ottawa", "Canberra", "Warsaw", "Prague",
                        "Stockholm", "Oslo", "Brussels", "Amsterdam", "Washington")),
    ("digits", tuple("0123456789")),
    ("the word 'the'", ("the", "The")),
    ("month names", ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                     "October", "November", "December")),
    ("colour words", ("red", "blue", "green", "yellow", "black", "white", "brown", "purple", "orange", "pink",
                      "grey", "gray")),
    ("third-person singular pronouns", ("he", "she", "him", "her", "his", "He", "She", "His", "Her")),
    ("country names", ("France", "Germany", "Italy", "Spain", "Japan", "China", "India", "Russia", "Canada", "Mexico",
                       "Brazil", "Egypt", "Greece", "Poland", "Sweden", "Norway", "Ireland", "Portugal", "Australia",
                       "England", "Scotland", "Iran", "Turkey")),
    ("family members", ("father", "mother", "son", "daughter", "brother", "sister", "wife", "husband", "children",
                        "child", "parents")),
)
SAME_TOKEN = 0.9999  # cosine between a position's embedding and a word's embedding row: the same token


def planted_tokens(tokenizer, words: tuple[str, ...]) -> list[int]:
    """The token ids of ``words`` (each with and without a leading space) that are one token each.

    A special token (the unknown token a word-level tokenizer gives an unknown word) is never a word's.
    """
    ids, special = set(), set(getattr(tokenizer, "all_special_ids", ()))
    for word in words:
        for form in (word, " " + word):
            piece = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(piece) == 1 and int(piece[0]) not in special:
                ids.add(int(piece[0]))
    return sorted(ids)


def planted_units(site: Site, embedding: torch.Tensor, tokenizer) -> Units:
    """The :data:`PLANTED` units at the ``embed`` site: unit u reads 1 where the position's token is one of set u's.

    A position's token is recognised by its embedding (``embedding``: the model's input embedding matrix, (vocab,
    d)): a cosine of at least :data:`SAME_TOKEN` with a row of the set (any scale the model applies is immaterial).
    Sets of which the tokenizer has no one-token word are left out (logged); unit ids index :data:`PLANTED`.
    """
    sets = [(u, planted_tokens(tokenizer, words)) for u, (_, words) in enumerate(PLANTED)]
    for u, ids in sets:
        if not ids:
            log.info("planted unit %d (%s): no word of it is one token here; left out", u, PLANTED[u][0])
    sets = [(u, ids) for u, ids in sets if ids]
    if not sets:
        raise InputError("no planted unit has a one-token word in this model's tokenizer")
    token_ids = sorted({t for _, ids in sets for t in ids})
    rows = torch.nn.functional.normalize(embedding[token_ids].detach().float(), dim=-1)  # (m, d)
    member = torch.zeros(len(token_ids), len(PLANTED))  # (m, units): token j is a word of set u
    for u, ids in sets:
        member[[token_ids.index(t) for t in ids], u] = 1.0

    def encode(x: torch.Tensor) -> torch.Tensor:  # (n, d) -> (n, len(PLANTED))
        same = torch.nn.functional.normalize(x.float(), dim=-1) @ rows.to(x.device).T >= SAME_TOKEN  # (n, m)
        return (same.float() @ member.to(x.device)).clamp(max=1.0)

    return Units("planted", site, len(PLANTED), encode).select([u for u, _ in sets])
