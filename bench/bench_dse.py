"""DSE cost per scale pair: reference path vs fast path, and relative to a transformer matmul.

For every consecutive scale pair of VAR-256, VAR-512, HART-1024 and Infinity-1024 (1:1),
times the prior computation at batch 1 and 32 on each device, and divides by the time of
one transformer-sized matmul of the same batch (the FFN up-projection of that scale:
(B*h*w, width) @ (width, 4*width)), so the overhead reads as a ratio. Also times the
whole SSG computation (every scale: DSE + guidance + cache copy) of one VAR-d16 sample.

    python bench/bench_dse.py                      # CPU (and CUDA when present)
    python bench/bench_dse.py --devices cuda --batches 1 32 --models var256 var512 hart infinity

The reference path computes in float64 (it is the yardstick); the fast path in float32.
"""
from __future__ import annotations

import statistics
import time

import torch

from ssg_core import SSG, dse, dse_reference
from ssg_core.cli import ArgumentParser, main_guard, pick_device

MODELS = {  # name: (scale sides, channels of the logits, transformer width)
    "var256": ([1, 2, 3, 4, 5, 6, 8, 10, 13, 16], 4096, 1024),
    "var512": ([1, 2, 3, 4, 6, 9, 13, 18, 24, 32], 4096, 2304),
    "hart": ([1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64], 4096, 1536),
    "infinity": ([1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64], 64, 2048),
}


def timeit(fn, device: torch.device, min_time: float = 0.2, max_reps: int = 50) -> float:
    """Median seconds of fn() after a warm-up, synchronising CUDA around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@main_guard
def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--max-gb", type=float, default=None,
                    help="skip cases whose logits exceed this size (default 1.5 on CPU, no limit on CUDA)")
    ap.add_argument("--last", type=int, default=0, help="only the last N scale pairs of each model (0: all)")
    args = ap.parse_args(argv)
    devices = [pick_device(d) for d in args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])]

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| device | model | B | scale pair | reference (float64) ms | fast ms | speed-up | one FFN matmul ms "
          "| fast / matmul |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = []
    for device in devices:
        dev_name = str(device)
        max_gb = args.max_gb if args.max_gb is not None else (1.5 if device.type == "cpu" else float("inf"))
        for name in args.models:
            sides, C, width = MODELS[name]
            pairs = list(zip(sides[:-1], sides[1:]))
            if args.last:
                pairs = pairs[-args.last:]
            for B in args.batches:
                for p, n in pairs:
                    if B * n * n * C * 4 / 2**30 * 3 > max_gb:  # input + output + float64 reference
                        print(f"| {dev_name} | {name} | {B} | {p}->{n} | skipped (over --max-gb {max_gb}) | | | | |")
                        continue
                    x = torch.randn(B, p * p, C, device=device)
                    t_ref = timeit(lambda: dse_reference(x, (n, n)), device)
                    t_fast = timeit(lambda: dse(x, (n, n)), device)
                    a = torch.randn(B * n * n, width, device=device)
                    w = torch.randn(width, 4 * width, device=device)
                    t_mm = timeit(lambda: a @ w, device)
                    print(f"| {dev_name} | {name} | {B} | {p}->{n} | {t_ref * 1e3:.3f} | {t_fast * 1e3:.3f} "
                          f"| {t_ref / t_fast:.1f}x | {t_mm * 1e3:.3f} | {t_fast / t_mm:.3f} |", flush=True)

        # the whole SSG computation of one VAR-d16 batch-32 sample (all scales, as the sampler calls it)
        sides, C, _ = MODELS["var256"]
        B = 32 if device.type == "cuda" else min(32, max(args.batches))
        logits = [torch.randn(B, s * s, C, device=device) for s in sides]
        ssg = SSG(beta=0.5)

        def one_sample():
            ssg.reset(len(sides))
            for k, s in enumerate(sides):
                ssg(k, logits[k], (s, s))

        totals.append(f"{dev_name}: SSG total for one VAR-d16 sample at batch {B} (10 scales): "
                      f"{timeit(one_sample, device) * 1e3:.2f} ms")
    print()
    print("\n".join(totals))


if __name__ == "__main__":
    main()
