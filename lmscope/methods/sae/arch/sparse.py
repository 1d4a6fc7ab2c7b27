"""Training steps at the cost of their sparsity: only the encoder's forward matmul is dense.

With k active latents per row, the reconstruction x_hat = sum_j c_j W_dec[j] needs n k d multiply-adds, not
n d_sae d; the gradients of the encoder reach only the selected pre-activations. :func:`sparse_encode` returns the
selected pre-activations with a backward pass through ``embedding_bag`` sums, :func:`sparse_decode` the
reconstruction through ``embedding_bag``. Both take the selection as (rows, cols) pairs, rows sorted, so one row
may hold any number of latents (BatchTopK, ReLU).

TopK variants always train this way. The L1 variants (ReLU) start dense (half the latents fire at initialisation)
and become sparse as the penalty bites: :func:`l1_training_step` takes the sparse route for a batch whose
density is under ``SPARSE_BELOW`` and the dense one otherwise, both from one encoder matmul (:func:`dense_encode`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Pre(NamedTuple):
    """The encoder's inputs and its pre-activations, computed once without gradient."""

    x: torch.Tensor  # (n, d_in) inputs (the data: no gradient is computed for them unless they require one)
    b_dec: torch.Tensor  # (d_in,) subtracted before encoding
    w_enc: torch.Tensor  # (d_in, d_sae)
    b_enc: torch.Tensor  # (d_sae,)
    x_c: torch.Tensor  # (n, d_in) x - b_dec
    pre: torch.Tensor  # (n, d_sae) x_c W_enc + b_enc


def pre_activations(x: torch.Tensor, b_dec: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor) -> Pre:
    """(x - b_dec) W_enc + b_enc without gradient, in x's dtype (the matmul in the autocast dtype, if on)."""
    with torch.no_grad():
        x_c = x - b_dec
        return Pre(x, b_dec, w_enc, b_enc, x_c, torch.addmm(b_enc, x_c, w_enc).to(x.dtype))


def _input_grads(ctx, grad_b: torch.Tensor, w_enc: torch.Tensor, full_x):
    """Gradients of x (only when it requires one: ``full_x()``) and of b_dec = -(the rows' sum) W_enc^T."""
    grad_x = full_x() if ctx.needs_input_grad[0] else None
    grad_b_dec = -(grad_b @ w_enc.t()) if ctx.needs_input_grad[1] else None
    return grad_x, grad_b_dec


class _SparseEncode(torch.autograd.Function):
    """vals = pre[rows, cols]; backward through the selected entries only."""

    @staticmethod
    def forward(ctx, x, b_dec, w_enc, b_enc, x_c, pre, rows, cols):  # x_c: (n, d_in); pre: (n, d_sae), no grad
        ctx.save_for_backward(x_c, w_enc, rows, cols)
        return pre[rows, cols]  # (nnz,)

    @staticmethod
    def backward(ctx, grad):  # grad: (nnz,)
        x_c, w_enc, rows, cols = ctx.saved_tensors
        n, d_sae = x_c.shape[0], w_enc.shape[1]
        grad_b = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        grad_w = None
        if ctx.needs_input_grad[2]:  # latent c: sum of grad_j x_c[row_j] over the entries that selected it
            order = cols.argsort()
            grad_w = F.embedding_bag(rows[order], x_c, _offsets(cols[order], d_sae), mode="sum",
                                     per_sample_weights=grad[order]).t()  # (d_in, d_sae)
        grad_x, grad_b_dec = _input_grads(  # row i: sum of grad_j W_enc[:, col_j] over its entries
            ctx, grad_b, w_enc, lambda: F.embedding_bag(cols, w_enc.t(), _offsets(rows, n), mode="sum",
                                                        per_sample_weights=grad))
        return grad_x, grad_b_dec, grad_w, grad_b, None, None, None, None


