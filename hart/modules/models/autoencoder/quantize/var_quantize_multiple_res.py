"""VAR's multi-scale vector quantizer, inference half: the codebook and the phi refiners.

Keys: `embedding.weight` (V, Cvae), `ema_vocab_hit_SV` (len(v_patch_nums), V) (a training statistic that
sampling never reads; the tokenizer loader skips it) and the phi convs under `quant_resi.`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VectorQuantizer2", "Phi", "PhiShared", "PhiPartiallyShared", "PhiNonShared"]


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) * h + r * conv3x3(h), r = |quant_resi|."""

    def __init__(self, embed_dim: int, quant_resi: float):
        super().__init__(embed_dim, embed_dim, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul_(self.resi_ratio)


def _ticks(K: int) -> np.ndarray:
    """Positions in [0, 1] (float64) of K refiners; scale k of K' uses the one nearest k/(K'-1).

    Upstream's rule, quirk included: ticks at 1/(3K) .. 1-1/(3K) for K = 4 (the released setting) but at
    1/(2K) .. 1-1/(2K), i.e. the centres of K equal bins, for every other K (K = 1 gives [0.5]).
    """
    return np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)


class PhiShared(nn.Module):
    """One phi for every scale (`share_quant_resi` = 1)."""

    def __init__(self, qresi: nn.Module):
        super().__init__()
        self.qresi = qresi

    def __getitem__(self, _: float) -> nn.Module:
        return self.qresi


class PhiPartiallyShared(nn.Module):
    """`share_quant_resi` phis; `self[at]` picks the one whose tick is nearest `at` in [0, 1] (first wins ties)."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = _ticks(len(qresi_ls))

    def __getitem__(self, at_from_0_to_1: float) -> nn.Module:
        return self.qresi_ls[np.argmin(np.abs(self.ticks - at_from_0_to_1)).item()]


class PhiNonShared(nn.ModuleList):
    """One phi per scale (`share_quant_resi` = 0), looked up by the same nearest-tick rule."""

    def __init__(self, qresi: list[nn.Module]):
        super().__init__(qresi)
        self.ticks = _ticks(len(qresi))

    def __getitem__(self, at_from_0_to_1):  # type: ignore[override]
        if isinstance(at_from_0_to_1, int):
            return super().__getitem__(at_from_0_to_1)
        return super().__getitem__(np.argmin(np.abs(self.ticks - at_from_0_to_1)).item())


class VectorQuantizer2(nn.Module):
    """Codebook (V, Cvae) plus the phi refiners that turn sampled token maps into the latent f_hat."""

    def __init__(self, vocab_size: int, Cvae: int, using_znorm: bool = False, beta: float = 0.25,
                 default_qresi_counts: int = 0, v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                 quant_resi: float = 0.5, share_quant_resi: int = 4):
        super().__init__()
        self.vocab_size, self.Cvae, self.using_znorm = vocab_size, Cvae, using_znorm
        self.v_patch_nums = tuple(v_patch_nums)
        self.quant_resi_ratio = quant_resi

        def phi() -> nn.Module:
            return Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()

        if share_quant_resi == 0:
            self.quant_resi = PhiNonShared([phi() for _ in range(default_qresi_counts or len(self.v_patch_nums))])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(phi())
        else:
            self.quant_resi = PhiPartiallyShared(nn.ModuleList([phi() for _ in range(share_quant_resi)]))
        self.register_buffer("ema_vocab_hit_SV", torch.full((len(self.v_patch_nums), vocab_size), fill_value=0.0))
        self.beta = beta
        self.embedding = nn.Embedding(vocab_size, Cvae)

    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor, h_BChw: torch.Tensor,
                                      patch_nums: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Add scale si's map h (B, Cvae, pn, pn) to f_hat (B, Cvae, H, W) in place; return (f_hat, next input).

        Scales before the last: bicubic resize to (H, W), phi chosen by si/(SN-1), and the next input is
        f_hat area-resized to the next side. The last scale: phi without resizing, next input = f_hat.
        """
        patch_nums = tuple(patch_nums or self.v_patch_nums)
        HW = patch_nums[-1]
        if si != SN - 1:
            h = self.quant_resi[si / (SN - 1)](F.interpolate(h_BChw, size=(HW, HW), mode="bicubic"))
            f_hat.add_(h)
            return f_hat, F.interpolate(f_hat, size=(patch_nums[si + 1], patch_nums[si + 1]), mode="area")
        h = self.quant_resi[si / (SN - 1)](h_BChw)
        f_hat.add_(h)
        return f_hat, f_hat
