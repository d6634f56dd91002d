"""Binary spherical quantizer (decode side): bit labels -> codes +-1/sqrt(d), L2-normalised."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class BSQ(nn.Module):
    """Bits <-> codes. Bit 1 is code +1/sqrt(d), bit 0 is -1/sqrt(d); `mask` holds 2^(d-1) .. 1."""

    def __init__(self, dim: int, codebook_size: int | None = None, new_quant: bool = True):
        super().__init__()
        self.codebook_dim = dim
        self.codebook_scale = 1 / np.sqrt(dim)
        self.new_quant = new_quant
        self.register_buffer('mask', 2 ** torch.arange(dim - 1, -1, -1, dtype=torch.int64), persistent=True)

    def bits_to_codes(self, bits: torch.Tensor) -> torch.Tensor:
        return bits * self.codebook_scale * 2 - self.codebook_scale

    def indices_to_codes(self, indices: torch.Tensor, label_type: str = 'bit_label') -> torch.Tensor:
        """Bit labels (B, t, h, w, d) int -> codes (B, d, t, h, w) float32."""
        if label_type != 'bit_label':
            raise NotImplementedError("only label_type='bit_label' is used by Infinity's sampler")
        codes = self.bits_to_codes(indices).float()
        codes = F.normalize(codes, dim=-1)
        return codes.permute(0, 4, 1, 2, 3)


class MultiScaleBSQ(nn.Module):
    """Holds the quantizer (`lfq`) and the interpolation modes of the multi-scale residual scheme."""

    def __init__(self, dim: int, codebook_size: int | None = None, new_quant: bool = True):
        super().__init__()
        self.lfq = BSQ(dim=dim, codebook_size=codebook_size, new_quant=new_quant)
        self.z_interplote_up = 'trilinear'
        self.z_interplote_down = 'area'
