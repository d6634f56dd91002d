"""Building blocks of the VAR transformer: AdaLN self-attention blocks and the AdaLN head norm.

Names and state-dict keys follow upstream's `models/basic_var.py`. Attention always goes through
`torch.nn.functional.scaled_dot_product_attention` (upstream's CPU path; bit-exact on CPU, and on
CUDA it dispatches to flash / memory-efficient kernels by itself). The optional flash-attn /
xformers / fused-MLP kernels of upstream are not used; `flash_if_available` and
`fused_if_available` are accepted for signature compatibility and ignored.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .helpers import DropPath

__all__ = ["FFN", "SelfAttention", "AdaLNSelfAttn", "AdaLNBeforeHead"]

# ln(100) computed as upstream does (float32 log, then a Python float)
_MAX_SCALE_MUL = torch.log(torch.tensor(100.0, dtype=torch.float32)).item()


class FFN(nn.Module):
    """fc2(GELU_tanh(fc1(x)))."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 drop: float = 0.0, fused_if_available: bool = True):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop, inplace=True) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SelfAttention(nn.Module):
    """Multi-head self-attention with l2-normalised q and k and a learned per-head logit scale.

    q = normalize(q) * exp(min(scale_mul_1H11, ln 100)), k = normalize(k), softmax scale 1.
    `mat_qkv` has no bias; the qkv bias is cat(q_bias, zero_k_bias, v_bias).

    KV cache (sampling only): `kv_caching(True, max_len=L)` preallocates room for L positions
    on first use and writes every scale's k / v into it, so attention reads the cached prefix
    without re-concatenating the whole cache at every scale. `max_len=None` is upstream's
    growing cache (torch.cat per scale). Both give the same values.
    """

    def __init__(self, block_idx: int, embed_dim: int = 768, num_heads: int = 12, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, attn_l2_norm: bool = False, flash_if_available: bool = True):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.block_idx, self.num_heads, self.head_dim = block_idx, num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = _MAX_SCALE_MUL
        else:  # pre-April-2024 checkpoints
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(embed_dim)), nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop, inplace=True) if proj_drop > 0 else nn.Identity()
        self.attn_drop = attn_drop
        self.kv_caching(False)

    def kv_caching(self, enable: bool, max_len: int | None = None) -> None:
        """Turn the KV cache on (emptied) or off (freed)."""
        self.caching, self.cached_k, self.cached_v = enable, None, None
        self.cache_max_len, self.cache_len = max_len, 0

    def _append_to_cache(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (Bx, H, l, c); return all cached k, v (Bx, H, l_total, c)."""
        if self.cache_max_len is None:  # upstream's growing cache
            if self.cached_k is not None:
                k, v = torch.cat((self.cached_k, k), dim=2), torch.cat((self.cached_v, v), dim=2)
            self.cached_k, self.cached_v = k, v
            return k, v
        if self.cached_k is None:
            Bx, H, _, c = k.shape
            self.cached_k = k.new_empty(Bx, H, self.cache_max_len, c)
            self.cached_v = v.new_empty(Bx, H, self.cache_max_len, c)
        begin, end = self.cache_len, self.cache_len + k.shape[2]
        self.cached_k[:, :, begin:end] = k
        self.cached_v[:, :, begin:end] = v
        self.cache_len = end
        return self.cached_k[:, :, :end], self.cached_v[:, :, :end]

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, C) -> (B, L, C). attn_bias (1, 1, L, L) in training, None with the KV cache."""
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(input=x, weight=self.mat_qkv.weight, bias=bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)  # each (B, H, L, c)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul)
            k = F.normalize(k, dim=-1)
        if self.caching:
            if torch.is_autocast_enabled(x.device.type):
                # SDPA would cast q and k to the autocast dtype anyway; caching them in that dtype
                # gives the same numbers and avoids re-casting the whole cache at every scale.
                low = torch.get_autocast_dtype(x.device.type)
                q, k, v = q.to(low), k.to(low), v.to(low)
            k, v = self._append_to_cache(k, v)
        dropout_p = self.attn_drop if self.training else 0.0
        oup = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=self.scale)
        return self.proj_drop(self.proj(oup.transpose(1, 2).reshape(B, L, C)))

    def extra_repr(self) -> str:
        return f"attn_l2_norm={self.attn_l2_norm}"


class AdaLNSelfAttn(nn.Module):
    """Transformer block with adaptive LayerNorm conditioning.

    Modulation order (gates first): gamma1, gamma2, scale1, scale2, shift1, shift2, each (B, 1, C):
        x = x + gamma1 * Attn(LN(x) * (1 + scale1) + shift1)
        x = x + gamma2 * FFN(LN(x) * (1 + scale2) + shift2)
    Non-shared: from `ada_lin(cond)` (SiLU, Linear D -> 6C). Shared (d36): `ada_gss + shared_gss`.
    """

    def __init__(self, block_idx: int, last_drop_p: float, embed_dim: int, cond_dim: int, shared_aln: bool,
                 norm_layer, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, attn_l2_norm: bool = False, flash_if_available: bool = False,
                 fused_if_available: bool = True):
        super().__init__()
        self.block_idx, self.last_drop_p = block_idx, last_drop_p
        self.C, self.D = embed_dim, cond_dim
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.attn = SelfAttention(block_idx=block_idx, embed_dim=embed_dim, num_heads=num_heads, attn_drop=attn_drop,
                                  proj_drop=drop, attn_l2_norm=attn_l2_norm, flash_if_available=flash_if_available)
        self.ffn = FFN(in_features=embed_dim, hidden_features=round(embed_dim * mlp_ratio), drop=drop,
                       fused_if_available=fused_if_available)
        self.ln_wo_grad = norm_layer(embed_dim, elementwise_affine=False)
        self.shared_aln = shared_aln
        if shared_aln:
            # upstream draws randn / sqrt(C) here; the value is set by VAR.init_weights or a checkpoint
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, embed_dim))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * embed_dim))
        self.fused_add_norm_fn = None

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, C); cond_BD (B, D), or the shared (B, 1, 6, C) modulation when shared_aln."""
        if self.shared_aln:
            gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + cond_BD).unbind(2)
        else:
            gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        x = x + self.drop_path(self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1), attn_bias=attn_bias).mul_(gamma1))
        x = x + self.drop_path(self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2))
        return x

    def extra_repr(self) -> str:
        return f"shared_aln={self.shared_aln}"


class AdaLNBeforeHead(nn.Module):
    """LN(x) * (1 + scale) + shift with (scale, shift) = ada_lin(cond) (SiLU, Linear D -> 2C)."""

    def __init__(self, C: int, D: int, norm_layer):
        super().__init__()
        self.C, self.D = C, D
        self.ln_wo_grad = norm_layer(C, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
