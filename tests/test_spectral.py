import math

import torch

from ssg_core.spectral import image_spectrum, logit_spectrum, nyquist, radial_index, radial_profile


def test_pure_cosine_lands_in_its_radial_bin():
    n, f = 32, 5
    y = torch.arange(n, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * f * y / n)[None, :].expand(n, n)  # f cycles along x
    prof = radial_profile(wave)
    assert prof.argmax().item() == f
    assert prof[f] > 100 * prof[torch.arange(len(prof)) != f].max()


def test_radial_bins_cover_every_radius_and_profile_of_constant_is_dc_only():
    idx = radial_index(16, 16)
    assert set(idx.flatten().tolist()) == set(range(int(idx.max()) + 1))
    prof = radial_profile(torch.full((16, 16), 2.0))
    assert prof[0] == 2.0 * 256 and prof[1:].abs().max() < 1e-9


def test_logit_and_image_spectra_shapes_and_nyquist():
    assert logit_spectrum(torch.randn(3, 100, 7), (10, 10)).shape == (3, 8)
    assert image_spectrum(torch.rand(2, 3, 32, 32)).shape == (2, 24)
    assert [nyquist(p) for p in (8, 10, 13, 16)] == [4, 5, 6, 8]


def test_smoothing_lowers_high_frequencies_of_images():
    torch.manual_seed(0)
    img = torch.rand(4, 3, 32, 32)
    smooth = torch.nn.functional.avg_pool2d(img, 3, 1, 1)
    ratio = image_spectrum(smooth).mean(0) / image_spectrum(img).mean(0)
    assert ratio[12:].max() < 0.5 and ratio[1:3].min() > 0.8
