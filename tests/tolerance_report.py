"""pytest plugin: how much of each float tolerance the tests use, per comparison (`--tolerance-report`).

    python -m pytest -q --tolerance-report tests/test_dse.py tests/test_var_golden.py
    ATEN_CPU_CAPABILITY=default SSG_TEST_THREADS=1 python -m pytest -q --tolerance-report tests/...

It wraps `torch.allclose`, `torch.testing.assert_close` and
`numpy.testing.assert_allclose` and prints, per call site in tests/ (file:line), the largest |a - b| and the
largest share of the bound it used, |a - b| / (atol + rtol |b|). Comparisons written out by hand,
`(a - b).abs().max() <= x`, are not seen. The "measured" figures next to the bounds in the tests come from
runs of this plugin under the kernel families and thread counts of docs/reproducibility.md.
"""
from __future__ import annotations

import os
import traceback

import numpy as np
import torch

_seen: dict[str, tuple[float, float]] = {}  # site -> (largest |a - b|, largest share of the bound)


def _site() -> str:
    for frame in reversed(traceback.extract_stack()[:-3]):
        if os.sep + "tests" + os.sep in frame.filename and not frame.filename.endswith("tolerance_report.py"):
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "?"


def _note(actual, expected, atol: float, rtol: float) -> None:
    a = torch.as_tensor(np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual))
    b = torch.as_tensor(np.asarray(expected.detach().cpu() if isinstance(expected, torch.Tensor) else expected))
    if a.is_complex() or b.is_complex() or a.numel() == 0:
        return
    diff = (a.double() - b.double()).abs()
    finite = torch.isfinite(diff)
    if not finite.any():
        return
    bound = atol + rtol * b.double().abs()
    share = diff / bound if float(bound[finite].min()) > 0 else torch.where(diff > 0, torch.inf, 0.0)
    site = _site()
    old = _seen.get(site, (0.0, 0.0))
    _seen[site] = (max(old[0], float(diff[finite].max())), max(old[1], float(share[finite].max())))


def pytest_configure(config):
    allclose, assert_allclose, assert_close = torch.allclose, np.testing.assert_allclose, torch.testing.assert_close

    def torch_allclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=False):
        _note(a, b, atol, rtol)
        return allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)

    def np_assert_allclose(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
        _note(actual, desired, atol, rtol)
        return assert_allclose(actual, desired, rtol, atol, *args, **kwargs)

    def torch_assert_close(actual, expected, *args, rtol=None, atol=None, **kwargs):
        # torch's defaults for float32 (and, roughly, for the rest) when no bound is given
        r, a = (rtol, atol) if rtol is not None else ((1.3e-6, 1e-5) if actual.dtype == torch.float32 else (1e-7, 1e-7))
        _note(actual, expected, a, r)
        return assert_close(actual, expected, *args, rtol=rtol, atol=atol, **kwargs)

    torch.allclose, np.testing.assert_allclose, torch.testing.assert_close = (torch_allclose, np_assert_allclose,
                                                                             torch_assert_close)


def pytest_terminal_summary(terminalreporter):
    kernels, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    terminalreporter.write_line(f"tolerance report ({kernels} kernels, {threads} threads): site, largest |a - b|, "
                                "largest share of the bound")
    for site, (diff, share) in sorted(_seen.items()):
        terminalreporter.write_line(f"  {site:<34} {diff:10.3g} {share:8.3f}")
