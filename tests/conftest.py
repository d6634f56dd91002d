"""Shared fixtures: where the golden data lives, and a fixed, small thread count.

The golden data sits in `../shared/golden` beside the checkout (CI has it there too).
"""
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
