"""Training the TopK variants at the cost of their sparsity: only the encoder's forward matmul is dense.

With k active latents per row, the reconstruction x_hat = sum_j c_j W_dec[j] needs n k d multiply-adds, not
n d_sae d; the gradients of the encoder reach only the selected pre-activations. :func:`sparse_encode` returns the
selected pre-activations with a backward pass through ``embedding_bag`` sums, :func:`sparse_decode` the
reconstruction through ``embedding_bag``. Both take the selection as (rows, cols) pairs, rows sorted, so one row
may hold any number of latents (BatchTopK).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _SparseEncode(torch.autograd.Function):
    """vals = pre[rows, cols] where pre = x_c W_enc + b_enc; backward through the selected entries only."""

    @staticmethod
    def forward(ctx, x_c, w_enc, b_enc, pre, rows, cols):  # x_c: (n, d_in); pre: (n, d_sae), no grad
        ctx.save_for_backward(x_c, w_enc, rows, cols)
        return pre[rows, cols]  # (nnz,)

    @staticmethod
    def backward(ctx, grad):  # grad: (nnz,)
        x_c, w_enc, rows, cols = ctx.saved_tensors
        n, d_sae = x_c.shape[0], w_enc.shape[1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # row i: sum of grad_j W_enc[:, col_j] over its entries
            grad_x = F.embedding_bag(cols, w_enc.t(), _offsets(rows, n), mode="sum", per_sample_weights=grad)
        if ctx.needs_input_grad[1]:  # latent c: sum of grad_j x_c[row_j] over the entries that selected it
            order = cols.argsort()
            grad_w = F.embedding_bag(rows[order], x_c, _offsets(cols[order], d_sae), mode="sum",
                                     per_sample_weights=grad[order]).t()  # (d_in, d_sae)
        grad_b = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        return grad_x, grad_w, grad_b, None, None, None


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Start of each of ``n`` bags in a sorted key list (empty bags allowed)."""
    offsets = torch.zeros(n, dtype=torch.long, device=keys.device)
    offsets[1:] = torch.bincount(keys, minlength=n).cumsum(0)[:-1]
    return offsets


def sparse_encode(x_c: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor, pre: torch.Tensor,
                  rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The pre-activations ``pre[rows, cols]`` (nnz,), differentiable in x_c, W_enc and b_enc.

    ``pre`` must be x_c W_enc + b_enc computed without gradient; x_c: (n, d_in); rows, cols: (nnz,) int64.
    """
    return _SparseEncode.apply(x_c, w_enc, b_enc, pre.detach(), rows, cols)


def sparse_decode(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, w_dec: torch.Tensor,
                  n: int) -> torch.Tensor:
    """Sum over a row's (col, val) pairs of val x W_dec[col]: (n, d_in); rows sorted ascending."""
    offsets = torch.zeros(n, dtype=torch.long, device=rows.device)
    offsets[1:] = torch.bincount(rows, minlength=n).cumsum(0)[:-1]
    return F.embedding_bag(cols, w_dec, offsets, mode="sum", per_sample_weights=vals)


def dense_codes(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int, d_sae: int) -> torch.Tensor:
    """The (n, d_sae) code matrix of a selection (no gradient)."""
    codes = torch.zeros(n, d_sae, dtype=vals.dtype, device=vals.device)
    codes[rows, cols] = vals.detach()
    return codes
