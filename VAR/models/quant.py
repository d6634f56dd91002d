"""VAR's multi-scale residual vector quantizer (`VectorQuantizer2`) and the phi convolutions.

Sampling only needs the codebook (`embedding`), the phi convs (`quant_resi`) and
`get_next_autoregressive_input`; `f_to_idxBl_or_fhat` / `idxBl_to_var_input` build training
targets and teacher-forcing inputs. f_hat is always accumulated at the largest scale P x P:
bicubic up to P (not at the last scale), phi after the upsampling, `area` down for the next input.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VectorQuantizer2", "Phi", "PhiShared", "PhiPartiallyShared", "PhiNonShared"]


def _phi_ticks(K: int) -> np.ndarray:
    # upstream's rule, in numpy float64 so that the near-ties at k=2 and k=7 (K=10) resolve the
    # same way: phi index per scale [0, 0, 1, 1, 1, 2, 2, 3, 3, 3] for 4 shared phis and 10 scales.
    return np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)


def _nearest_tick(ticks: np.ndarray, at_from_0_to_1: float) -> int:
    return int(np.argmin(np.abs(ticks - at_from_0_to_1)).item())  # first index wins a tie


class Phi(nn.Conv2d):
    """phi(h) = h * (1 - r) + conv3x3(h) * r (the conv output is scaled after the conv)."""

    def __init__(self, embed_dim: int, quant_resi: float):
        super().__init__(in_channels=embed_dim, out_channels=embed_dim, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul_(self.resi_ratio)


class PhiShared(nn.Module):
    """One phi for every scale (share_quant_resi=1); keys `qresi.*`."""

    def __init__(self, qresi: nn.Module):
        super().__init__()
        self.qresi = qresi

    def __getitem__(self, _at_from_0_to_1: float) -> nn.Module:
        return self.qresi


class PhiPartiallyShared(nn.Module):
    """`len(qresi_ls)` phis spread over the scales; scale k uses the one nearest to k/(K-1). Keys `qresi_ls.{i}.*`."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = _phi_ticks(len(qresi_ls))

    def __getitem__(self, at_from_0_to_1: float) -> nn.Module:
        return self.qresi_ls[_nearest_tick(self.ticks, at_from_0_to_1)]

    def extra_repr(self) -> str:
        return f"ticks={self.ticks}"


class PhiNonShared(nn.ModuleList):
    """One phi per scale (share_quant_resi=0); keys `{i}.*`."""

    def __init__(self, qresi: list[nn.Module]):
        super().__init__(qresi)
        self.ticks = _phi_ticks(len(qresi))

    def __getitem__(self, at_from_0_to_1: float) -> nn.Module:
        return super().__getitem__(_nearest_tick(self.ticks, at_from_0_to_1))


