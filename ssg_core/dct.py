"""Orthonormal DCT-II (and its inverse) as cached matrices.

A 2-D DCT over the last two axes is `D_h @ x @ D_w^T`; the inverse is `D_h^T @ X @ D_w`.
The matrices are built in float64 once per (n, device, dtype) and kept, so the small
grids of next-scale models (n <= 64) cost one cached lookup each.
"""
from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=None)
def _dct_matrix_cached(n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def dct_matrix(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, n) orthonormal DCT-II matrix D: `D @ x` transforms the first axis of x; `D.T` inverts it."""
    if n < 1:
        raise ValueError(f"DCT size must be positive, got {n}")
    return _dct_matrix_cached(int(n), str(torch.device(device or "cpu")), dtype)


def idct_matrix(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, n) inverse of `dct_matrix(n)` (its transpose: the DCT-III, orthonormal)."""
    return dct_matrix(n, device, dtype).T


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes of x (..., H, W), in x's dtype."""
    H, W = x.shape[-2:]
    return dct_matrix(H, x.device, x.dtype) @ x @ dct_matrix(W, x.device, x.dtype).T


def idct2(X: torch.Tensor) -> torch.Tensor:
    """Inverse of `dct2` over the last two axes of X (..., H, W)."""
    H, W = X.shape[-2:]
    return dct_matrix(H, X.device, X.dtype).T @ X @ dct_matrix(W, X.device, X.dtype)
