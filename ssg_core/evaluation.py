"""Evaluation-sampling plumbing shared by the samplers: distributed setup, per-image
seeds, atomic PNGs, resumption, the `.npz` for the standard evaluators, the manifest.

Conventions (DESIGN.md): `{index:06d}.png` written atomically (temp file + rename);
existing files are skipped so a killed run resumes; the result for image i depends only
on (seed, i, settings); the `.npz` holds `arr_0` (N, H, W, 3) uint8, shuffled with a
fixed seed so split-based Inception Score is not biased by class order.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .cli import pick_device
from .errors import SSGError


# ---------------------------------------------------------------- files, atomically
_UMASK = os.umask(0)
os.umask(_UMASK)


def _reason(e: OSError) -> str:
    """What went wrong, in the operating system's words ("No space left on device", "Read-only file system")."""
    return e.strerror or str(e)


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _atomic_write(path: Path, write) -> None:
    """Write `path` through `write(f)` (`f` a binary file object): into a temporary file in the same folder,
    then renamed over `path`, so the file appears whole or not at all. A failure of the file system (a folder
    that cannot be created, no permission, a read-only file system, a full disk) is an `SSGError` naming the
    path and the reason, and the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSGError(f"cannot create the folder {path.parent}: {_reason(e)}") from e
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError):
            raise SSGError(f"cannot write {path}: {_reason(e)}") from e
        raise


def _write_test(folder: Path) -> str | None:
    """Create, write one byte to and remove a temporary file in `folder`; why that failed, or None."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0")
    except OSError as e:  # ENOENT in a folder that exists: a file system that takes no files, e.g. /proc
        return "it takes no new files" if e.errno == errno.ENOENT and folder.is_dir() else _reason(e)
    finally:
        _remove(tmp)
    return None


def check_output_path(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """Fail now, in one line, if `path` (a file, or with `folder` a folder) could not be written later:
    a folder where a file goes or the reverse, a file in the way of its parent folders, no permission, a
    read-only or full file system, a place that takes no files (/proc). The folder that would receive the
    output (the nearest existing one) gets a test file, created and removed at once. Samplers call this
    before loading any weights, so a typo costs no sampling time."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise SSGError(f"{what} {path} exists and is not a folder")
    if not folder and path.is_dir():
        raise SSGError(f"{what} {path} is a folder; give a file name")
    for parent in ([path] if folder else []) + list(path.parents):
        if parent.exists():  # the nearest existing folder decides whether the rest can be created
            if not parent.is_dir():
                raise SSGError(f"{what} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise SSGError(f"{what} {path}: no permission to write in {parent}")
            reason = _write_test(parent)
            if reason is not None:
                raise SSGError(f"{what} {path}: cannot write in {parent}: {reason}")
            break
    return path


def save_png(path: str | os.PathLike, image_hwc_uint8: np.ndarray) -> None:
    """Write one (H, W, 3) uint8 image as PNG; the file appears whole or not at all."""
    from PIL import Image
    img = Image.fromarray(np.ascontiguousarray(image_hwc_uint8))
    _atomic_write(Path(path), lambda f: img.save(f, format="PNG"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    data = (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()
    _atomic_write(Path(path), lambda f: f.write(data))


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, upstream's way: x255 in float32, truncate."""
    return images.detach().float().clamp(0, 1).mul(255).permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def save_grid(path: str | os.PathLike, images: torch.Tensor, nrow: int, zoom: int = 1) -> None:
    """Save (B, 3, H, W) images in [0, 1] as one PNG grid (2 px padding), atomically.

    `zoom` enlarges every image by pixel repetition first (for viewing tiny images).
    """
    from torchvision.utils import make_grid
    images = images.detach().float().cpu().clamp(0, 1)
    if zoom > 1:
        images = images.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    grid = make_grid(images, nrow=max(1, nrow), padding=2, pad_value=1.0)
    save_png(path, to_uint8_hwc(grid[None])[0])


# ---------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group together: a rank that exits while gloo still talks to the others aborts
        ("terminate called without an active exception"), so every rank waits for all, then tears down."""
        if self.world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def init_distributed(device: str | None = None) -> Dist:
    """Join the torchrun process group if there is one (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)  # one-line errors for a bad name or a missing GPU
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, dev)


def shard(indices: Iterable[int], dist: Dist) -> list[int]:
    """Indices of this rank: interleaved (i % world == rank), so ranks finish together."""
    return [i for i in indices if i % dist.world == dist.rank]


def pending(sample_dir: str | os.PathLike, indices: Iterable[int]) -> list[int]:
    """Indices whose `{i:06d}.png` does not exist yet (resumption)."""
    d = Path(sample_dir)
    return [i for i in indices if not (d / f"{i:06d}.png").is_file()]


def image_seed(seed: int, index: int) -> int:
    """Seed of image `index`: a function of (seed, index) only, never of rank, world size or batch."""
    return (int(seed) * 1_000_003 + int(index)) % (2 ** 63 - 1)


# ---------------------------------------------------------------- npz and manifest
def pack_npz(sample_dir: str | os.PathLike, num: int, npz_path: str | os.PathLike,
             shuffle_seed: int = 0) -> tuple[int, ...]:
    """Pack `{0..num-1:06d}.png` into `npz_path` (`arr_0`, uint8 NHWC), shuffled with `shuffle_seed`.

    The permutation is stored too (`index`: the PNG index of every row), so per-class
    analyses can undo it. Returns the array's shape.
    """
    from PIL import Image
    d = Path(sample_dir)
    missing = [i for i in range(num) if not (d / f"{i:06d}.png").is_file()]
    if missing:
        raise SSGError(f"{len(missing)} of {num} images missing in {d} (e.g. {missing[0]:06d}.png); run the sampler again to finish")
    order = np.random.default_rng(shuffle_seed).permutation(num)
    first = np.asarray(Image.open(d / f"{0:06d}.png").convert("RGB"))
    arr = np.empty((num, *first.shape), dtype=np.uint8)
    for row, i in enumerate(order):
        arr[row] = np.asarray(Image.open(d / f"{int(i):06d}.png").convert("RGB"))
    _atomic_write(Path(npz_path), lambda f: np.savez(f, arr_0=arr, index=order.astype(np.int64)))
    return arr.shape


def versions() -> dict[str, str]:
    """Versions of what produced a result, for manifests."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["gpu"] = torch.cuda.get_device_name()
    try:
        import transformers
        out["transformers"] = transformers.__version__
    except ImportError:
        pass
    return out
