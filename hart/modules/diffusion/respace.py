"""Timestep respacing (IDDPM): keep a subset of the 1000 training steps and recompute the betas."""
from __future__ import annotations

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion

__all__ = ["space_timesteps", "SpacedDiffusion"]


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """Evenly strided kept steps per section; "8" over 1000 -> {0, 143, 285, 428, 571, 714, 856, 999}."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx, all_steps = 0, []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx, taken = 0.0, []
        for _ in range(section_count):
            taken.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken
        start_idx += size
    return set(all_steps)


class SpacedDiffusion(GaussianDiffusion):
    """The diffusion restricted to `use_timesteps`; the network still sees the original timestep numbers."""

    def __init__(self, use_timesteps, betas: np.ndarray):
        base = GaussianDiffusion(betas)
        self.use_timesteps = set(use_timesteps)
        self.timestep_map: list[int] = []
        last, new_betas = 1.0, []
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
                self.timestep_map.append(i)
        super().__init__(np.array(new_betas))

    def _model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.timestep_map, device=t.device, dtype=t.dtype)[t]
