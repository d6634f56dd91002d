"""Pins the properties of DSE listed in DESIGN.md, and the fast path against the reference.

Float bounds: float64 paths to 1e-10 (float64 rounding of n <= 64 terms, ~1e-14 seen); float32 paths as
DESIGN.md requires (fast = reference to 1e-5), or a few times the largest difference measured across the
kernel families default/avx2/avx512 x 1/2/3 threads (noted at each bound; docs/reproducibility.md).
"""
import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from ssg_core import SSGError, dse, dse_operator, dse_reference
from ssg_core.dct import dct2

PAIRS = [((1, 1), (2, 2)), ((8, 8), (10, 10)), ((13, 13), (16, 16)), ((24, 40), (32, 48)), ((48, 48), (64, 64))]


def scipy_dse(x: np.ndarray, size, rescale=True) -> np.ndarray:
    """Independent float64 DSE: torch's bilinear resize, scipy's orthonormal DCT-II."""
    B, hp, wp, C = x.shape
    h, w = size
    up = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                       align_corners=False).permute(0, 2, 3, 1).numpy()
    U = scipy.fft.dctn(up, axes=(1, 2), type=2, norm="ortho")
    P = scipy.fft.dctn(x, axes=(1, 2), type=2, norm="ortho")
    U[:, :hp, :wp] = P * (math.sqrt(h * w / (hp * wp)) if rescale else 1.0)
    return scipy.fft.idctn(U, axes=(1, 2), type=2, norm="ortho")


@pytest.mark.parametrize("prev_size,size", PAIRS)
@pytest.mark.parametrize("rescale", [True, False])
def test_reference_path_matches_float64_scipy(prev_size, size, rescale):
    x = torch.randn(2, *prev_size, 6, dtype=torch.float64)
    expected = scipy_dse(x.numpy(), size, rescale)
    np.testing.assert_allclose(dse_reference(x, size, rescale=rescale).numpy(), expected, atol=1e-10)
    got32 = dse_reference(x.float(), size, rescale=rescale)
    assert got32.dtype == torch.float32
    # float32 rounding of the reference path: at most 2.2e-7 measured
    np.testing.assert_allclose(got32.double().numpy(), scipy_dse(x.float().double().numpy(), size, rescale), atol=1e-6)


@pytest.mark.parametrize("prev_size,size", PAIRS + [((3, 5), (3, 7)), ((2, 3), (4, 4))])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest", "area"])
@pytest.mark.parametrize("rescale,prior", [(True, "dse"), (False, "dse"), (True, "interp")])
def test_fast_path_equals_reference(prev_size, size, mode, rescale, prior):
    torch.manual_seed(0)
    x = torch.randn(3, prev_size[0] * prev_size[1], 5)
    ref = dse_reference(x, size, prev_size, mode=mode, rescale=rescale, prior=prior)
    fast = dse(x, size, prev_size, mode=mode, rescale=rescale, prior=prior)
    assert fast.shape == (3, size[0] * size[1], 5)
    assert (fast - ref).abs().max().item() <= 1e-5  # DESIGN.md: the two paths agree to 1e-5


def test_fast_path_float64_exact_against_scipy():
    """The fast path's own error (float32 math on float64-built factors) is far below the reference's."""
    x = torch.randn(2, 24, 40, 4, dtype=torch.float64)
    expected = scipy_dse(x.numpy(), (32, 48))
    np.testing.assert_allclose(dse(x.float(), (32, 48)).double().numpy(), expected, atol=5e-6)  # 1.7e-6 measured


def test_dense_and_separable_forms_agree():
    op = dse_operator((8, 8), (10, 10))
    assert op.dense is not None
    x = torch.randn(2, 8, 8, 7)
    separable = type(op)(op.prev_size, op.size, op.L, op.R, None)
    assert torch.allclose(op(x), separable(x), atol=1e-5)  # two float32 orders: 1.7e-6 measured
    assert dse_operator((48, 48), (64, 64)).dense is None  # large grids use the separable form


