"""Building blocks of Infinity: attention without flash-attn, 2-D RoPE, the block, the head.

Module, class and parameter names follow upstream `infinity/models/basic.py` so that the
official state dicts load unchanged. Two upstream behaviours that change outputs are
reproduced on purpose and marked `UPSTREAM QUIRK` below:
  * the bfloat16 round trip around every variable-length cross-attention (and the text
    pooling) when its inputs are float32;
  * with `fused_norm=False` upstream's block does not pass the scale index to
    self-attention, so RoPE positions restart at 0 at every scale.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fused_op import fused_ada_layer_norm

# (kv_compact (N, C_kv), cu_seqlens_k int32 (B+1,), max_seqlen_k int): upstream's packed text
CaKV = tuple[torch.Tensor, torch.Tensor, int]


# ----------------------------------------------------------------------------- attention kernels
# 'segments': one SDPA per batch row in float32 (bit-exact with the golden data, used on CPU);
# 'masked': one padded SDPA with a key-padding mask in the input dtype (fast, used on GPU); 'auto' picks.
VARLEN_IMPL = 'auto'


def flash_attn_varlen_kvpacked_func(q: torch.Tensor, kv: torch.Tensor, cu_seqlens_q: torch.Tensor,
                                    cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                                    dropout_p: float = 0.0, softmax_scale: float | None = None,
                                    impl: str | None = None) -> torch.Tensor:
    """Exact replacement of flash-attn's variable-length attention, with torch SDPA.

    q: (sum Lq, H, c); kv: (sum Lk, 2, H, c). Query segment b (rows cu_seqlens_q[b]:[b+1])
    attends to key segment b only, non-causal, no other mask. Returns (sum Lq, H, c) in q's dtype.
    'segments' computes each segment in float32 on (1, H, L, c) tensors (what the golden data was
    made with); 'masked' (equal query lengths only) pads the keys to the longest segment and masks
    the padding, one SDPA call in the input dtype. Runs on CPU and GPU, no compiled extension.
    """
    impl = impl or VARLEN_IMPL
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    lq = {cq[b + 1] - cq[b] for b in range(len(cq) - 1)}
    if impl == 'masked' or (impl == 'auto' and q.is_cuda and len(lq) == 1):
        return _varlen_masked(q, kv, ck, lq.pop(), softmax_scale)
    out = []
    for b in range(len(cq) - 1):
        qb = q[cq[b]:cq[b + 1]].float().transpose(0, 1).unsqueeze(0)        # (1, H, Lq, c)
        kb = kv[ck[b]:ck[b + 1], 0].float().transpose(0, 1).unsqueeze(0)    # (1, H, Lk, c)
        vb = kv[ck[b]:ck[b + 1], 1].float().transpose(0, 1).unsqueeze(0)
        ob = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout_p, scale=softmax_scale)
        out.append(ob[0].transpose(0, 1).to(q.dtype))                        # (Lq, H, c)
    return torch.cat(out, dim=0)


def _varlen_masked(q: torch.Tensor, kv: torch.Tensor, ck: list[int], Lq: int, softmax_scale: float | None
                   ) -> torch.Tensor:
    B = len(ck) - 1
    H, c = q.shape[1:]
    lens = torch.tensor([ck[b + 1] - ck[b] for b in range(B)], device=q.device)
    pos = torch.arange(int(lens.max()), device=q.device)                              # (maxLk,)
    valid = pos[None] < lens[:, None]                                                 # (B, maxLk)
    rows = (torch.tensor(ck[:-1], device=q.device)[:, None] + pos[None]).clamp_(max=kv.shape[0] - 1)
    k = kv[rows, 0].transpose(1, 2)                                                   # (B, H, maxLk, c)
    v = kv[rows, 1].transpose(1, 2)
    qb = q.view(B, Lq, H, c).transpose(1, 2)                                          # (B, H, Lq, c)
    o = F.scaled_dot_product_attention(qb, k.to(q.dtype), v.to(q.dtype), attn_mask=valid[:, None, None, :],
                                       scale=softmax_scale)
    return o.transpose(1, 2).reshape(B * Lq, H, c)


# ----------------------------------------------------------------------------- 2-D RoPE
def precompute_rope2d_freqs_grid(dim: int, max_height: int = 2048 // 16, max_width: int = 2048 // 16,
                                 base: float = 10000.0) -> torch.Tensor:
    """cos/sin of the 2-D rotary angles on the full position grid: (2, max_height, max_width, dim // 2).

    dim = head dim. For row r and column c the half-dim angle vector is
    [r * inv_freq, c * inv_freq] with inv_freq_j = 1 / base^(2j / half), float32.
    """
    half = dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))   # (half/2,)
    freqs_h = torch.outer(torch.arange(max_height, dtype=torch.int64).float(), inv_freq)      # (H, half/2)
    freqs_w = torch.outer(torch.arange(max_width, dtype=torch.int64).float(), inv_freq)       # (W, half/2)
    grid = torch.cat([freqs_h[:, None, :].expand(-1, max_width, -1),
                      freqs_w[None, :, :].expand(max_height, -1, -1)], dim=-1)                # (H, W, half)
    return torch.stack([torch.cos(grid), torch.sin(grid)], dim=0)


class Rope2DTable:
    """Per-schedule RoPE tables, built on first use, keyed like upstream by `str(tuple(scale_schedule))`.

    For a template whose 1M list ends at (UH, UW), the token (i, j) of a scale (h, w) sits at
    grid position (round(i * UH / h), round(j * UW / w)), float32, round half to even
    (`rope2d_normalized_by_hw=2`). The per-scale tables are concatenated in schedule order:
    row `offset_k + i*w + j` belongs to token (i, j) of scale k.
    """

    def __init__(self, head_dim: int):
        self.head_dim = head_dim
        self.grid: torch.Tensor | None = None      # (2, 128, 128, half), built on first use (so meta-device
        self.tables: dict[str, torch.Tensor] = {}  # construction of the model never touches it)

    def get(self, scale_schedule: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
        """(2, total_tokens, head_dim // 2) float32 cos/sin table of a schedule."""
        key = str(tuple(tuple(s) for s in scale_schedule))
        table = self.tables.get(key)
        if table is None or table.device != device:
            from ..utils.dynamic_resolution import template_last_grid
            uph, upw = template_last_grid(scale_schedule)
            if self.grid is None:
                with torch.device('cpu'):
                    self.grid = precompute_rope2d_freqs_grid(self.head_dim)
            parts = []
            for t, ph, pw in scale_schedule:
                rows = (torch.arange(ph) * (uph / ph)).round().int()
                cols = (torch.arange(pw) * (upw / pw)).round().int()
                part = self.grid[:, rows][:, :, cols]                            # (2, ph, pw, half)
                parts.append(part.reshape(2, ph * pw, -1).repeat(1, t, 1))
            table = torch.cat(parts, dim=1).to(device)
            self.tables[key] = table
        return table


def apply_rotary_emb(q: torch.Tensor, k: torch.Tensor, rope_table: torch.Tensor, start: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate adjacent pairs (2p, 2p+1) of q and k (B, H, L, hd) by the table rows [start, start+L).

    (a, b) -> (a*cos - b*sin, a*sin + b*cos); pairs 0..hd/4-1 use row angles, the rest column angles.
    Computed in q's dtype with autocast off and the float32 table cast to that dtype, as upstream:
    float32 on CPU, bfloat16 when the blocks run in bf16 on GPU.
    """
    L = q.shape[2]
    table = rope_table[:, start:start + L].to(q.dtype)
    cos, sin = table[0], table[1]                                                 # (L, hd/2)
    with torch.autocast(device_type=q.device.type, enabled=False):
        out = []
        for x in (q, k):
            x = x.reshape(*x.shape[:-1], -1, 2)                                     # (B, H, L, hd/2, 2)
            a, b = x[..., 0], x[..., 1]
            x = torch.stack([cos * a - sin * b, sin * a + cos * b], dim=-1)
            out.append(x.reshape(*x.shape[:-2], -1))
    return out[0], out[1]


# ----------------------------------------------------------------------------- norms
class FastRMSNorm(nn.Module):
    """RMSNorm x * rsqrt(mean(x^2) + eps) * weight, computed in float32 (the text features' norm)."""

    def __init__(self, C: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.C, self.eps, self.elementwise_affine = C, eps, elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(C))
        else:
            self.register_buffer('weight', torch.ones(C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src_type = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(src_type).mul(self.weight) if self.elementwise_affine else xf.to(src_type)


# ----------------------------------------------------------------------------- attention modules
class SelfAttention(nn.Module):
    """Cosine self-attention with 2-D RoPE and a per-scale KV cache (inference)."""

    def __init__(self, embed_dim: int = 768, num_heads: int = 12, proj_drop: float = 0.0, tau: float = 1,
                 cos_attn: bool = True, customized_flash_attn: bool = False, use_flex_attn: bool = False,
                 batch_size: int = 2, pad_to_multiplier: int = 1, rope2d_normalized_by_hw: int = 2):
        super().__init__()
        assert embed_dim % num_heads == 0
        if not cos_attn:
            raise NotImplementedError("only cos_attn=True (every released Infinity model) is implemented")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.cos_attn = cos_attn
        self.scale = 1.0                      # cosine attention: the learned multiplier replaces 1/sqrt(hd)
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.max_scale_mul = torch.log(torch.tensor(100, device="cpu")).item()   # float32 ln 100, as upstream
        self.mat_qkv = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer('zero_k_bias', torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop, inplace=True) if proj_drop > 0 else nn.Identity()
        self.caching = False
        self.cached_k: torch.Tensor | None = None
        self.cached_v: torch.Tensor | None = None

    def kv_caching(self, enable: bool) -> None:
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def forward(self, x: torch.Tensor, rope_table: torch.Tensor, rope_start: int) -> torch.Tensor:
        """x (B, L, C) -> (B, L, C). Keys/values of earlier scales come from the cache; no mask."""
        B, L, C = x.shape
        qkv = F.linear(x, self.mat_qkv.weight, torch.cat((self.q_bias, self.zero_k_bias, self.v_bias)))
        q, k, v = qkv.view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd)
        # Upstream rounds the head scale, q and k to qkv's dtype *before* RoPE and rotates in that
        # dtype (bf16 under GPU autocast, where exp and normalize return float32); on CPU float32
        # every cast here is a no-op.
        scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp().to(qkv.dtype)
        q = F.normalize(q, dim=-1, eps=1e-12).mul(scale_mul).to(qkv.dtype)
        k = F.normalize(k, dim=-1, eps=1e-12).to(qkv.dtype)
        q, k = apply_rotary_emb(q, k, rope_table, rope_start)
        if self.caching:
            if self.cached_k is None:
                self.cached_k, self.cached_v = k, v
            else:
                self.cached_k = torch.cat((self.cached_k, k), dim=2)
                self.cached_v = torch.cat((self.cached_v, v), dim=2)
            k, v = self.cached_k, self.cached_v
        o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)       # (B, H, L, hd)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, L, C)))


class CrossAttention(nn.Module):
    """Variable-length cross-attention to the packed text (per block), or attention pooling (`for_attn_pool`)."""

    def __init__(self, for_attn_pool: bool = False, embed_dim: int = 768, kv_dim: int = 4096, num_heads: int = 12,
                 proj_drop: float = 0.0, cos_attn: bool = False, upstream_bf16_roundtrip: bool = True):
        super().__init__()
        self.for_attn_pool = for_attn_pool
        self.embed_dim, self.kv_dim = embed_dim, kv_dim
        assert embed_dim % num_heads == 0
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale = 1 / math.sqrt(self.head_dim)
        if for_attn_pool:
            self.mat_q = nn.Parameter(torch.randn(1, num_heads, self.head_dim) * 0.02)   # one learned query
        else:
            self.mat_q = nn.Linear(embed_dim, embed_dim, bias=True)
        self.mat_kv = nn.Linear(kv_dim, embed_dim * 2, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer('zero_k_bias', torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop, inplace=True) if proj_drop > 0 else nn.Identity()
        self.upstream_bf16_roundtrip = upstream_bf16_roundtrip

    def forward(self, q: torch.Tensor | None, ca_kv: CaKV) -> torch.Tensor:
        """q (B, Lq, C) [None when pooling] and packed text -> (B, Lq, C) [(B, 1, C) when pooling]."""
        kv_compact, cu_seqlens_k, max_seqlen_k = ca_kv
        N = kv_compact.shape[0]
        kv = F.linear(kv_compact, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        kv = kv.view(N, 2, self.num_heads, self.head_dim)                          # (N, 2, H, c)
        if self.for_attn_pool:
            B, Lq = cu_seqlens_k.shape[0] - 1, 1
            q = self.mat_q.repeat(B, 1, 1)                                          # (B, H, c)
        else:
            B, Lq, _ = q.shape
            q = self.mat_q(q).view(B * Lq, self.num_heads, self.head_dim)          # (B*Lq, H, c)
        in_dtype = q.dtype
        if self.upstream_bf16_roundtrip and in_dtype == torch.float32:
            # UPSTREAM QUIRK: upstream casts fp32 q and kv to bfloat16 for flash-attn and the bf16
            # output back to fp32. Without this round trip the CPU logits move by ~2e-2 and bits flip.
            q, kv = q.to(torch.bfloat16), kv.to(torch.bfloat16)
        cu_seqlens_q = torch.arange(0, Lq * (B + 1), Lq, dtype=torch.int32)
        o = flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, Lq, max_seqlen_k,
                                            dropout_p=0.0, softmax_scale=self.scale)
        o = o.to(in_dtype).reshape(B, Lq, self.embed_dim)
        return self.proj_drop(self.proj(o))


class TextAttentivePool(nn.Module):
    """Pools each prompt's text tokens into one vector (`sos`, shape (B, D)) with a learned query."""

    def __init__(self, Ct5: int, D: int, upstream_bf16_roundtrip: bool = True):
        super().__init__()
        self.Ct5, self.D = Ct5, D
        head_dim = 64 if D > 4096 else 128
        self.ca = CrossAttention(for_attn_pool=True, embed_dim=D, kv_dim=Ct5, num_heads=Ct5 // head_dim,
                                 upstream_bf16_roundtrip=upstream_bf16_roundtrip)

    def forward(self, ca_kv: CaKV) -> torch.Tensor:
        return self.ca(None, ca_kv).squeeze(1)


class FFN(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate='tanh')
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop, inplace=True) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


# ----------------------------------------------------------------------------- block and head
class CrossAttnBlock(nn.Module):
    """AdaLN self-attention (RoPE, KV cache) -> cross-attention to text -> AdaLN FFN."""

    def __init__(self, embed_dim: int, kv_dim: int, cross_attn_layer_scale: float = -1.0, cond_dim: int = 0,
                 num_heads: int = 16, mlp_ratio: float = 4.0, norm_eps: float = 1e-6, drop: float = 0.0,
                 tau: float = 1, cos_attn: bool = True, fused_norm: bool = True, pad_to_multiplier: int = 1,
                 rope2d_normalized_by_hw: int = 2, upstream_bf16_roundtrip: bool = True):
        super().__init__()
        self.C, self.D, self.norm_eps = embed_dim, cond_dim, norm_eps
        self.fused_norm = fused_norm
        if cross_attn_layer_scale >= 0:
            raise NotImplementedError("cross_attn_layer_scale >= 0 is not used by any released model")
        self.ca_gamma = 1
        self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        self.sa = SelfAttention(embed_dim=embed_dim, num_heads=num_heads, tau=tau, cos_attn=cos_attn,
                                pad_to_multiplier=pad_to_multiplier, rope2d_normalized_by_hw=rope2d_normalized_by_hw)
        self.ca = CrossAttention(embed_dim=embed_dim, kv_dim=kv_dim, num_heads=num_heads,
                                 upstream_bf16_roundtrip=upstream_bf16_roundtrip)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio / 256) * 256, drop=drop)
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ca_norm = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=True)

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, ca_kv: CaKV, rope_table: torch.Tensor,
                rope_start: int) -> torch.Tensor:
        """x (bs, L, C); cond_BD = gss (bs, 1, 6, C); rope_start = tokens before this scale."""
        # chunk order of the 6C AdaLN output: gamma1, gamma2, scale1, scale2, shift1, shift2
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + cond_BD).unbind(2)   # (bs, 1, C) each
        if not self.fused_norm:
            # UPSTREAM QUIRK: upstream's non-fused path does not pass the scale index to self-attention,
            # so RoPE rows restart at 0 every scale. Reproduced; the released models use fused_norm=True.
            rope_start = 0
        h = fused_ada_layer_norm(self.C, self.norm_eps, x, scale1, shift1)
        x = x + self.sa(h, rope_table, rope_start).mul_(gamma1)
        # ca_norm in float32 whatever the block dtype (what CUDA autocast does for upstream's bf16 blocks)
        ca_in = F.layer_norm(x.float(), (self.C,), self.ca_norm.weight.float(), self.ca_norm.bias.float(), self.norm_eps)
        x = x + self.ca(ca_in, ca_kv).float().mul_(self.ca_gamma)
        h = fused_ada_layer_norm(self.C, self.norm_eps, x, scale2, shift2)
        x = x + self.ffn(h).mul(gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    """LayerNorm(x) * (1 + scale) + shift, with (scale, shift) from SiLU -> Linear(D, 2C) of the pooled text."""

    def __init__(self, C: int, D: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C, self.D, self.norm_eps = C, D, norm_eps
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return fused_ada_layer_norm(self.C, self.norm_eps, x_BLC, scale, shift)


class SharedAdaLin(nn.Linear):
    """Linear(D, 6C) whose output is viewed as (B, 1, 6, C): the AdaLN parameters shared by all blocks."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0] // 6
        return super().forward(cond_BD).reshape(-1, 1, 6, C)
