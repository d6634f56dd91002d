"""`profile_call`: where one call's time goes, by operator, from `torch.profiler`.

The first question on a GPU is whether a sampler is bound by its kernels or by launching them:
`busy` (the summed kernel time) against the wall time answers it, and the operator table says
which kernels to fuse or replace. On CPU the table is by CPU time instead. Used by the bench/
scripts (run as `python bench/bench_x.py`, which puts this folder on sys.path).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ssg_core.errors import SSGError
from ssg_core.evaluation import _atomic_write


@dataclass
class OpRow:
    name: str
    calls: int
    seconds: float  # self time on the device that did the work (GPU kernels, or CPU)
    share: float    # of `busy`


@dataclass
class Profile:
    wall: float  # seconds of the profiled call, synchronised
    busy: float  # seconds the device spent in work: summed kernel time on CUDA, summed self CPU time on CPU
    ops: list[OpRow]


def profile_call(fn: Callable[[], object], device: torch.device, out_dir: Path | None = None,
                 tag: str = "call") -> Profile:
    """Run `fn` once under the profiler. With `out_dir`, also write `<tag>.trace.json` (chrome://tracing,
    Perfetto) and `<tag>.ops.txt` (torch's full operator table)."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync()
    with profile(activities=activities, acc_events=True) as prof:  # one cycle; keeps torch 2.11 quiet
        t0 = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - t0
    averages = prof.key_averages()
    if cuda:
        # kernels are their own entries; an operator's self device time is the kernels it launched itself
        busy_us = sum(e.self_device_time_total for e in averages if e.device_type == DeviceType.CUDA)
        ops = [(e.key, e.count, e.self_device_time_total) for e in averages
               if e.device_type == DeviceType.CPU and e.self_device_time_total > 0]
    else:
        busy_us = sum(e.self_cpu_time_total for e in averages)
        ops = [(e.key, e.count, e.self_cpu_time_total) for e in averages if e.self_cpu_time_total > 0]
    ops.sort(key=lambda r: -r[2])
    rows = [OpRow(name, calls, us / 1e6, us / busy_us if busy_us else 0.0) for name, calls, us in ops]
    if out_dir is not None:
        sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
        table = (averages.table(sort_by=sort_by, row_limit=60) + "\n").encode()
        _atomic_write(out_dir / f"{tag}.ops.txt", lambda f: f.write(table))  # also creates out_dir
        write_trace(prof, out_dir / f"{tag}.trace.json")
    return Profile(wall=wall, busy=busy_us / 1e6, ops=rows)


def write_trace(prof, path: Path) -> None:
    """The profiler's chrome trace at `path`, whole or not at all (torch writes it to a path, not a file
    object, so it goes into a temporary folder beside `path` first); a write error is one SSGError line."""
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
            prof.export_chrome_trace(os.path.join(tmp, path.name))
            os.replace(os.path.join(tmp, path.name), path)
    except OSError as e:
        raise SSGError(f"cannot write {path}: {e.strerror or e}") from e


def format_profile(p: Profile, device: torch.device, top: int = 12) -> str:
    """A markdown table of the `top` operators, headed by wall time and device-busy share."""
    what = "GPU kernels" if device.type == "cuda" else "CPU self time"
    lines = [f"wall {1e3 * p.wall:.1f} ms; {what} {1e3 * p.busy:.1f} ms"
             + (f" ({100 * p.busy / p.wall:.0f}% of wall: the rest is launch and host overhead)"
                if device.type == "cuda" and p.wall > 0 else ""),
             "", "| operator | calls | ms | share |", "|---|---:|---:|---:|"]
    for r in p.ops[:top]:
        lines.append(f"| {r.name} | {r.calls} | {1e3 * r.seconds:.2f} | {100 * r.share:.1f}% |")
    return "\n".join(lines)
