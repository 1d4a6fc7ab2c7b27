"""TopK (Gao et al. 2024): keep the k largest pre-activations (after ReLU), the rest 0; no L1.

Dead latents are revived by AuxK: e = x - x_hat is reconstructed from the k_aux largest pre-activations of the
dead latents alone (e_hat = c_aux W_dec), adding aux_coefficient |e - e_hat|^2 to the loss. Decoder rows keep unit
norm (gradient projected, rows renormalised after every step); the encoder starts as the decoder's transpose. A
transcoder's decoder starts at zero and its rows are free in norm, as sparsify trains them (its input and output are
different activations: a decoder copying the encoder's directions would start by predicting the input).
Training steps run sparse (:mod:`.sparse`): only the encoder's forward matmul touches every latent.
"""

from __future__ import annotations

import torch

from lmscope.methods.sae.arch.base import ForwardOutput, SparseAutoencoder, squared_error
from lmscope.methods.sae.arch.sparse import Pre, dense_codes, pre_activations, sparse_decode, sparse_encode
from lmscope.methods.sae.config import K_DEFAULT, SaeConfig
from lmscope.methods.sae.registry import register_sae_class


def keep_top(values: torch.Tensor, k: int) -> torch.Tensor:
    """``values`` with all but the k largest of each row set to 0: (n, m) -> (n, m)."""
    top = values.topk(min(k, values.shape[-1]), dim=-1)
    return torch.zeros_like(values).scatter_(-1, top.indices, top.values)


@register_sae_class
class TopKSAE(SparseAutoencoder):
    """TopK with the AuxK dead-latent loss."""

    name = "topk"
    unit_decoder = True
    default_lr = 2e-4
    saelens_architecture = "topk"

    def saelens_export(self, weights):
        """SAELens' TopK keeps k in cfg.json."""
        return weights, {"k": self.cfg.k}

    @classmethod
    def from_saelens(cls, architecture, cfg, tensors, d_in, d_sae):
        """SAELens' topk (k from cfg.json, or its activation_fn_kwargs)."""
        if architecture != "topk":
            return None
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = int(cfg.get("k", kwargs.get("k", K_DEFAULT) if isinstance(kwargs, dict) else K_DEFAULT))
        return SaeConfig("topk", d_in=d_in, width=d_sae, k=k)

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.init_untied()
        if self.transcoder:  # sparsify's transcoders: the decoder starts at zero (the encoder's transpose would
            with torch.no_grad():  # copy the input to the output) and its rows are free in norm
                self.W_dec.zero_()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The k largest of ReLU(pre) per row."""
        return keep_top(torch.relu(pre), self.cfg.k)

    def aux_loss(self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor | None):
        """aux_coefficient x |e - e_hat|^2, e_hat from the k_aux largest dead pre-activations (0 if none is dead)."""
        if dead is None or not bool(dead.any()):
            return x.new_zeros(())
        dead_pre = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
        codes = keep_top(dead_pre, min(self.cfg.k_aux, int(dead.sum())))
        e_hat = torch.relu(codes).nan_to_num(0.0) @ self.W_dec
        return self.cfg.aux_coefficient * squared_error((x - x_hat).detach(), e_hat)

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(squared error, AuxK term)."""
        return squared_error(x, x_hat), self.aux_loss(x, x_hat, pre, dead)

    # ---- the sparse training step --------------------------------------------------------------------------------
    def select(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the kept activations of ReLU'd pre-activations (n, d_sae), rows ascending."""
        k = min(self.cfg.k, acts.shape[1])
        cols = acts.topk(k, dim=-1).indices.flatten()
        return torch.arange(acts.shape[0], device=acts.device).repeat_interleave(k), cols

    def forward(self, x: torch.Tensor, l1_scale: float = 1.0, dead: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> ForwardOutput:
        """As :meth:`SparseAutoencoder.forward`; in training with gradients, through sparse products."""
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x, l1_scale, dead, target)
        (x, y), n = self.scaled(x, target), x.shape[0]
        p = pre_activations(x, self.input_shift(), self.W_enc, self.b_enc)
        rows, cols = self.select(torch.relu(p.pre))
        vals = torch.relu(sparse_encode(p, rows, cols))
        y_hat = sparse_decode(rows, cols, vals, self.W_dec, n) + self.b_dec + self.skip_term(x)
        recon = squared_error(y, y_hat) + self.extra_reconstruction(y, y_hat, rows, cols, vals)
        aux = self._sparse_aux(p, y, y_hat, dead)
        codes = dense_codes(rows, cols, vals, n, self.d_sae)
        return ForwardOutput(y_hat / self.out_scale, codes, recon + aux, recon, aux)

    def extra_reconstruction(self, y, y_hat, rows, cols, vals) -> torch.Tensor | float:
        """Reconstruction terms beside the full one, from the sparse codes (none here; Matryoshka's prefixes)."""
        return 0.0

    def _sparse_aux(self, p: Pre, x: torch.Tensor, x_hat: torch.Tensor, dead: torch.Tensor | None) -> torch.Tensor:
        """The AuxK term through sparse products (0 if no latent is dead); x: what is reconstructed (scaled)."""
        if dead is None or not bool(dead.any()):
            return x.new_zeros(())
        k = min(self.cfg.k_aux, int(dead.sum()))
        dead_pre = torch.where(dead, p.pre, torch.full_like(p.pre, -torch.inf))
        cols = dead_pre.topk(k, dim=-1).indices.flatten()
        rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
        vals = torch.relu(sparse_encode(p, rows, cols))
        e_hat = sparse_decode(rows, cols, vals, self.W_dec, x.shape[0])
        return self.cfg.aux_coefficient * squared_error((x - x_hat).detach(), e_hat)
