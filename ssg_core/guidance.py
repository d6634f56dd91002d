"""The SSG update and the small state object that applies it inside a sampling loop.

    guided_k = l_k + beta_k * (l_k - DSE(l_{k-1}, size of scale k))

`SSG` is a logits processor in the transformers sense: the sampling loop calls it once
per scale, between CFG and top-k/top-p, and never needs to know whether it is active.
"""
from __future__ import annotations

import math
import operator
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
        beta: a float (spread over the guided scales by `schedule` and `from_scale`) or a per-scale
            list with one value per scale, whose entry for scale 0 must be 0.
        schedule: the shape of a float beta over the guided window of n scales (see `from_scale`),
            j = 0..n-1 counting guided scales from the first one:
            "constant" (default, also None): beta at every guided scale;
            "linear-decay": beta * (n - j) / n, from beta at the first guided scale down to beta/n;
            "linear-increase": beta * (j + 1) / n, from beta/n up to beta at the last scale.
            The shape is spread over the window, not over all scales: beta is always the largest value.
            With the default window (scales 1..K-1, n = K-1) these are beta*(K-k)/(K-1) and beta*k/(K-1)
            at scale k.
        from_scale: which scales are guided, for a float beta (K scales, 0-based):
            None (default): scales 1..K-1, i.e. all (scale 0 has no previous scale and is never guided);
            k >= 1: scales k..K-1 ("from scale k on"); needs k <= K-1;
            -n: the last n scales, K-n..K-1 (Python's negative indexing); needs n <= K-1.
            Every other scale gets beta 0 (and costs nothing). Not combinable with a per-scale list.
        mode, rescale, prior: DSE options (see `ssg_core.dse.dse`).
        cache: what is kept as l_{k-1}: "raw" (the unguided post-CFG logits, default) or
            "guided" (the guided logits), always a copy taken before any in-place filtering.

    Example, K = 6 scales: SSG(0.3, from_scale=-1).betas(6) == [0, 0, 0, 0, 0, 0.3];
    SSG(0.6, "linear-increase", from_scale=3).betas(6) == [0, 0, 0, 0.2, 0.4, 0.6].

    Usage: `ssg.reset(K)` once per sampling call, then `logits = ssg(k, logits, (h, w))`
    for k = 0..K-1. A scale whose beta is 0 gets its input back untouched (no computation).
    """

    def __init__(self, beta: float | Sequence[float] = 0.0, schedule: str | None = None, mode: str = "bilinear",
                 rescale: bool = True, prior: str = "dse", cache: str = "raw", from_scale: int | None = None):
        if isinstance(beta, (list, tuple)):
            self.beta: float | list[float] = [_check_beta(b, f"beta[{i}]") for i, b in enumerate(beta)]
            if schedule not in (None, "constant"):
                raise SSGError("a per-scale beta list cannot be combined with a beta schedule")
            if self.beta and self.beta[0] != 0:
                raise SSGError(f"beta[0] must be 0: scale 0 has no previous scale to guide from (got {self.beta[0]})")
        else:
            self.beta = _check_beta(beta, "beta")
        if from_scale is not None:
            if isinstance(from_scale, bool):
                raise SSGError(f"from_scale must be an integer, got {from_scale!r}")
            try:
                from_scale = operator.index(from_scale)
            except TypeError:
                raise SSGError(f"from_scale must be an integer, got {from_scale!r}") from None
            if from_scale == 0:
                raise SSGError("from_scale 0: scale 0 is never guided (it has no previous scale); start from scale 1, "
                               "or count from the end with -n for the last n scales")
            if isinstance(self.beta, list):
                raise SSGError("a per-scale beta list already says which scales are guided; it cannot be combined "
                               "with a guided window (from scale k on / the last n scales)")
        if schedule not in (None, *SCHEDULES):
            raise SSGError(f"unknown beta schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if mode not in MODES:
            raise SSGError(f"unknown DSE interpolation mode {mode!r}; choose one of {', '.join(MODES)}")
        if prior not in PRIORS:
            raise SSGError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
        if cache not in CACHES:
            raise SSGError(f"unknown cache {cache!r}; choose one of {', '.join(CACHES)}")
        self.schedule = schedule or "constant"
        self.from_scale: int | None = from_scale
        self.mode, self.rescale, self.prior, self.cache = mode, bool(rescale), prior, cache
        self._betas: list[float] | None = None
        self._prev: torch.Tensor | None = None
        self._prev_size: tuple[int, int] | None = None

    def __repr__(self) -> str:
        window = "" if self.from_scale is None else f", from_scale={self.from_scale}"  # old reprs stay as they were
        return (f"SSG(beta={self.beta}, schedule={self.schedule!r}{window}, mode={self.mode!r}, "
                f"rescale={self.rescale}, prior={self.prior!r}, cache={self.cache!r})")

    @property
    def enabled(self) -> bool:
        """False when every beta is 0: the sampler then behaves exactly as without SSG."""
        return any(b != 0 for b in self.beta) if isinstance(self.beta, list) else self.beta != 0

    def first_guided(self, num_scales: int) -> int:
        """The first scale of the guided window for `num_scales` scales (checks `from_scale` against it)."""
        K, k = int(num_scales), self.from_scale
        if k is None:
            return 1
        if k > 0 and k >= K:
            raise SSGError(f"cannot guide from scale {k} on: the model samples {K} scales (0..{K - 1})")
        if k < 0 and -k > K - 1:
            raise SSGError(f"cannot guide the last {-k} scales: only {max(K - 1, 0)} of the model's {K} scales can be "
                           f"guided (scale 0 has no previous scale)")
        return k if k > 0 else K + k

    def betas(self, num_scales: int) -> list[float]:
        """The beta of every scale 0..num_scales-1 (scale 0 is always 0; see the class docstring)."""
        K = int(num_scales)
        if isinstance(self.beta, list):
            if len(self.beta) != K:
                raise SSGError(f"beta list has {len(self.beta)} values but the model samples {K} scales; give one "
                               f"value per scale (the first must be 0)")
            return list(self.beta)
        first = self.first_guided(K)
        n = K - first  # guided scales: first..K-1
        if n <= 0:
            return [0.0] * K
        if self.schedule == "linear-decay":
            window = [self.beta * (n - j) / n for j in range(n)]
        elif self.schedule == "linear-increase":
            window = [self.beta * (j + 1) / n for j in range(n)]
        else:
            window = [self.beta] * n
        return [0.0] * first + window

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
