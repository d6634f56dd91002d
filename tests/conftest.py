"""Shared fixtures: where the golden data lives, and a fixed, small thread count.

The golden data sits in `../shared/golden` beside the checkout (CI has it there too).
`SSG_TEST_THREADS` sets torch's intra-op thread count (default 2, as the golden files were written);
together with torch's `ATEN_CPU_CAPABILITY` (default, avx2, avx512) it lets `.ci/run` check that the
tests hold for other float32 summation orders (docs/reproducibility.md).
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"

THREADS = int(os.environ.get("SSG_TEST_THREADS", "2"))  # the golden files were written with 2 intra-op threads
torch.set_num_threads(THREADS)


def pytest_addoption(parser):
    parser.addoption("--tolerance-report", action="store_true",
                     help="print how much of each float tolerance the tests use (tests/tolerance_report.py)")


def pytest_configure(config):
    if config.getoption("--tolerance-report"):
        import tolerance_report  # beside this file
        config.pluginmanager.register(tolerance_report, "tolerance_report")


def pytest_report_header(config):
    return (f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads (SSG_TEST_THREADS)")


@pytest.fixture(autouse=True)
def _same_random_inputs():
    """Every test starts from the same global torch generator state, so the random inputs of a test (and
    whether they land near a tolerance) do not depend on which tests ran before it."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}: the checkout needs ../shared beside it")
    return GOLDEN


@pytest.fixture
def load_script(monkeypatch):
    """Import a script of the repository by its path (e.g. "bench/bench_var.py") as a fresh module, the way
    `python <path>` sees it: bench/ on sys.path (the bench scripts import their helpers from there), and the
    module registered in sys.modules for the test's duration (dataclasses look their module up there)."""
    def load(path: str):
        monkeypatch.syspath_prepend(str(REPO / "bench"))
        name = "script_" + path.replace("/", "_").removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, REPO / path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load
