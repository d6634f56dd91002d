"""Throughput of Infinity sampling with and without SSG (random weights, 2B shape by default).

    python bench/bench_infinity.py                              # GPU: 2B shape, 1024 px, bf16, batch 1 and 4
    python bench/bench_infinity.py --device cpu --depth 2 --pn 0.06M --vae_base_ch 32 --steps 3   # CPU smoke run

What is timed: one `autoregressive_infer_cfg` call (transformer over all scales with CFG,
sampling, VAE decode unless --no-decode), for B prompts, after warm-up. The T5 text encoder
is not included (random text features of --text_len tokens stand in for it), nor PNG writing.
Upstream reports 0.8 s per 1024x1024 image for Infinity-2B (GPU not stated). Runs with and
without SSG are interleaved and the median is reported; the end-to-end difference is
(median_ssg - median_plain) / median_plain, and since that is within noise on a busy machine,
the time spent inside the SSG hook itself (DSE prior + guidance + cache copy, synchronised)
is also reported as a share of the plain call.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ssg_core import SSG
from ssg_core.cli import ArgumentParser, main_guard, pick_device
from ssg_core.errors import SSGError
from ssg_core.evaluation import check_output_path, versions, write_json
from Infinity.infinity.models.bsq_vae.vae import vae_model
from Infinity.infinity.models.infinity import Infinity
from Infinity.infinity.utils.dynamic_resolution import get_scale_schedule
from Infinity.tools.run_infinity import MODEL_ARCHS
from ssg_timer import TimedSSG  # bench/ is on sys.path when run as a script


def build(args, device: torch.device) -> tuple[Infinity, torch.nn.Module]:
    arch = dict(MODEL_ARCHS[args.model_type])
    if args.depth:
        if args.depth < 2:
            raise SSGError("--depth must be at least 2 (upstream's loop needs block_chunks >= 2)")
        arch['depth'] = args.depth
        arch['block_chunks'] = max([c for c in range(2, arch['block_chunks'] + 1) if args.depth % c == 0] or [args.depth])
    if args.embed_dim:
        arch['embed_dim'], arch['num_heads'] = args.embed_dim, args.embed_dim // 64
    d = 14 if args.model_type == 'infinity_8b' else (16 if args.model_type == 'infinity_layer12' else 32)
    patchify = int(args.model_type == 'infinity_8b')
    ch_mult = [1, 2, 4, 4] if patchify else [1, 2, 4, 4, 4]
    torch.manual_seed(0)
    vae = vae_model({}, 'dynamic', d, 2 ** d, patch_size=8 if patchify else 16, encoder_ch_mult=ch_mult,
                    decoder_ch_mult=ch_mult, base_ch=args.vae_base_ch).to(device)
    with torch.device(device):
        model = Infinity(vae, text_channels=2048, text_maxlen=512, shared_aln=True, fused_norm=True,
                         pad_to_multiplier=128, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                         rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, apply_spatial_patchify=patchify,
                         inference_mode=True, mlp_ratio=4, drop_path_rate=0.1, **arch)
    model = model.eval().requires_grad_(False)
    if args.bf16 and device.type == 'cuda':
        for b in model.unregistered_blocks:
            b.bfloat16()
    return model, vae


def text(B: int, n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    kv = (torch.randn(B * n, 2048, generator=g) * 0.25).to(device)
    return kv, [n] * B, torch.arange(0, (B + 1) * n, n, dtype=torch.int32), n


def time_call(model, vae, sched, label, B, ssg, args, device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda' and bool(args.bf16)):
        model.autoregressive_infer_cfg(vae=vae, scale_schedule=sched, label_B_or_BLT=label, B=B, g_seed=0,
                                       cfg_list=[args.cfg] * len(sched), tau_list=[args.tau] * len(sched),
                                       top_k=900, top_p=0.97, returns_vemb=1, cfg_insertion_layer=[0],
                                       vae_type=vae.codebook_dim, ret_img=args.decode, ssg=ssg)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@main_guard
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model_type', default='infinity_2b', choices=list(MODEL_ARCHS), help="transformer shape")
    p.add_argument('--depth', type=int, default=0, help="fewer blocks than the real model (0 = real depth), for CPU smoke runs")
    p.add_argument('--embed_dim', type=int, default=0,
                   help="narrower transformer (0 = real width; heads of 64), only for quick smoke tests")
    p.add_argument('--pn', default='1M', choices=['0.06M', '0.25M', '0.60M', '1M'], help="resolution key (1M = 1024 px)")
    p.add_argument('--h_div_w', type=float, default=1.0, help="aspect-ratio template")
    p.add_argument('--batches', type=int, nargs='+', default=[1, 4], help="batch sizes (prompts per call)")
    p.add_argument('--beta', type=float, default=0.5, help="SSG strength for the 'on' runs")
    p.add_argument('--cfg', type=float, default=4.0, help="CFG scale")
    p.add_argument('--tau', type=float, default=0.5, help="temperature")
    p.add_argument('--text_len', type=int, default=30, help="text tokens per prompt (random features)")
    p.add_argument('--steps', type=int, default=5, help="timed calls per setting (median reported)")
    p.add_argument('--warmup', type=int, default=1, help="untimed calls per setting first (kernels, DSE operators)")
    p.add_argument('--vae_base_ch', type=int, default=128, help="VAE width (128 = the released VAEs)")
    p.add_argument('--decode', action=argparse.BooleanOptionalAction, default=True, help="include the VAE decode")
    p.add_argument('--bf16', type=int, default=1, help="1: blocks in bf16 + autocast on GPU (upstream); ignored on CPU")
    p.add_argument('--device', default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument('--threads', type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument('--json', default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.json:
        check_output_path(args.json, '--json')  # now, not after the benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.steps < 1 or args.warmup < 0:
        raise SSGError("--steps must be >= 1 and --warmup >= 0")
    model, vae = build(args, device)
    sched = get_scale_schedule(args.h_div_w, args.pn)
    n_params = sum(p.numel() for p in model.parameters())
    rows = []
    for B in args.batches:
        label = text(B, args.text_len, device)
        ssg = SSG(beta=args.beta)
        for _ in range(args.warmup):                            # kernels, caches, DSE operators
            for s in (None, ssg):
                time_call(model, vae, sched, label, B, s, args, device)
        plain, guided = [], []
        for _ in range(args.steps):                              # interleaved: drifts hit both alike
            plain.append(time_call(model, vae, sched, label, B, None, args, device))
            guided.append(time_call(model, vae, sched, label, B, ssg, args, device))
        timed = TimedSSG(ssg, device)                           # time inside the hook itself (robust to noise)
        hook = []
        for _ in range(max(1, args.steps // 2)):
            timed.total = 0.0
            time_call(model, vae, sched, label, B, timed, args, device)
            hook.append(timed.total)
        mp, mg, mh = statistics.median(plain), statistics.median(guided), statistics.median(hook)
        rows.append(dict(batch=B, plain_s=mp, ssg_s=mg, plain_s_per_image=mp / B, ssg_s_per_image=mg / B,
                         overhead_pct=100 * (mg - mp) / mp, hook_s=mh, hook_pct=100 * mh / mp,
                         plain_all=plain, ssg_all=guided, hook_all=hook))
    px = sched[-1][1] * 16, sched[-1][2] * 16
    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\nInfinity {args.model_type} shape, depth {model.depth}, {n_params / 1e9:.3f} B params, {px[0]}x{px[1]} px, "
          f"{'bf16 blocks' if device.type == 'cuda' and args.bf16 else 'fp32'}, decode {args.decode}, device {dev_name}")
    print("| batch | plain s/call | SSG s/call | plain s/image | SSG s/image | end-to-end difference | "
          "time inside SSG hook (share of plain) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['plain_s']:.3f} | {r['ssg_s']:.3f} | {r['plain_s_per_image']:.3f} | "
              f"{r['ssg_s_per_image']:.3f} | {r['overhead_pct']:+.2f} % | {r['hook_s']:.4f} s ({r['hook_pct']:.2f} %) |")
    print("upstream reports 0.8 s per 1024x1024 image for Infinity-2B (GPU not stated)")
    if args.json:
        write_json(Path(args.json), dict(args=vars(args), device=dev_name, n_params=n_params, image_px=px, rows=rows,
                                        versions=versions()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
