"""Small helpers of the VAR models: DropPath (training only) and the sampling rule.

The sampling rule (`sample_with_top_k_top_p_`, upstream's in-place top-k / top-p filter and one
`torch.multinomial` call) is shared by the three models and lives in `ssg_core.sampling`;
it is re-exported here under upstream's module path.
"""
from __future__ import annotations

import torch
from torch import nn

from ssg_core.sampling import gumbel_noise, sample_with_top_k_top_p_, top_k_top_p_filter_

__all__ = ["DropPath", "drop_path", "gumbel_softmax_with_rng", "sample_with_top_k_top_p_", "top_k_top_p_filter_"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> torch.Tensor:
    """Stochastic depth: drop whole samples of the residual branch (identity in eval mode)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Module form of `drop_path`; has no state-dict keys."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:g}"


def gumbel_softmax_with_rng(logits: torch.Tensor, tau: float = 1.0, dim: int = -1,
                            rng: torch.Generator | None = None) -> torch.Tensor:
    """Soft Gumbel-softmax `softmax((logits + G) / tau)`, G = -log(Exp(1)) drawn from `rng`.

    With `rng=None` the global generator is used, which draws exactly what
    `F.gumbel_softmax(hard=False)` would.
    """
    return ((logits + gumbel_noise(logits, rng)) / tau).softmax(dim)