class VectorQuantizer2(nn.Module):
    """Multi-scale residual quantizer with a `vocab_size` x `Cvae` codebook.

    State-dict keys: `ema_vocab_hit_SV` (len(v_patch_nums), vocab_size) usage statistics (unused
    for sampling), `quant_resi.*` (phi convs), `embedding.weight` (vocab_size, Cvae).
    """

    def __init__(self, vocab_size: int, Cvae: int, using_znorm: bool, beta: float = 0.25,
                 default_qresi_counts: int = 0, v_patch_nums: Sequence[int] | None = None,
                 quant_resi: float = 0.5, share_quant_resi: int = 4):
        super().__init__()
        self.vocab_size, self.Cvae, self.using_znorm = vocab_size, Cvae, using_znorm
        self.v_patch_nums: tuple[int, ...] = tuple(v_patch_nums)
        self.quant_resi_ratio = quant_resi
        self.prog_si = -1  # progressive training is not supported: always -1

        def make_phi() -> nn.Module:
            return Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()

        if share_quant_resi == 0:
            self.quant_resi = PhiNonShared([make_phi() for _ in range(default_qresi_counts or len(self.v_patch_nums))])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(make_phi())
        else:
            self.quant_resi = PhiPartiallyShared(nn.ModuleList([make_phi() for _ in range(share_quant_resi)]))

        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), self.vocab_size))
        self.record_hit = 0
        self.beta = beta
        self.embedding = nn.Embedding(self.vocab_size, self.Cvae)

    def extra_repr(self) -> str:
        return (f"{self.v_patch_nums}, znorm={self.using_znorm}, beta={self.beta}  |  "
                f"S={len(self.v_patch_nums)}, quant_resi={self.quant_resi_ratio}")

    def phi(self, si: int, SN: int) -> nn.Module:
        """The phi conv used at scale `si` of `SN` scales."""
        return self.quant_resi[si / (SN - 1)]

    def embed_to_fhat(self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool = True,
                      last_one: bool = False) -> list[torch.Tensor] | torch.Tensor:
        """Per-scale code maps [(B, Cvae, p_k, p_k)] -> accumulated f_hat after every scale (or only the last).

        `all_to_max_scale=True` is what sampling does (accumulate at P x P); False is upstream's
        experimental progressive accumulation at each scale's own size.
        """
        out: list[torch.Tensor] = []
        B = ms_h_BChw[0].shape[0]
        H = W = self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        if all_to_max_scale:
            f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, H, W, dtype=torch.float32)
            for si in range(SN):
                h_BChw = ms_h_BChw[si]
                if si < SN - 1:
                    h_BChw = F.interpolate(h_BChw, size=(H, W), mode="bicubic")
                f_hat.add_(self.phi(si, SN)(h_BChw))
                if not last_one:
                    out.append(f_hat.clone())
        else:
            p0 = self.v_patch_nums[0]
            f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, p0, p0, dtype=torch.float32)
            for si, pn in enumerate(self.v_patch_nums):
                f_hat = F.interpolate(f_hat, size=(pn, pn), mode="bicubic")
                f_hat.add_(self.phi(si, SN)(ms_h_BChw[si]))
                if not last_one:
                    out.append(f_hat)
        return f_hat if last_one else out

    @torch.no_grad()
    def f_to_idxBl_or_fhat(self, f_BChw: torch.Tensor, to_fhat: bool,
                           v_patch_nums: Sequence[int | tuple[int, int]] | None = None) -> list[torch.Tensor]:
        """Quantize a latent f (B, Cvae, H, W) scale by scale.

        Returns per scale either the token indices (B, h_k*w_k) int64 (`to_fhat=False`) or the
        accumulated f_hat (B, Cvae, H, W) after that scale (`to_fhat=True`).
        """
        B, C, H, W = f_BChw.shape
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        out: list[torch.Tensor] = []
        patch_hws = [(pn, pn) if isinstance(pn, int) else (pn[0], pn[1]) for pn in (v_patch_nums or self.v_patch_nums)]
        if patch_hws[-1] != (H, W):
            raise ValueError(f"last patch size {patch_hws[-1]} != latent size {(H, W)}")
        SN = len(patch_hws)
        codebook = self.embedding.weight.data
        for si, (ph, pw) in enumerate(patch_hws):
            if si != SN - 1:
                z_NC = F.interpolate(f_rest, size=(ph, pw), mode="area").permute(0, 2, 3, 1).reshape(-1, C)
            else:
                z_NC = f_rest.permute(0, 2, 3, 1).reshape(-1, C)
            if self.using_znorm:
                z_NC = F.normalize(z_NC, dim=-1)
                idx_N = torch.argmax(z_NC @ F.normalize(codebook.T, dim=0), dim=1)
            else:  # squared L2: |z|^2 + |e|^2 - 2 z.e
                d = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(codebook.square(), dim=1, keepdim=False)
                d.addmm_(z_NC, codebook.T, alpha=-2, beta=1)
                idx_N = torch.argmin(d, dim=1)
            idx_Bhw = idx_N.view(B, ph, pw)
            h_BChw = self.embedding(idx_Bhw).permute(0, 3, 1, 2)
            if si != SN - 1:
                h_BChw = F.interpolate(h_BChw, size=(H, W), mode="bicubic")
            h_BChw = self.phi(si, SN)(h_BChw.contiguous())
            f_hat.add_(h_BChw)
            f_rest.sub_(h_BChw)
            out.append(f_hat.clone() if to_fhat else idx_N.reshape(B, ph * pw))
        return out

    def idxBl_to_var_input(self, gt_ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor | None:
        """Teacher-forcing input: per-scale indices [(B, l_k)] -> (B, L - l_0, Cvae) float32.

        The concatenation over k < K-1 of the accumulated f_hat area-downsampled to p_{k+1},
        exactly the maps sampling feeds to `word_embed`.
        """
        next_scales = []
        B, C = gt_ms_idx_Bl[0].shape[0], self.Cvae
        H = W = self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        f_hat = gt_ms_idx_Bl[0].new_zeros(B, C, H, W, dtype=torch.float32)
        pn_next = self.v_patch_nums[0]
        for si in range(SN - 1):
            h_BChw = self.embedding(gt_ms_idx_Bl[si]).transpose_(1, 2).view(B, C, pn_next, pn_next)
            f_hat.add_(self.phi(si, SN)(F.interpolate(h_BChw, size=(H, W), mode="bicubic")))
            pn_next = self.v_patch_nums[si + 1]
            next_scales.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2))
        return torch.cat(next_scales, dim=1) if next_scales else None

    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor,
                                      h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add scale `si`'s code map h (B, Cvae, p, p) to f_hat (B, Cvae, P, P) in place.

        Returns (f_hat, next input map (B, Cvae, p_{si+1}, p_{si+1})), or (f_hat, f_hat) at the last scale.
        """
        HW = self.v_patch_nums[-1]
        if si != SN - 1:
            f_hat.add_(self.phi(si, SN)(F.interpolate(h_BChw, size=(HW, HW), mode="bicubic")))
            nxt = self.v_patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(nxt, nxt), mode="area")
        f_hat.add_(self.phi(si, SN)(h_BChw))
        return f_hat, f_hat
