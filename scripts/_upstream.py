"""What the three `*_upstream_ssg.py` examples share: `ssg_core` without this repository's model packages on
the path, a researcher's checkout first on it, and a one-line error when the import goes elsewhere.

Upstream HART's `hart` and Infinity's `infinity` are namespace packages (no __init__.py): a regular package of
the same name anywhere on sys.path wins over them, even behind the checkout. This repository's root holds such a
`hart`, so it must not stay on the path (install `packages/ssg-core` to get `ssg_core` alone).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _is_repo(entry: str) -> bool:
    try:
        return Path(entry or ".").resolve() == REPO
    except OSError:
        return False


def import_ssg_core() -> None:
    """Import ssg_core: the installed one (`pip install ./packages/ssg-core`), else this repository's, after which
    the repository root leaves sys.path again."""
    if importlib.util.find_spec("ssg_core") is None:
        sys.path.insert(0, str(REPO))
    import ssg_core.cli  # noqa: F401  (everything the examples use, imported while the path allows it)
    import ssg_core.evaluation  # noqa: F401
    import ssg_core.hub  # noqa: F401
    import ssg_core.integrations  # noqa: F401
    sys.path[:] = [p for p in sys.path if not _is_repo(p)]


def use_checkout(path: Path, module: str, marker: str, upstream: str):
    """Put the checkout `path` first on sys.path and import `module` from it (e.g. "models.var").

    `marker` is a file every such checkout has; `upstream` names the repository and commit for messages.
    One-line `SSGError`s for a wrong folder, a missing dependency of upstream's, or a module found elsewhere.
    """
    from ssg_core.errors import SSGError
    root = Path(path).expanduser().resolve()
    if not (root / marker).is_file():
        raise SSGError(f"--upstream {path}: no {marker} there; give the root folder of a {upstream} checkout")
    sys.path[:] = [p for p in sys.path if not _is_repo(p)]
    sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise SSGError(f"importing {module} from --upstream {path} failed ({type(e).__name__}: {e}); install the "
                       f"packages upstream's code imports into this environment") from None
    origin = Path(mod.__file__).resolve()
    if not origin.is_relative_to(root):
        raise SSGError(f"{module} was imported from {origin}, not from --upstream {path}: another package of that "
                       f"name comes first on the Python path (a `pip install .` of this whole repository installs "
                       f"one; install ssg_core alone with `pip install ./packages/ssg-core`)")
    return mod


def load_file_module(path: Path, name: str):
    """Import the file `path` as module `name` (e.g. upstream's tools/run_infinity.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def autocast(device, dtype):
    """Autocast on CUDA in `dtype` (upstream's inference precision); plain float32 elsewhere."""
    import torch
    if device.type == "cuda" and dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def save_comparison(out: Path, sample_row, ssg, compare: bool, nrow: int, zoom: int) -> str:
    """Sample the baseline row (with --compare) and the SSG row, each `sample_row(hook)` -> (n, 3, H, W) in [0, 1]
    with hook None or `ssg`, write them as one PNG grid, and say what the grid shows."""
    import torch

    from ssg_core.evaluation import save_grid
    rows = ([sample_row(None)] if compare else []) + [sample_row(ssg)]
    save_grid(out, torch.cat(rows), nrow=nrow, zoom=zoom)
    return "baseline (top) and SSG (bottom)" if compare else ("SSG" if ssg is not None else "baseline")


def add_grid_args(p, default_out: str) -> None:
    """`--out` (the PNG grid) and `--zoom`, as every example writes them."""
    p.add_argument("--out", type=Path, default=Path(default_out), help="PNG grid to write (atomically)")
    p.add_argument("--zoom", type=int, default=1, help="enlarge every image N times in the grid")


def check_grid_args(args) -> None:
    """One-line errors for `--out` and `--zoom`, before anything is loaded (the folder is probed for writing)."""
    from ssg_core.errors import SSGError
    from ssg_core.evaluation import check_output_path
    if args.out.suffix.lower() != ".png":
        raise SSGError(f"--out {args.out}: the grid is written as PNG; give a .png file name")
    check_output_path(args.out, "--out")
    if not 1 <= args.zoom <= 16:
        raise SSGError(f"--zoom must be between 1 and 16, got {args.zoom}")
