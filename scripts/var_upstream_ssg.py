"""Class-conditional sampling with SSG on your own FoundationVision/VAR checkout; writes one PNG grid.

    python scripts/var_upstream_ssg.py --upstream ~/src/VAR --model-depth 16 --classes 980,437,22,562 \
        --beta 0.5 --compare --out var_upstream_ssg.png          # top row: baseline, bottom row: SSG

Everything but the SSG hook is the checkout's code: the models come from its `models.build_vae_var` with the
arguments of upstream's demo notebook, the released weights (vae_ch160v4096z32.pth and var_d{depth}.pth from the
Hugging Face repo FoundationVision/var, cached; or --ckpt-dir, --vae-ckpt, --var-ckpt) are loaded strictly, and
the images are sampled by its own `VAR.autoregressive_infer_cfg` inside `ssg_core.integrations.enable_ssg`. With
--beta 0 the output is the checkout's own sampling. Needs `ssg_core` importable (`pip install ./packages/ssg-core`,
or run it from this repository) and the checkout's requirements; written against VAR 78b9539.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

import _upstream

_upstream.import_ssg_core()

from ssg_core.cli import (ArgumentParser, add_ssg_args, add_trust_pickle_arg, check_sampling, main_guard,  # noqa: E402
                          make_ssg, pick_device)
from ssg_core.errors import SSGError  # noqa: E402
from ssg_core.hub import load_state_dict, load_strict, resolve_file  # noqa: E402
from ssg_core.integrations import enable_ssg  # noqa: E402

PATCH_NUMS = {256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="SSG sampling with an unmodified FoundationVision/VAR checkout; writes a PNG grid.")
    p.add_argument("--upstream", type=Path, required=True,
                   help="root folder of your FoundationVision/VAR checkout (the one holding models/ and dist.py)")
    p.add_argument("--model-depth", type=int, default=16,
                   help="VAR depth: 16, 20, 24, 30 (256 px) or 36 (512 px, shared AdaLN) for the released models; "
                        "any depth with --var-ckpt")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="folder with vae_ch160v4096z32.pth and var_d{depth}.pth (downloaded into it when missing). "
                        "Default: the Hugging Face cache; HF_HUB_OFFLINE=1 forbids downloads")
    p.add_argument("--vae-ckpt", type=Path, default=None, help="explicit VQVAE weight file (its channel width is read "
                                                               "from the file)")
    p.add_argument("--var-ckpt", type=Path, default=None, help="explicit VAR weight file of depth --model-depth")
    p.add_argument("--classes", default="980,437,22,562", help="comma-separated ImageNet class ids, one image each")
    p.add_argument("--seed", type=int, default=0, help="g_seed of the batch (upstream re-seeds its generator with it)")
    p.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance at the last scale")
    p.add_argument("--top-k", type=int, default=900, help="top-k filter (0: off)")
    p.add_argument("--top-p", type=float, default=0.96, help="top-p filter (0: off)")
    p.add_argument("--more-smooth", action=argparse.BooleanOptionalAction, default=False,
                   help="upstream's Gumbel-softmax smoothing (for viewing, not for FID)")
    p.add_argument("--device", default=None, help="torch device. Default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="autocast precision on CUDA (upstream's notebook: fp16). Default: fp16 on CUDA, fp32 on CPU")
    _upstream.add_grid_args(p, "var_upstream_ssg.png")
    add_trust_pickle_arg(p)
    add_ssg_args(p)
    return p


def parse_classes(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SSGError(f"--classes: expected comma-separated integers, got {text!r}") from None
    if not ids or any(not 0 <= i < 1000 for i in ids):
        raise SSGError(f"--classes: ImageNet class ids between 0 and 999, got {text!r}")
    return ids


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _upstream.check_grid_args(args)
    check_sampling(args.cfg, args.top_k, args.top_p)
    if args.model_depth < 1:
        raise SSGError(f"--model-depth must be positive, got {args.model_depth}")
    labels = parse_classes(args.classes)
    device = pick_device(args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    if dtype is not None and device.type != "cuda":
        raise SSGError(f"--dtype {args.dtype}: autocast is for CUDA; use --dtype fp32 on {device.type}")
    patch_nums = PATCH_NUMS[512 if args.model_depth == 36 else 256]
    ssg, betas = make_ssg(args, len(patch_nums))   # None when every beta is 0: the checkout's own sampling

    models = _upstream.use_checkout(args.upstream, "models", "models/var.py", "FoundationVision/VAR (78b9539)")
    name = f"var-d{args.model_depth}"
    vae_path = args.vae_ckpt or resolve_file("FoundationVision/var", "vae_ch160v4096z32.pth", args.ckpt_dir, name)
    var_path = args.var_ckpt or resolve_file("FoundationVision/var", f"var_d{args.model_depth}.pth", args.ckpt_dir, name)
    vae_sd = load_state_dict(vae_path, trust_pickle=args.trust_pickle)
    var_sd = load_state_dict(var_path, trust_pickle=args.trust_pickle)
    ch = int(vae_sd["encoder.conv_in.weight"].shape[0]) if "encoder.conv_in.weight" in vae_sd else 160
    vae, var = models.build_vae_var(V=4096, Cvae=32, ch=ch, share_quant_resi=4, device=device, patch_nums=patch_nums,
                                    num_classes=1000, depth=args.model_depth, shared_aln=args.model_depth == 36)
    load_strict(vae, vae_sd, f"VQVAE checkpoint {vae_path}")
    load_strict(var, var_sd, f"VAR checkpoint {var_path} (depth {args.model_depth})")
    vae.eval().requires_grad_(False)   # the builder returns the VAR in train mode; the notebook switches to eval
    var.eval().requires_grad_(False)

    label_B = torch.tensor(labels, dtype=torch.long, device=device)

    def sample(hook) -> torch.Tensor:
        with torch.inference_mode(), _upstream.autocast(device, dtype), \
                (enable_ssg(var, hook) if hook is not None else contextlib.nullcontext()):
            img = var.autoregressive_infer_cfg(len(labels), label_B, g_seed=args.seed, cfg=args.cfg, top_k=args.top_k,
                                               top_p=args.top_p, more_smooth=args.more_smooth)
        return img.float()   # (B, 3, H, W) in [0, 1]

    what = _upstream.save_comparison(args.out, sample, ssg, args.compare, nrow=len(labels), zoom=args.zoom)
    print(f"wrote {args.out} ({what}, upstream {models.__file__}: classes {labels}, seed {args.seed}, beta {betas})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