@pytest.mark.parametrize("size", [(1, 1), (5, 5), (4, 9)])
def test_same_size_is_identity(size):
    x = torch.randn(2, size[0] * size[1], 3)
    assert torch.equal(dse(x, size, size), x)
    assert torch.allclose(dse_reference(x, size, size), x, atol=1e-6)  # DCT and its inverse cancel (0 measured)


@pytest.mark.parametrize("prev_size,size", PAIRS)
def test_constant_map_stays_constant_with_rescale(prev_size, size):
    x = torch.full((1, prev_size[0] * prev_size[1], 2), 3.07)
    # float32 rounding of the operator's sums: 2.9e-6 measured
    assert torch.allclose(dse(x, size, prev_size), torch.full((1, size[0] * size[1], 2), 3.07), atol=1e-5)


def test_literal_paste_shrinks_the_mean():
    """DESIGN.md's example: an 8->10 grid with mean 3.07 gets a prior of mean 2.45 without rescaling."""
    x = torch.full((1, 64, 1), 3.07)
    assert dse(x, (10, 10), rescale=False).mean().item() == pytest.approx(3.07 * 0.8, abs=1e-5)  # float32 sums


@pytest.mark.parametrize("prev_size,size", PAIRS)
def test_low_block_is_scaled_coarse_dct_and_high_band_is_interpolation(prev_size, size):
    (hp, wp), (h, w) = prev_size, size
    x = torch.randn(1, hp, wp, 3, dtype=torch.float64)
    prior = dse_reference(x, size).permute(0, 3, 1, 2)
    coeffs = dct2(prior)
    coarse = dct2(x.permute(0, 3, 1, 2)) * math.sqrt(h * w / (hp * wp))
    assert torch.allclose(coeffs[..., :hp, :wp], coarse, atol=1e-10)
    up = F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    high = torch.ones(h, w, dtype=torch.bool)
    high[:hp, :wp] = False
    assert torch.allclose(coeffs[..., high], dct2(up)[..., high], atol=1e-10)


def test_dse_is_linear():
    a, b = torch.randn(2, 2, 36, 4, dtype=torch.float64)
    lhs = dse(2.5 * a - 0.75 * b, (8, 8))
    rhs = 2.5 * dse(a, (8, 8)) - 0.75 * dse(b, (8, 8))
    assert torch.allclose(lhs, rhs, atol=1e-5)  # float32 inside (DESIGN.md): 2.4e-6 measured


def test_layouts_flat_and_grid_agree():
    x = torch.randn(2, 4, 6, 3)
    assert torch.allclose(dse(x, (8, 9)).reshape(2, 72, 3), dse(x.reshape(2, 24, 3), (8, 9), prev_size=(4, 6)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_in_same_dtype_out(dtype):
    x = torch.randn(2, 16, 8)
    out = dse(x.to(dtype), (6, 6))
    assert out.dtype == dtype
    assert torch.allclose(out.float(), dse(x, (6, 6)), atol=0.05, rtol=0.02)  # half-precision output: 0.012 measured


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(2, 169, 32)
    assert torch.allclose(dse(x.cuda(), (16, 16)).cpu(), dse(x, (16, 16)), atol=1e-4)  # another device's float32 sums


def test_bad_inputs_are_clear_errors():
    x = torch.randn(1, 16, 2)
    with pytest.raises(SSGError, match="shrinking"):
        dse(x, (3, 3))
    with pytest.raises(SSGError, match="positive"):
        dse(x, (-4, 8))
    with pytest.raises(SSGError, match="prev_size"):
        dse(torch.randn(1, 15, 2), (8, 8))
    with pytest.raises(SSGError, match="mode"):
        dse(x, (8, 8), mode="lanczos")
    with pytest.raises(SSGError, match="prior"):
        dse(x, (8, 8), prior="fft")