class _DenseEncode(torch.autograd.Function):
    """pre with its gradient; backward through the full products."""

    @staticmethod
    def forward(ctx, x, b_dec, w_enc, b_enc, x_c, pre):  # pre: (n, d_sae), no grad
        ctx.save_for_backward(x_c, w_enc)
        ctx.amp = _autocast_state(x_c.device.type)
        return pre.view_as(pre)

    @staticmethod
    def backward(ctx, grad):  # grad: (n, d_sae)
        x_c, w_enc = ctx.saved_tensors
        grad_w, grad_b = None, grad.sum(0)  # (d_sae,)
        with torch.autocast(x_c.device.type, dtype=ctx.amp, enabled=ctx.amp is not None):  # as the forward's matmul
            if ctx.needs_input_grad[2]:
                grad_w = (x_c.t() @ grad).to(w_enc.dtype)
            grad_x, grad_b_dec = _input_grads(ctx, grad_b, w_enc, lambda: (grad @ w_enc.t()).to(x_c.dtype))
        return grad_x, grad_b_dec, grad_w, grad_b, None, None


def _autocast_state(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type`` (None when autocast is off)."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def dense_encode(p: Pre) -> torch.Tensor:
    """The pre-activations (n, d_sae), differentiable in x, b_dec, W_enc and b_enc."""
    return _DenseEncode.apply(p.x, p.b_dec, p.w_enc, p.b_enc, p.x_c, p.pre)


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Start of each of ``n`` bags in a sorted key list (empty bags allowed)."""
    offsets = torch.zeros(n, dtype=torch.long, device=keys.device)
    offsets[1:] = torch.bincount(keys, minlength=n).cumsum(0)[:-1]
    return offsets


def sparse_encode(p: Pre, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The pre-activations ``p.pre[rows, cols]`` (nnz,), differentiable in x, b_dec, W_enc and b_enc.

    rows, cols: (nnz,) int64, rows ascending.
    """
    return _SparseEncode.apply(p.x, p.b_dec, p.w_enc, p.b_enc, p.x_c, p.pre, rows, cols)


def sparse_decode(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, w_dec: torch.Tensor,
                  n: int) -> torch.Tensor:
    """Sum over a row's (col, val) pairs of val x W_dec[col]: (n, d_in); rows sorted ascending."""
    return F.embedding_bag(cols, w_dec, _offsets(rows, n), mode="sum", per_sample_weights=vals)


def dense_codes(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int, d_sae: int) -> torch.Tensor:
    """The (n, d_sae) code matrix of a selection (no gradient)."""
    codes = torch.zeros(n, d_sae, dtype=vals.dtype, device=vals.device)
    codes[rows, cols] = vals.detach()
    return codes


# Below this density an L1 step goes sparse. bench/bench_sae_step.py (2-core x86 CPU, 576 -> 4608, 4,096 rows, freed
# blocks kept as in training): float32 ~0.65 s dense against 0.66 s sparse at 8% and 0.27 s at 2%; under bfloat16
# autocast ~0.36 s dense against 0.51 s at 8%, 0.34 s at 6% and 0.26 s at 2%: the routes cross near 8% and 6%.
SPARSE_BELOW = 0.08


class L1Step(NamedTuple):
    """One training forward of an L1 SAE: the reconstruction and the active codes, sparse or dense."""

    x_hat: torch.Tensor  # (n, d_in) reconstruction, with the decoder bias
    codes: torch.Tensor  # (n, d_sae) codes: differentiable on the dense route, a detached copy on the sparse one
    rows: torch.Tensor | None  # (nnz,) rows of the active codes (sparse route), else None
    cols: torch.Tensor | None  # (nnz,) their latents
    vals: torch.Tensor | None  # (nnz,) their values, differentiable


def l1_training_step(p: Pre, w_dec: torch.Tensor, b_dec: torch.Tensor,
                     sparse_below: float = SPARSE_BELOW) -> L1Step:
    """ReLU codes and the reconstruction from the pre-activations ``p``; sparse when few latents fire."""
    n, d_sae = p.pre.shape
    active = p.pre > 0
    if int(torch.count_nonzero(active)) > sparse_below * n * d_sae:  # (a bool sum would cast to int64 first)
        codes = torch.relu(dense_encode(p))
        return L1Step(codes @ w_dec + b_dec, codes, None, None, None)
    rows, cols = active.nonzero(as_tuple=True)  # row-major: rows ascending
    vals = sparse_encode(p, rows, cols)  # all > 0: the ReLU is the selection
    x_hat = sparse_decode(rows, cols, vals, w_dec, n) + b_dec
    return L1Step(x_hat, dense_codes(rows, cols, vals, n, d_sae), rows, cols, vals)
