"""The orthonormal DCT-II matrices against SciPy; float64, so 1e-12 bounds are rounding (1e-14 seen)."""
import numpy as np
import pytest
import scipy.fft
import torch

from ssg_core.dct import dct2, dct_matrix, idct2, idct_matrix


@pytest.mark.parametrize("n", [1, 2, 3, 8, 13, 64])
def test_dct_matrix_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(idct_matrix(n, dtype=torch.float64), d.T)


@pytest.mark.parametrize("shape", [(5, 7), (16, 16), (1, 4)])
def test_dct2_matches_scipy_ortho_dct_ii(shape):
    x = torch.randn(3, *shape, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), axes=(-2, -1), type=2, norm="ortho")
    np.testing.assert_allclose(dct2(x).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(idct2(dct2(x)).numpy(), x.numpy(), atol=1e-12)


def test_dct_matrix_cached_per_device_and_dtype():
    assert dct_matrix(8) is dct_matrix(8)
    assert dct_matrix(8).dtype == torch.float32 and dct_matrix(8, dtype=torch.float64).dtype == torch.float64
