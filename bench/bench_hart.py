"""Benchmark HART sampling with and without SSG on random weights of a given shape.

Times one `autoregressive_infer_cfg` call (transformer over all scales, residual diffusion, tokenizer
decoding; the text encoder is excluded: its output is a random (B, 300, 1536) tensor) for each batch
size, with SSG off (beta 0) and on (beta 0.5 on every scale >= 1), interleaved, median of --steps.

    python bench/bench_hart.py                                  # GPU: 0.7B shapes, 1024 px, bf16, batch 1 and 4
    python bench/bench_hart.py --preset tiny-256 --device cpu --dtype fp32 --steps 3   # CPU smoke numbers
"""
from __future__ import annotations

import statistics
import time

import torch

from ssg_core import SSG
from ssg_core.cli import ArgumentParser, main_guard, pick_device
from ssg_core.errors import SSGError

from hart.modules.models.autoencoder import HARTAutoEncoder, HARTAutoEncoderWithDiscConfig
from hart.modules.models.transformer import HARTForT2I, HARTForT2IConfig
from ssg_timer import TimedSSG  # bench/ is on sys.path when run as a script

PN_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
PN_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
# 0.7B: width 1536, depth 16, SwiGLU 4096, diffusion MLP 1024 x 6 (spec sec. 1.4); heads 24 is a guess (no effect on size)
HART_07B = dict(context_token=300, context_dim=1536, embed_dim=1536, depth=16, num_heads=24, mlp_ratio=4.0,
                attn_type="llama", mlp_type="llama", diff_width=1024, diff_depth=6, num_sampling_steps="8")
VAE_REL = dict(vocab_size=4096, z_channels=32, ch=160, ch_mult=(1, 1, 2, 2, 4), quantizer_type="var_hybrid")
PRESETS = {
    "0.7b-1024": (HART_07B | {"patch_nums": PN_1024}, VAE_REL | {"v_patch_nums": PN_1024}),
    "0.7b-256": (HART_07B | {"patch_nums": PN_256}, VAE_REL | {"v_patch_nums": PN_256}),
    "tiny-256": (dict(context_token=300, context_dim=1536, embed_dim=64, depth=2, num_heads=4, attn_type="llama",
                      mlp_type="llama", diff_width=64, diff_depth=2, num_sampling_steps="8", patch_nums=PN_256),
                 dict(vocab_size=4096, z_channels=32, ch=32, ch_mult=(1, 1, 1, 1, 1), quantizer_type="var_hybrid",
                      v_patch_nums=PN_256)),
}


def build(preset: str, device: torch.device) -> HARTForT2I:
    llm_cfg, vae_cfg = PRESETS[preset]
    torch.manual_seed(0)
    vae = HARTAutoEncoder(HARTAutoEncoderWithDiscConfig(**vae_cfg))
    model = HARTForT2I(HARTForT2IConfig(**llm_cfg), vae=vae)
    return model.eval().requires_grad_(False).to(device).vae_to(device)


def time_call(model: HARTForT2I, B: int, ssg: SSG | None, dtype, device: torch.device) -> float:
    T, D = model.context_token, model.config.context_dim
    ctx = torch.randn(B, T, D, device=device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[:, 20:] = False
    pos = mask.long().cumsum(1) - 1
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast:
        model.autoregressive_infer_cfg(B, ctx, g_seed=0, cfg=4.5, more_smooth=False, context_position_ids=pos,
                                       context_mask=mask, ssg=ssg)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@main_guard
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="0.7b-1024", choices=sorted(PRESETS), help="model shape and resolution")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (prompts per call)")
    p.add_argument("--dtype", default="bf16", choices=("fp32", "fp16", "bf16"), help="autocast dtype")
    p.add_argument("--beta", type=float, default=0.5, help="SSG beta of the 'with SSG' runs")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per setting first")
    p.add_argument("--steps", type=int, default=5, help="timed calls per setting (median reported)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.json:
        from ssg_core.evaluation import check_output_path
        check_output_path(args.json, "--json")  # now, not after the benchmark
    device = pick_device(args.device)
    if args.steps < 1 or args.warmup < 0:
        raise SSGError("--steps must be >= 1 and --warmup >= 0")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    model = build(args.preset, device)
    n_params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    side = model.patch_nums[-1] * model.vae_proxy[0].downsample
    print(f"HART {args.preset}: {n_params / 1e6:.1f} M transformer parameters, {side} px, {args.dtype}, {where}")
    rows = []
    for B in args.batches:
        ssg = TimedSSG(SSG(beta=args.beta), device)
        for _ in range(args.warmup):
            time_call(model, B, None, dtype, device)
            time_call(model, B, ssg, dtype, device)
        base, guided, inside = [], [], []
        for _ in range(args.steps):  # interleaved, so drift hits both alike
            base.append(time_call(model, B, None, dtype, device))
            ssg.total = 0.0
            guided.append(time_call(model, B, ssg, dtype, device))
            inside.append(ssg.total)
        b, g, i = statistics.median(base), statistics.median(guided), statistics.median(inside)
        rows.append({"batch": B, "baseline_s": b, "ssg_s": g, "overhead_pct": 100 * (g - b) / b,
                     "inside_ssg_s": i, "inside_pct": 100 * i / g})
    print("\n| batch | without SSG (s/call) | with SSG (s/call) | end-to-end SSG overhead | time inside SSG hook |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['baseline_s']:.3f} | {r['ssg_s']:.3f} | {r['overhead_pct']:+.1f}% "
              f"| {1e3 * r['inside_ssg_s']:.1f} ms ({r['inside_pct']:.2f}%) |")
    if args.json:
        from ssg_core.evaluation import versions, write_json
        write_json(args.json, {"preset": args.preset, "dtype": args.dtype, "device": where, "params": n_params,
                               "beta": args.beta, "steps": args.steps, "rows": rows, "versions": versions()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
