"""Shared fixtures: where the golden data lives, and a fixed, small thread count.

The golden data sits in `../shared/golden` beside the checkout (CI has it there too).
"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"

torch.set_num_threads(2)  # the golden files were written with 2 intra-op threads


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
