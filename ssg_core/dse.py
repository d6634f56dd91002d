"""Discrete Spatial Enhancement (DSE): the prior of scale k built from the logits of scale k-1.

    up    = interpolate(prev -> (h, w))                  # the new high-frequency band comes from here
    U     = DCT(up); P = DCT(prev)                       # orthonormal DCT-II over (h, w)
    U[:h_p, :w_p] = P * sqrt(h*w / (h_p*w_p))            # coarse block verbatim (rescaled, see below)
    prior = IDCT(U)

Every channel (vocabulary entry / bit class) is transformed independently. `rescale`
keeps the coarse map's mean: with an orthonormal DCT the DC coefficient of an n-pixel map
is sqrt(n) x its mean, so a literal paste would shrink the coarse band by
sqrt(h_p*w_p / (h*w)).

Two paths compute the same map. `dse_reference` follows the recipe above literally, in float64.
`dse` uses the fact that the whole thing is a fixed linear map of each channel's grid:

    prior = A_h X A_w^T  -  (Q_h A_h) X (Q_w A_w)^T  +  s (D_h^T[:, :h_p] D_hp) X (D_w^T[:, :w_p] D_wp)^T

(interpolation, minus the interpolation's low block, plus the pasted coarse block; A is
the 1-D interpolation matrix, Q = D^T[:, :p] D[:p] the projector on the low block). The
factors are precomputed once per (grid pair, mode, options, device) in float64 and applied
in float32 either as one (h*w, h_p*w_p) matrix (small grids) or as two batched matmuls
on the channel-last layout (large grids), with no transposes of the logits.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dct import dct_matrix
from .errors import SSGError

MODES = ("bilinear", "bicubic", "nearest", "area")
PRIORS = ("dse", "interp")
# Above this many entries in the dense (h*w, h_p*w_p) matrix the separable form is used.
DENSE_MAX = 1 << 16


# ----------------------------------------------------------------------------- layout
def _square_side(L: int) -> int:
    s = math.isqrt(L)
    if s * s != L:
        raise SSGError(f"cannot infer the grid of {L} tokens: pass prev_size=(h, w)")
    return s


def _check_sizes(prev_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    try:
        hp, wp = (int(v) for v in prev_size)
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SSGError(f"grid sizes must be pairs of integers, got {prev_size} -> {size}") from None
    if min(hp, wp, h, w) < 1:
        raise SSGError(f"grid sizes must be positive, got {(hp, wp)} -> {(h, w)}")
    if h < hp or w < wp:
        raise SSGError(f"DSE maps a coarse grid to a finer one; got a shrinking grid {(hp, wp)} -> {(h, w)}")
    return hp, wp, h, w


def _as_grid(prev: torch.Tensor, prev_size: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """prev as (B, h_p, w_p, C); also its grid and whether it came in flat (B, L, C)."""
    if prev.ndim == 4:
        return prev, (prev.shape[1], prev.shape[2]), False
    if prev.ndim != 3:
        raise SSGError(f"logits must be (B, h*w, C) or (B, h, w, C), got shape {tuple(prev.shape)}")
    B, L, C = prev.shape
    if prev_size is None:
        s = _square_side(L)
        prev_size = (s, s)
    if prev_size[0] * prev_size[1] != L:
        raise SSGError(f"prev_size {tuple(prev_size)} does not match {L} tokens")
    return prev.reshape(B, prev_size[0], prev_size[1], C), tuple(prev_size), True


def _check_options(mode: str, prior: str) -> None:
    if mode not in MODES:
        raise SSGError(f"unknown DSE interpolation mode {mode!r}; choose one of {', '.join(MODES)}")
    if prior not in PRIORS:
        raise SSGError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize x (N, C, h_p, w_p) -> (N, C, h, w): half-pixel centres, edge clamping, no antialias."""
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=False)
    return F.interpolate(x, size=size, mode=mode)


# ----------------------------------------------------------------------------- reference path
def dse_reference(prev: torch.Tensor, size: tuple[int, int], prev_size: tuple[int, int] | None = None,
                  mode: str = "bilinear", rescale: bool = True, prior: str = "dse") -> torch.Tensor:
    """DSE computed literally: interpolate, DCT both maps, paste the coarse block, inverse DCT.

    prev: (B, h_p*w_p, C) (with `prev_size`, or a square grid) or (B, h_p, w_p, C).
    Returns the prior at `size` = (h, w) in prev's layout and dtype. Computed in float64:
    this path is the yardstick for `dse` (float32 resizing alone is off by up to ~1e-5 at
    64-wide grids, because the source coordinates are rounded to float32).
    """
    _check_options(mode, prior)
    x, (hp, wp), flat = _as_grid(prev, prev_size)
    hp, wp, h, w = _check_sizes((hp, wp), size)
    xc = x.double().permute(0, 3, 1, 2)                               # (B, C, h_p, w_p); float64: the yardstick
    up = _interpolate(xc, (h, w), mode)                               # (B, C, h, w)
    if prior == "dse":
        dh, dw = dct_matrix(h, x.device, xc.dtype), dct_matrix(w, x.device, xc.dtype)
        U = dh @ up @ dw.T
        P = dct_matrix(hp, x.device, xc.dtype) @ xc @ dct_matrix(wp, x.device, xc.dtype).T
        scale = math.sqrt((h * w) / (hp * wp)) if rescale else 1.0
        U[..., :hp, :wp] = P * scale
        up = dh.T @ U @ dw
    out = up.permute(0, 2, 3, 1).to(prev.dtype)                       # (B, h, w, C)
    return out.reshape(out.shape[0], h * w, -1) if flat else out.contiguous()


