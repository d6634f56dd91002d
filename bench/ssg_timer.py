"""`TimedSSG`: an SSG hook that adds up the wall time spent inside its calls.

End-to-end "with vs without SSG" differences are below the noise of a busy machine; the
time inside the hook is the direct measure of SSG's cost. Used by the bench/ scripts
(run as `python bench/bench_x.py`, which puts this folder on sys.path).
"""
from __future__ import annotations

import time

import torch

from ssg_core import SSG


class TimedSSG:
    """Wraps an SSG object; `total` is the seconds spent in its calls (CUDA synchronised around each)."""

    def __init__(self, ssg: SSG, device: torch.device):
        self.ssg, self.device, self.total = ssg, device, 0.0

    def reset(self, num_scales: int) -> None:
        self.ssg.reset(num_scales)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, k: int, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        self._sync()
        t0 = time.perf_counter()
        out = self.ssg(k, logits, size)
        self._sync()
        self.total += time.perf_counter() - t0
        return out
