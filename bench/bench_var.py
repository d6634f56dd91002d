"""VAR sampling speed: images/s for d16 / d30, batch 1/16/64, fp32 and bf16, with and without SSG.

Random weights of the official shapes (the VQVAE re-initialised sanely by `build_vae_var`, so
nothing overflows); upstream's evaluation settings (cfg 1.5, top-k 900, top-p 0.96, no
more_smooth); the VQVAE decode is included. Every configuration is timed in the same run, so
the ratios (SSG on / off, bf16 / fp32) compare like with like.

    python bench/bench_var.py                                   # GPU: d16 d30, B 1 16 64, fp32 + bf16
    python bench/bench_var.py --device cpu --depths 16 --batches 1 4 --dtypes fp32 --steps 1
    python bench/bench_var.py --profile prof/                   # also: where one call's time goes, by operator

bf16 runs under `torch.autocast` (as upstream's notebooks do with fp16); fp32 runs are the exact
path that reproduces upstream's tokens. `--compile` additionally compiles the blocks' MLPs with
`torch.compile` for the bf16 runs only (fp32 results stay untouched).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from functools import partial
from pathlib import Path

import torch

import VAR.models as models
from ssg_core import SSG
from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.evaluation import check_output_path
from profile_ops import format_profile, profile_call  # bench/ is on sys.path when run as a script
from ssg_timer import TimedSSG

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def sample_call(var, labels: torch.Tensor, dtype, ssg, args, seed: int = 0) -> torch.Tensor:
    """One sampling call as the benchmark runs it: upstream's FID settings, decode included."""
    amp = torch.autocast(labels.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        return var.autoregressive_infer_cfg(len(labels), labels, g_seed=seed, cfg=args.cfg, top_k=args.top_k,
                                            top_p=args.top_p, more_smooth=False, ssg=ssg)


def time_sampling(var, B: int, dtype, ssg_beta: float, device: torch.device, steps: int, warmup: int,
                  args) -> tuple[float, float, float]:
    """Median seconds of one `autoregressive_infer_cfg` call of batch B (decode included), without and
    with SSG, and the seconds spent inside the SSG hook. The two are timed alternately, call by call, so that drifting machine load hits both alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    labels = torch.arange(B, device=device) % 1000
    times: dict[bool, list[float]] = {False: [], True: []}
    inside: list[float] = []  # seconds spent inside the SSG hook per call
    for step in range(warmup + steps):
        for with_ssg in (False, True):
            ssg = TimedSSG(SSG(beta=ssg_beta), device) if with_ssg else None
            sync()
            t0 = time.perf_counter()
            img = sample_call(var, labels, dtype, ssg, args, seed=step)
            sync()
            if step >= warmup:
                times[with_ssg].append(time.perf_counter() - t0)
                if with_ssg:
                    inside.append(ssg.total)
            if not torch.isfinite(img.float()).all():
                raise RuntimeError(f"non-finite image (B={B}, dtype={dtype})")
    return statistics.median(times[False]), statistics.median(times[True]), statistics.median(inside)


def set_compiled(var, on: bool, cache: dict) -> None:
    """Swap compiled MLP forwards in (bf16 runs) or out (fp32 runs); state-dict keys are unchanged."""
    for i, block in enumerate(var.blocks):
        if on:
            if i not in cache:
                cache[i] = torch.compile(block.ffn.forward, dynamic=True)
            block.ffn.forward = cache[i]
        elif "forward" in block.ffn.__dict__:
            del block.ffn.forward


@main_guard
def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="torch device to run on (default: cuda when available, else cpu)")
    ap.add_argument("--depths", nargs="+", type=int, default=[16, 30],
                    help="VAR depths to build with the official shapes (36 uses the 512-px schedule)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64], help="batch sizes")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES),
                    help="fp32 (exact path) and/or bf16 (autocast)")
    ap.add_argument("--steps", type=int, default=3, help="timed sampling calls per configuration (median reported)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed calls before timing each configuration (one B=1 call per model and dtype is always made)")
    ap.add_argument("--beta", type=float, default=0.5, help="SSG beta of the 'with SSG' runs (constant, scales >= 1)")
    ap.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance (upstream's FID setting)")
    ap.add_argument("--top-k", type=int, default=900, help="top-k filter (upstream's FID setting)")
    ap.add_argument("--top-p", type=float, default=0.96, help="top-p filter (upstream's FID setting)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                    help="torch.compile the blocks' MLPs for the bf16 runs (experimental)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    ap.add_argument("--vae-ch", type=int, default=160,
                    help="VQVAE base width (160 = the released VAE; smaller only for quick smoke runs)")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="after timing, profile one SSG call per depth and dtype at the largest batch: print the "
                         "top operators and write a chrome trace and torch's operator table into DIR")
    args = ap.parse_args(argv)
    if args.profile is not None:
        check_output_path(args.profile, "--profile", folder=True)  # now, not after the benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the exact path
        torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"VAR sampling speed on {name}, torch {torch.__version__}; cfg {args.cfg}, top-k {args.top_k}, "
          f"top-p {args.top_p}, decode included; median of {args.steps} call(s) after {args.warmup} warm-up")

    rows, profiles = [], []
    for depth in args.depths:
        t0 = time.perf_counter()
        _, var = models.build_vae_var(device, depth=depth, ch=args.vae_ch, flash_if_available=False,
                                      fused_if_available=False, **models.official_config(depth))
        print(f"built d{depth} in {time.perf_counter() - t0:.1f} s")
        compiled: dict = {}
        for dname in args.dtypes:  # one untimed call per dtype: first-call costs stay out of every timing
            set_compiled(var, args.compile and DTYPES[dname] is not None, compiled)
            time_sampling(var, 1, DTYPES[dname], args.beta, device, 1, 0, args)
        for B in args.batches:
            for dname in args.dtypes:
                dtype = DTYPES[dname]
                set_compiled(var, args.compile and dtype is not None, compiled)
                t_plain, t_ssg, t_in = time_sampling(var, B, dtype, args.beta, device, args.steps, args.warmup, args)
                rows.append((depth, B, dname, t_plain, t_ssg, t_in))
                print(f"  d{depth} B={B:<3} {dname}: {t_plain:8.3f} s/call plain, {t_ssg:8.3f} s/call SSG "
                      f"({1e3 * t_in:.1f} ms inside the SSG hook)", flush=True)
        if args.profile is not None:
            B = max(args.batches)
            for dname in args.dtypes:
                set_compiled(var, args.compile and DTYPES[dname] is not None, compiled)
                tag = f"var_d{depth}_B{B}_{dname}"
                labels = torch.arange(B, device=device) % 1000
                prof = profile_call(partial(sample_call, var, labels, DTYPES[dname], SSG(beta=args.beta), args),
                                    device, args.profile, tag)
                profiles.append((tag, prof))
        set_compiled(var, False, compiled)
        del var
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for tag, prof in profiles:  # before the speed table, so that the table stays the last thing printed
        print(f"\nprofile of one SSG call, {tag} (trace and full table in {args.profile}):")
        print(format_profile(prof, device))
    fp32 = {(d, b): tp for d, b, dn, tp, _, _ in rows if dn == "fp32"}
    print()
    print("| model | B | dtype | s / call | img/s | img/s with SSG | end-to-end SSG overhead | time inside SSG hook "
          "| speed-up vs fp32 |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for d, b, dn, tp, ts, ti in rows:
        speedup = f"{fp32[(d, b)] / tp:.2f}x" if (d, b) in fp32 else "-"
        print(f"| d{d} | {b} | {dn} | {tp:.3f} | {b / tp:.4g} | {b / ts:.4g} | {100 * (ts - tp) / tp:+.1f}% "
              f"| {1e3 * ti:.1f} ms ({100 * ti / ts:.2f}%) | {speedup} |")


if __name__ == "__main__":
    main()
