"""IDDPM Gaussian diffusion, sampling half only: float64 tables, learned-range variance, ancestral steps."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

__all__ = ["GaussianDiffusion", "get_named_beta_schedule", "betas_for_alpha_bar"]


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar: Callable[[float], float],
                        max_beta: float = 0.999) -> np.ndarray:
    """beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), max_beta), float64."""
    betas = [min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps), max_beta)
             for i in range(num_diffusion_timesteps)]
    return np.array(betas, dtype=np.float64)


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    if schedule_name == "cosine":
        return betas_for_alpha_bar(num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    raise NotImplementedError(f"unknown beta schedule: {schedule_name}")


def _extract(arr: np.ndarray, timesteps: torch.Tensor, broadcast_shape) -> torch.Tensor:
    """arr[t] gathered in float64, cast to float32, broadcast to `broadcast_shape`."""
    res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while res.ndim < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


class GaussianDiffusion:
    """Tables of a diffusion with the given betas (float64), and its reverse process with learned-range variance.

    The model called by `p_sample_loop` returns (N, 2*Cin): epsilon, then v in [-1, 1]-ish interpolating the
    log-variance between the clipped posterior variance (v = -1) and beta (v = 1).
    """

    def __init__(self, betas: np.ndarray):
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = int(betas.shape[0])
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the variance at t = 0 is 0: its log is "clipped" to the value at t = 1
        self.posterior_log_variance_clipped = (np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
                                               if len(self.posterior_variance) > 1 else np.array([]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    def _model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        return t  # overridden by the respaced diffusion (index -> original timestep)

    def p_mean_variance(self, model: Callable, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        model_kwargs: dict | None = None) -> dict[str, torch.Tensor]:
        C = x.shape[1]
        out = model(x, self._model_timesteps(t), **(model_kwargs or {}))
        eps, var_values = out[:, :C], out[:, C:]
        min_log = _extract(self.posterior_log_variance_clipped, t, x.shape)
        max_log = _extract(np.log(self.betas), t, x.shape)
        frac = (var_values + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        x0 = _extract(self.sqrt_recip_alphas_cumprod, t, x.shape) * x - _extract(self.sqrt_recipm1_alphas_cumprod, t, x.shape) * eps
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean = _extract(self.posterior_mean_coef1, t, x.shape) * x0 + _extract(self.posterior_mean_coef2, t, x.shape) * x
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": x0}

    def p_sample_loop(self, model: Callable, noise: torch.Tensor, clip_denoised: bool = True,
                      model_kwargs: dict | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Reverse process from `noise` (N, Cin) over every step; one `randn_like` per step (also the last)."""
        x = noise
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            with torch.no_grad():
                out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
                z = torch.randn_like(x)
                nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
                x = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * z * temperature
        return x
