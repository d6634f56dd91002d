"""Blocks of the HART transformer: Llama-style attention with 1-D/2-D RoPE, AdaLN, heads.

Shapes: x (B, L, C) with B the CFG batch (2 x prompts), C the width, H heads of hd = C/H.
`hart_backend.fused_kernels.rms_norm` (upstream's only compiled kernel on the inference path) is
replaced by the same formula in PyTorch (`LlamaRMSNorm`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FFN", "LlamaRMSNorm", "LlamaRMSNormFused", "LlamaMLP", "AdaLNSelfAttn",
           "AdaLNBeforeHead", "context_pooling", "rope_1d", "rope_2d", "get_position_ids"]


# ------------------------------------------------------------------------------------------- norms, MLPs
class LlamaRMSNorm(nn.Module):
    """out = (x * rsqrt(mean(x^2) + eps) computed in float32, cast back to x's dtype) * weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        # upstream's RMSNorm has a weight even when built with elementwise_affine=False (`ln_wo_grad`)
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)).to(x.dtype)
        return normed * self.weight.to(x.dtype)


LlamaRMSNormFused = LlamaRMSNorm  # upstream's name for the kernel-backed variant: same math


class FFN(nn.Module):
    """gpt2 MLP: fc2(GELU_tanh(fc1(x)))."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 drop: float = 0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LlamaMLP(nn.Module):
    """SwiGLU: down(SiLU(gate(x)) * up(x)), no biases; hidden width rounded up to a multiple of 256."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None):
        super().__init__()
        hidden = int(2 * hidden_features / 3)
        hidden = 256 * ((hidden + 255) // 256)
        self.gate_proj = nn.Linear(in_features, hidden, bias=False)
        self.up_proj = nn.Linear(in_features, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, out_features or in_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ------------------------------------------------------------------------------------------- RoPE
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(a, b) -> (-b, a) over the two halves of the last dim (non-interleaved)."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         unsqueeze_dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (B, L, H, hd); cos, sin (B, L, hd)."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def rope_1d(position_ids: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Text positions (B, L) -> cos, sin (B, L, hd) float32; angle of dim d = p * base^(-2 (d mod hd/2) / hd)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # (B, L, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def get_position_ids(batch_size: int, patch_nums: tuple[int, ...], device, si: int) -> torch.Tensor:
    """Grid coordinates of scale si, normalised to the last scale's grid: (B, pn*pn, 2) float32, (row, col)."""
    pn, last = patch_nums[si], patch_nums[-1]
    ar = torch.arange(pn, device=device)
    cartesian = torch.stack(torch.meshgrid(ar, ar, indexing="ij"), dim=-1)  # (pn, pn, 2)
    coords = (cartesian / pn * last).reshape(-1, 2)
    return coords.unsqueeze(0).repeat(batch_size, 1, 1)


def rope_2d(position_ids: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates (B, L, 2) -> cos, sin (B, L, hd) float32 with angles [a w, a w, b w, b w].

    w_j = base^(-4j/hd), j < hd/4; (a, b) = (row, col). With rotate-half pairing dim d with d + hd/2,
    the a-block is rotated together with the b-block: upstream's layout, kept literally.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 4, device=position_ids.device).float() / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # (B, L, 2, hd/4)
    emb = torch.cat((freqs, freqs), dim=-1).flatten(-2)  # (B, L, hd): [a w, a w, b w, b w]
    return emb.cos(), emb.sin()


def context_pooling(context_tokens: torch.Tensor, context_mask: torch.Tensor | None = None,
                    mode: str = "avg") -> torch.Tensor:
    """(B, T, C) -> (B, C): element-wise max over T, or the mean over the tokens where mask is true."""
    if mode == "max":
        return context_tokens.max(1).values
    if mode == "avg":
        m = context_mask.unsqueeze(-1)
        cond = context_tokens * m.to(context_tokens.dtype)
        return (cond / m.sum(1).clamp_(1).unsqueeze(1)).sum(1)
    raise ValueError(f"unknown pooling mode {mode!r}")


# ------------------------------------------------------------------------------------------- attention
class LlamaAttention(nn.Module):
    """Self-attention with q/v biases (no k bias), RoPE on q and k, and a KV cache across scales.

    Softmax scale 0.25/sqrt(hd) (VAR's), or 1 with `attn_l2_norm` (unit q, k; q scaled by a learned
    per-head factor). No mask at inference: queries see every cached key.
    """

    def __init__(self, embed_dim: int = 768, num_heads: int = 12, attn_l2_norm: bool = False):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.qkv_proj = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.caching, self.cached_k, self.cached_v = False, None, None

    def kv_caching(self, enable: bool) -> None:
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv_proj.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)  # (B, L, H, hd)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp().transpose(1, 2)  # (1, 1, H, 1)
            q, k = F.normalize(q, dim=-1).mul(scale_mul), F.normalize(k, dim=-1)
        cos, sin = rope
        q, k = apply_rotary_pos_emb(q, k, cos.to(q.dtype), sin.to(q.dtype))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, hd)
        if self.caching:
            if self.cached_k is not None:
                k = torch.cat((self.cached_k, k), dim=2)
                v = torch.cat((self.cached_v, v), dim=2)
            self.cached_k, self.cached_v = k, v
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNSelfAttn(nn.Module):
    """x + g1 * Attn(N(x)(1+s1)+b1), then x + g2 * FFN(N(x)(1+s2)+b2); (g1, g2, s1, s2, b1, b2) = Linear(SiLU(c))."""

    def __init__(self, embed_dim: int, cond_dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 attn_l2_norm: bool = False, mlp_type: str = "llama"):
        super().__init__()
        self.C, self.D = embed_dim, cond_dim
        self.attn = LlamaAttention(embed_dim, num_heads, attn_l2_norm)
        hidden = round(embed_dim * mlp_ratio)
        self.ffn = LlamaMLP(embed_dim, hidden) if mlp_type == "llama" else FFN(embed_dim, hidden)
        self.ln_wo_grad = LlamaRMSNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * embed_dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, L, C), cond_BD (B, D), rope cos/sin (B, L, hd) -> (B, L, C)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1), rope).mul_(gamma1)
        x = x + self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    """N(x) (1 + s) + b with (s, b) = Linear(SiLU(c))."""

    def __init__(self, C: int, D: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C, self.D = C, D
        self.ln_wo_grad = LlamaRMSNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