# ----------------------------------------------------------------------------- fast path
@dataclass(frozen=True)
class DSEOperator:
    """The DSE map for one grid pair: `prior = sum_t L[t] @ X @ R[t]^T` per channel.

    L: (T, h, h_p) and R: (T, w, w_p) with T = 3 (dse) or 1 (interp), float32;
    `dense`: the same map as one (h*w, h_p*w_p) matrix, or None when the grid is large.
    """
    prev_size: tuple[int, int]
    size: tuple[int, int]
    L: torch.Tensor
    R: torch.Tensor
    dense: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, h_p, w_p, C) float32 -> prior (B, h*w, C) float32."""
        B, hp, wp, C = x.shape
        h, w = self.size
        if self.dense is not None:
            return torch.matmul(self.dense, x.reshape(B, hp * wp, C))
        T = self.L.shape[0]
        # right factors, stacked: (T*w, w_p) @ (B*h_p, w_p, C) -> (B, h_p, T, w, C), channel-last kept
        z = torch.matmul(self.R.reshape(T * w, wp), x.reshape(B * hp, wp, C))
        # left factors side by side: (h, h_p*T) @ (B, h_p*T, w*C) -> (B, h, w*C); the sum over t is in the matmul
        left = self.L.permute(1, 2, 0).reshape(h, hp * T)
        return torch.matmul(left, z.reshape(B, hp * T, w * C)).reshape(B, h * w, C)


def _interp_matrix(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    """(n_out, n_in) float64 matrix of 1-D resizing (every mode here is separable)."""
    eye = torch.eye(n_in, dtype=torch.float64).reshape(1, n_in, n_in, 1)      # channels = basis vectors
    return _interpolate(eye, (n_out, 1), mode)[0, :, :, 0].T.contiguous()


@functools.lru_cache(maxsize=256)
def _operator_cached(hp: int, wp: int, h: int, w: int, mode: str, rescale: bool, prior: str,
                     device: str) -> DSEOperator:
    def factors(p: int, n: int) -> list[torch.Tensor]:
        A = _interp_matrix(p, n, mode)                                           # (n, p)
        if prior == "interp":
            return [A]
        D, Dp = dct_matrix(n, dtype=torch.float64), dct_matrix(p, dtype=torch.float64)
        Q = D[:p].T @ D[:p]                                                      # projector on the low block
        return [A, Q @ A, D[:p].T @ Dp]

    Ls, Rs = factors(hp, h), factors(wp, w)
    if prior == "dse":  # signs and the coarse-block scale go on the left factors only
        Ls[1] = -Ls[1]
        if rescale:
            Ls[2] = Ls[2] * math.sqrt((h * w) / (hp * wp))
    L64, R64 = torch.stack(Ls), torch.stack(Rs)
    dense = None
    if h * w * hp * wp <= DENSE_MAX:
        dense = sum(torch.kron(a, b) for a, b in zip(L64, R64)).to(device=device, dtype=torch.float32)
    return DSEOperator((hp, wp), (h, w), L64.to(device=device, dtype=torch.float32),
                       R64.to(device=device, dtype=torch.float32), dense)


def dse_operator(prev_size: tuple[int, int], size: tuple[int, int], mode: str = "bilinear", rescale: bool = True,
                 prior: str = "dse", device: torch.device | str | None = None) -> DSEOperator:
    """The precomputed DSE map from `prev_size` to `size` (cached per arguments)."""
    _check_options(mode, prior)
    hp, wp, h, w = _check_sizes(prev_size, size)
    return _operator_cached(hp, wp, h, w, mode, bool(rescale), prior, str(torch.device(device or "cpu")))


def dse(prev: torch.Tensor, size: tuple[int, int], prev_size: tuple[int, int] | None = None,
        mode: str = "bilinear", rescale: bool = True, prior: str = "dse") -> torch.Tensor:
    """The SSG prior at `size` = (h, w) from the previous scale's logits.

    prev: (B, h_p*w_p, C) channel-last (the models' flat layout; give `prev_size` unless
    the grid is square) or (B, h_p, w_p, C). Returns the prior in prev's layout and dtype,
    computed in float32. Equal sizes give prev back unchanged (the map is the identity).
    """
    x, (hp, wp), flat = _as_grid(prev, prev_size)
    op = dse_operator((hp, wp), size, mode, rescale, prior, x.device)
    h, w = op.size
    if (hp, wp) == (h, w):                     # interpolation to the same grid and a full paste: identity
        out = x.reshape(x.shape[0], h * w, -1).clone()
    else:
        out = op(x.float()).to(prev.dtype)     # (B, h*w, C)
    return out if flat else out.reshape(out.shape[0], h, w, -1)
