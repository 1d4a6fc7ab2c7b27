"""BatchTopK (Bussmann et al. 2024): keep the k x n largest activations over a batch of n rows, not k per row.

At inference a single threshold replaces the batch selection: activations above theta are kept, theta being the
running mean (EMA) of the smallest activation kept in training batches; it is saved with the weights (SAELens's
``threshold``). Otherwise as TopK (AuxK, unit-norm decoder).
"""

from __future__ import annotations

import torch

from lmscope.methods.sae.arch.topk import TopKSAE
from lmscope.methods.sae.config import K_DEFAULT, SaeConfig
from lmscope.methods.sae.registry import register_sae_class


@register_sae_class
class BatchTopKSAE(TopKSAE):
    """BatchTopK with an inference threshold."""

    name = "batchtopk"
    saelens_architecture = "jumprelu"  # at inference a BatchTopK SAE is a JumpReLU with one threshold

    def saelens_export(self, weights):
        """SAELens' JumpReLU has one threshold per latent: the single threshold, repeated."""
        return {**weights, "threshold": weights["threshold"].reshape(1).expand(self.d_sae).clone()}, {}

    @classmethod
    def from_saelens(cls, architecture, cfg, tensors, d_in, d_sae):
        """A JumpReLU (or SAELens' BatchTopK) whose latents share one threshold."""
        if architecture in ("jumprelu", "batchtopk") and "threshold" in tensors \
                and tensors["threshold"].unique().numel() == 1:
            return SaeConfig("batchtopk", d_in=d_in, width=d_sae, k=min(K_DEFAULT, d_sae))  # k: training only
        return None

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Training: the k x n largest of ReLU(pre) in the batch; inference: ReLU(pre) where above the threshold."""
        acts = torch.relu(pre)
        if not self.training and float(self.threshold) > 0:
            return acts * (acts > self.threshold)
        flat = acts.flatten()
        top = flat.topk(min(self.cfg.k * acts.shape[0], flat.numel()))
        kept = torch.zeros_like(flat).scatter_(0, top.indices, top.values).view_as(acts)
        if self.training:
            self._update_threshold(top.values)
        return kept

    def select(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the k x n largest activations of the batch, rows ascending; the threshold follows."""
        top = acts.flatten().topk(min(self.cfg.k * acts.shape[0], acts.numel()))
        self._update_threshold(top.values)
        flat = top.indices.sort().values  # row-major: sorted positions have ascending rows
        return flat // acts.shape[1], flat % acts.shape[1]

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor) -> None:
        positive = kept[kept > 0]
        if positive.numel():
            low = positive.min()
            m = self.cfg.threshold_momentum if float(self.threshold) > 0 else 0.0
            self.threshold.copy_(m * self.threshold + (1 - m) * low)

    def weights(self) -> dict[str, torch.Tensor]:
        """The SAELens-layout tensors and the inference threshold."""
        return {**super().weights(), "threshold": self.threshold.detach().clone()}

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Weights and (if given) the threshold."""
        super().load_weights(tensors)
        if "threshold" in tensors:
            self.threshold.copy_(tensors["threshold"].float().mean())  # one value for all latents
