"""Radial spectra for the paper's two analysis figures.

(a) logits / latents: how the log-magnitude spectrum of a map changes, per radial
    frequency band, with and without SSG (`radial_profile`, `logit_spectrum`);
(b) images: the radially averaged amplitude spectrum of generated images, to be divided
    by that of real images (`image_spectrum`).

Radii are integer distances from the zero frequency: FFT bins in cycles per image
(|u|, |v| <= N/2), DCT bins in coefficient-index units (index u is u/2 cycles per image).
"""
from __future__ import annotations

import torch

from .dct import dct2


def radial_index(H: int, W: int, transform: str = "fft", device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W) int64 map of each coefficient's radial bin: round(sqrt(u^2 + v^2))."""
    if transform == "fft":
        u = torch.fft.fftfreq(H, d=1.0 / H, device=device)
        v = torch.fft.fftfreq(W, d=1.0 / W, device=device)
    elif transform == "dct":
        u = torch.arange(H, device=device, dtype=torch.float32)
        v = torch.arange(W, device=device, dtype=torch.float32)
    else:
        raise ValueError(f"transform must be 'fft' or 'dct', got {transform!r}")
    return torch.sqrt(u[:, None] ** 2 + v[None, :] ** 2).round().long()


def radial_profile(x: torch.Tensor, transform: str = "fft", log: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Mean spectral magnitude of x (..., H, W) per integer radius -> (..., R).

    `log=True` averages log(|X| + eps) instead (the "log magnitude" of figure (a)).
    R = largest radius + 1; every bin 0..R-1 holds at least one coefficient.
    """
    H, W = x.shape[-2:]
    x = x.double()
    mag = (torch.fft.fft2(x).abs() if transform == "fft" else dct2(x).abs())
    if log:
        mag = torch.log(mag + eps)
    idx = radial_index(H, W, transform, x.device).flatten()
    R = int(idx.max()) + 1
    flat = mag.reshape(-1, H * W)
    sums = torch.zeros(flat.shape[0], R, dtype=flat.dtype, device=x.device).index_add_(1, idx, flat)
    counts = torch.bincount(idx, minlength=R).to(flat.dtype)
    return (sums / counts).reshape(*x.shape[:-2], R)


def logit_spectrum(logits: torch.Tensor, size: tuple[int, int], transform: str = "fft") -> torch.Tensor:
    """Mean log-magnitude spectrum of a logit (or latent) map, averaged over channels.

    logits: (B, h*w, C) channel-last, or (B, C, h, w) when it is 4-D. Returns (B, R).
    """
    h, w = size
    x = logits.reshape(logits.shape[0], h, w, -1).permute(0, 3, 1, 2) if logits.ndim == 3 else logits
    return radial_profile(x, transform=transform, log=True).mean(dim=1)


def image_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Radially averaged FFT amplitude of images (B, 3, H, W) (any range), on the grey level -> (B, R)."""
    grey = images.double().mean(dim=1)
    return radial_profile(grey - grey.mean(dim=(-2, -1), keepdim=True), transform="fft")


def nyquist(p: int) -> int:
    """Highest frequency (cycles per map) a p x p token grid can hold: floor(p / 2)."""
    return p // 2
