"""The SSG update and the small state object that applies it inside a sampling loop.

    guided_k = l_k + beta_k * (l_k - DSE(l_{k-1}, size of scale k))

`SSG` is a logits processor in the transformers sense: the sampling loop calls it once
per scale, between CFG and top-k/top-p, and never needs to know whether it is active.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .dse import MODES, PRIORS, dse
from .errors import SSGError

SCHEDULES = ("constant", "linear-decay", "linear-increase")
CACHES = ("raw", "guided")


def ssg_guide(logits: torch.Tensor, prior: torch.Tensor, beta: float) -> torch.Tensor:
    """`logits + beta * (logits - prior)`: difference, product with beta, sum, in float32.

    logits, prior: same shape, e.g. (B, h*w, C). Returns a new tensor in logits' dtype.
    """
    if logits.shape != prior.shape:
        raise SSGError(f"logits {tuple(logits.shape)} and prior {tuple(prior.shape)} differ in shape")
    x = logits.float()
    out = x + (x - prior.float()) * torch.tensor(beta, dtype=torch.float32, device=x.device)
    return out.to(logits.dtype)


def _check_beta(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SSGError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise SSGError(f"{what} must be a finite number, got {value}")
    return value


class SSG:
    """Scaled Spatial Guidance for one sampling call at a time.

    Args:
        beta: a float (used for every scale k >= 1, shaped by `schedule`) or a per-scale
            list with one value per scale, whose entry for scale 0 must be 0.
        schedule: how a float beta is spread over scales k = 1..K-1 (K scales):
            "constant" (default, also None): beta everywhere;
            "linear-decay": beta * (K-1-(k-1)) / (K-1), from beta at k=1 down to beta/(K-1);
            "linear-increase": beta * k / (K-1), from beta/(K-1) at k=1 up to beta at the last scale.
        mode, rescale, prior: DSE options (see `ssg_core.dse.dse`).
        cache: what is kept as l_{k-1}: "raw" (the unguided post-CFG logits, default) or
            "guided" (the guided logits), always a copy taken before any in-place filtering.

    Usage: `ssg.reset(K)` once per sampling call, then `logits = ssg(k, logits, (h, w))`
    for k = 0..K-1. A scale whose beta is 0 gets its input back untouched (no computation).
    """

    def __init__(self, beta: float | Sequence[float] = 0.0, schedule: str | None = None, mode: str = "bilinear",
                 rescale: bool = True, prior: str = "dse", cache: str = "raw"):
        if isinstance(beta, (list, tuple)):
            self.beta: float | list[float] = [_check_beta(b, f"beta[{i}]") for i, b in enumerate(beta)]
            if schedule not in (None, "constant"):
                raise SSGError("a per-scale beta list cannot be combined with a beta schedule")
            if self.beta and self.beta[0] != 0:
                raise SSGError(f"beta[0] must be 0: scale 0 has no previous scale to guide from (got {self.beta[0]})")
        else:
            self.beta = _check_beta(beta, "beta")
        if schedule not in (None, *SCHEDULES):
            raise SSGError(f"unknown beta schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if mode not in MODES:
            raise SSGError(f"unknown DSE interpolation mode {mode!r}; choose one of {', '.join(MODES)}")
        if prior not in PRIORS:
            raise SSGError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
        if cache not in CACHES:
            raise SSGError(f"unknown cache {cache!r}; choose one of {', '.join(CACHES)}")
        self.schedule = schedule or "constant"
        self.mode, self.rescale, self.prior, self.cache = mode, bool(rescale), prior, cache
        self._betas: list[float] | None = None
        self._prev: torch.Tensor | None = None
        self._prev_size: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (f"SSG(beta={self.beta}, schedule={self.schedule!r}, mode={self.mode!r}, rescale={self.rescale}, "
                f"prior={self.prior!r}, cache={self.cache!r})")

    @property
    def enabled(self) -> bool:
        """False when every beta is 0: the sampler then behaves exactly as without SSG."""
        return any(b != 0 for b in self.beta) if isinstance(self.beta, list) else self.beta != 0

    def betas(self, num_scales: int) -> list[float]:
        """The beta of every scale 0..num_scales-1 (scale 0 is always 0)."""
        K = int(num_scales)
        if isinstance(self.beta, list):
            if len(self.beta) != K:
                raise SSGError(f"beta list has {len(self.beta)} values but the model samples {K} scales; give one "
                               f"value per scale (the first must be 0)")
            return list(self.beta)
        if K <= 1:
            return [0.0] * K
        if self.schedule == "linear-decay":
            return [0.0] + [self.beta * (K - k) / (K - 1) for k in range(1, K)]
        if self.schedule == "linear-increase":
            return [0.0] + [self.beta * k / (K - 1) for k in range(1, K)]
        return [0.0] + [self.beta] * (K - 1)

    def reset(self, num_scales: int) -> "SSG":
        """Start a new sampling call of `num_scales` scales: resolve the betas, drop the cache."""
        self._betas = self.betas(num_scales)
        self._prev, self._prev_size = None, None
        return self

    def __call__(self, k: int, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Guide the post-CFG logits (B, h*w, C) of scale k on grid `size` = (h, w)."""
        if self._betas is None:
            raise SSGError("call SSG.reset(num_scales) at the start of every sampling call")
        if not 0 <= k < len(self._betas):
            raise SSGError(f"scale index {k} out of range for {len(self._betas)} scales")
        h, w = size
        if logits.ndim != 3 or logits.shape[1] != h * w:
            raise SSGError(f"scale {k}: logits of shape {tuple(logits.shape)} do not hold a {h}x{w} grid as (B, h*w, C)")
        if k == 0:
            self._prev, self._prev_size = None, None
        beta = self._betas[k]
        out = logits
        if beta != 0:
            if self._prev is None or self._prev.shape[0] != logits.shape[0]:
                raise SSGError(f"scale {k} is guided but scale {k - 1} was not seen in this sampling call")
            prior = dse(self._prev, (h, w), prev_size=self._prev_size, mode=self.mode, rescale=self.rescale,
                        prior=self.prior)
            out = ssg_guide(logits, prior, beta)
        needed_next = k + 1 < len(self._betas) and self._betas[k + 1] != 0
        if needed_next:  # a copy: the caller's top-k/top-p writes -inf into the tensor in place
            self._prev = (out if self.cache == "guided" else logits).detach().clone()
            self._prev_size = (h, w)
        else:
            self._prev, self._prev_size = None, None
        return out
