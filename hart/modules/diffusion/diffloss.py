"""The residual diffusion head of HART's last scale: a small MLP with AdaLN (MAR's `SimpleMLPAdaLN`).

Per token it samples the continuous residual (Cin = latent channels) that the discrete codebook
missed, conditioned on the transformer's hidden state; 8 respaced DDPM steps, learned-range
variance, classifier-free guidance on epsilon with the same scale as the logits' last CFG.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from . import create_diffusion

__all__ = ["DiffLoss", "SimpleMLPAdaLN", "TimestepEmbedder"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t (N,) -> MLP([cos(t f), sin(t f)]) (N, hidden), f_j = 10000^(-j/half)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        # the frequencies are computed on the CPU and then moved, as upstream's diffusion head does: a GPU's exp
        # can differ by an ulp, which the first denoising step (x0 = x/sqrt(a) - ..., a ~ 2e-9) amplifies
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """h + gate * MLP(LN(h) (1 + scale) + shift), (shift, scale, gate) = Linear(SiLU(y))."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, model_channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(model_channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(model_channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 2 * model_channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """net(x (N, Cin), t (N,) original timesteps, c (N, z_channels)) -> (N, out_channels) = [eps, v]."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, z_channels: int,
                 num_res_blocks: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.time_embed = TimestepEmbedder(model_channels)
        self.cond_embed = nn.Linear(z_channels, model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList([ResBlock(model_channels) for _ in range(num_res_blocks)])
        self.final_layer = FinalLayer(model_channels, out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(c)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Rows [cond; uncond]. Both halves are fed the cond half of x; eps = (1+s) eps_c - s eps_u on both halves,
        the variance output v stays per row."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, c)
        eps, rest = out[:, : self.in_channels], out[:, self.in_channels:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = (1 + cfg_scale) * cond_eps - cfg_scale * uncond_eps
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)


class DiffLoss(nn.Module):
    """Holds the MLP (`net`) and the respaced diffusion it samples with (training loss not included)."""

    def __init__(self, target_channels: int, z_channels: int, depth: int, width: int, num_sampling_steps: str,
                 grad_checkpointing: bool = False, sampler: str = "iddpm"):
        super().__init__()
        if sampler != "iddpm":
            raise ValueError(f"unsupported diffusion sampler {sampler!r} (only 'iddpm')")
        self.in_channels = target_channels
        self.net = SimpleMLPAdaLN(in_channels=target_channels, model_channels=width, out_channels=target_channels * 2,
                                  z_channels=z_channels, num_res_blocks=depth)
        self.gen_diffusion = create_diffusion(timestep_respacing=str(num_sampling_steps), noise_schedule="cosine")

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, cfg: float = 1.0) -> torch.Tensor:
        """z (N, z_channels) -> samples (N, Cin). With cfg != 1, rows are [cond; uncond] and both halves start
        from the same noise. Initial noise comes from the global CPU generator, step noise from x's device's."""
        if cfg != 1.0:
            noise = torch.randn(z.shape[0] // 2, self.in_channels).to(z.device)
            noise = torch.cat([noise, noise], dim=0)
            model_kwargs, fn = dict(c=z, cfg_scale=cfg), self.net.forward_with_cfg
        else:
            noise = torch.randn(z.shape[0], self.in_channels).to(z.device)
            model_kwargs, fn = dict(c=z), self.net.forward
        return self.gen_diffusion.p_sample_loop(fn, noise, clip_denoised=True, model_kwargs=model_kwargs,
                                                temperature=temperature)
