"""Residual diffusion of HART's last scale (IDDPM, respaced cosine schedule)."""
from .gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
from .respace import SpacedDiffusion, space_timesteps


def create_diffusion(timestep_respacing: str, noise_schedule: str = "cosine",
                     diffusion_steps: int = 1000) -> SpacedDiffusion:
    """Respaced diffusion with learned-range variance (the only variant HART samples with)."""
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    if not timestep_respacing:
        timestep_respacing = [diffusion_steps]
    return SpacedDiffusion(space_timesteps(diffusion_steps, timestep_respacing), betas)


__all__ = ["create_diffusion", "GaussianDiffusion", "SpacedDiffusion", "space_timesteps"]
