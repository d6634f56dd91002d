"""`packages/ssg-core`: an install of `ssg_core` alone, which leaves a researcher's upstream `hart` importable.

Upstream HART's `hart` (like Infinity's `infinity`) is a namespace package: it has no __init__.py, so a regular
package of the same name anywhere on sys.path, such as this project's `hart`, wins over it even when the
checkout comes first. The test installs the small distribution into a folder (no dependencies: torch is
already there), then, in a fresh interpreter without site-packages processing, puts the upstream-shaped
stand-in checkout first on the path: `import hart` must give the stand-in, `ssg_core` the installed copy, and
`enable_ssg` must work on the stand-in's HART. Built from a copy, so that nothing is written into the repository.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "upstream_standins"

CHECK = r"""
import sys, torch
import hart, ssg_core
print("hart", list(hart.__path__))
print("ssg_core", ssg_core.__file__)
for name in ("VAR", "Infinity"):
    try:
        __import__(name)
        print("importable", name)
    except ModuleNotFoundError:
        pass
from ssg_core import SSG
from ssg_core.integrations import enable_ssg
from hart.modules.models.transformer import HARTForT2I
torch.manual_seed(0)
model, ctx = HARTForT2I().eval(), torch.randn(2, 8, 32)

def tokens(**kw):
    torch.manual_seed(1)
    model.autoregressive_infer_cfg(B=2, label_B=ctx, g_seed=3, cfg=4.0, **kw)
    return torch.cat(model.tokens, 1)

direct, plain = tokens(ssg=SSG(beta=0.5)), tokens()
with enable_ssg(model, SSG(beta=0.5)):
    hooked = tokens()
print("enable_ssg equals ssg=", torch.equal(hooked, direct), "differs from plain", not torch.equal(hooked, plain))
"""


def _can_build_wheels_here() -> bool:
    """Whether this environment's own setuptools builds wheels (>= 70.1 has bdist_wheel, older ones need the
    `wheel` package): then the build needs no index; otherwise pip fetches its build tools (build isolation)."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _install(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(REPO / "packages" / "ssg-core", src / "packages" / "ssg-core",
                    ignore=shutil.ignore_patterns("build", "*.egg-info"))
    shutil.copytree(REPO / "ssg_core", src / "ssg_core", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    offline = ["--no-build-isolation", "--no-index"] if _can_build_wheels_here() else []
    run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline, "--target", str(target),
                          str(src / "packages" / "ssg-core")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return target


def _python(code: str, cwd: Path, *path: Path) -> str:
    """Run `code` with exactly `path` (then the standard library) on sys.path: -S skips site-packages and their
    .pth files, so the editable install of the whole project in this environment does not take part."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=cwd)   # an empty folder: `-c` puts the working folder on the path too
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_ssg_core_alone_keeps_upstream_hart_importable(tmp_path):
    target = _install(tmp_path)
    installed = {p.name for p in target.iterdir()}
    assert {n for n in installed if not n.endswith(".dist-info")} == {"ssg_core"}, installed
    assert {p.name for p in (target / "ssg_core").glob("*.py")} == {p.name for p in (REPO / "ssg_core").glob("*.py")}

    torch_site = Path(torch.__file__).resolve().parents[1]   # torch and numpy, without the site machinery
    out = _python(CHECK, tmp_path, STANDINS, target, torch_site)
    assert f"hart {[str(STANDINS / 'hart')]}" in out, out
    assert f"ssg_core {target / 'ssg_core' / '__init__.py'}" in out, out
    assert "importable" not in out, out
    assert "enable_ssg equals ssg= True differs from plain True" in out, out


def test_the_whole_project_on_the_path_would_shadow_upstream_hart(tmp_path):
    """Why the separate distribution exists: with this project's regular package `hart` anywhere on the path (the
    repository root here; site-packages after a plain `pip install .`), upstream's namespace package `hart` loses
    to it, even with the checkout first."""
    out = _python("import hart; print('hart', hart.__file__)", tmp_path, STANDINS, REPO)
    assert f"hart {REPO / 'hart' / '__init__.py'}" in out, out
