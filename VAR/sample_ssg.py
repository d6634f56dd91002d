"""Sample class-conditional images from VAR with SSG and save them as one PNG grid.

    python VAR/sample_ssg.py --model-depth 16 --classes 980,437,22,562 --seed 0 --beta 0.5 --out grid.png
    python VAR/sample_ssg.py --model-depth 16 --beta 0.5 --compare --out compare.png   # top: baseline, bottom: SSG
    python VAR/sample_ssg.py --model demo --compare --out demo.png   # offline demo; no --beta: its recommended setting

The batch is sampled the way upstream's notebook does it: one generator seeded with
`--seed` for the whole batch, so `--beta 0` reproduces upstream's images for the same
classes (in the same order), seed and settings. Checkpoints come from the Hugging Face
cache (`scripts/download.py` fetches them ahead; `HF_HUB_OFFLINE=1` is honoured), from
`--ckpt-dir`, or from explicit `--vae-ckpt/--var-ckpt` files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.errors import SSGError
from ssg_core.evaluation import check_output_path, save_grid
from VAR import cli_args as C


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Class-conditional VAR sampling with SSG (scaled spatial guidance); writes one PNG grid.")
    p.add_argument("--classes", default=None,
                   help=f"comma-separated class ids, one image each, in grid order (repeat an id for several "
                        f"images). Default: {C.DEFAULT_CLASSES} (ImageNet), 0,...,9 for --model demo")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the batch's generator (upstream's g_seed); same seed, classes and settings give "
                        "the same images")
    p.add_argument("--out", type=Path, default=Path("ssg_samples.png"), help="PNG file to write (atomically)")
    p.add_argument("--zoom", type=int, default=None,
                   help="enlarge every image N times (pixel repetition) in the grid, for viewing tiny images. "
                        "Default: 4 for --model demo (16 px digits), 1 otherwise")
    C.add_model_args(p)
    C.add_sampling_args(p)
    C.add_ssg_args(p, default_beta=None, beta_default_text=(
        "default 0.5, except --model demo: without --beta it samples the recommended demo setting "
        "(assets/demo/eval/recommended.json, chosen in docs/demo.md)"))
    return p


def fill_default_beta(args, choice_name: str) -> str | None:
    """Without --beta: 0.5, or for the demo the recommended setting (returned as a line to print).

    For the demo the recommendation is a whole schedule, so a --beta-schedule or guided-window flag without
    --beta is refused rather than silently combined with it."""
    if args.beta is not None:
        return None
    if choice_name != "demo":
        args.beta = "0.5"
        return None
    from VAR.demo import RECOMMENDED, load_recommended
    if args.beta_schedule != "constant" or args.beta_from_scale is not None or args.beta_last_scales is not None:
        raise SSGError("--model demo without --beta samples the recommended setting; give --beta too when you "
                       "choose --beta-schedule, --beta-from-scale or --beta-last-scales")
    rec = load_recommended()["ssg"]
    args.beta, args.beta_schedule = str(rec["beta"]), rec["schedule"]
    args.beta_from_scale, args.beta_last_scales = rec.get("from_scale"), rec.get("last_scales")
    _, betas = C.make_ssg(args, len(rec["betas"]))
    if betas != rec["betas"]:
        raise SSGError(f"{RECOMMENDED}: its beta/schedule give {betas}, not the recorded betas {rec['betas']}")
    where = Path(*RECOMMENDED.parts[-4:])  # assets/demo/eval/recommended.json
    return f"--model demo without --beta: the recommended setting from {where} ({rec['text']}); --beta overrides it"


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.zoom is not None and not 1 <= args.zoom <= 16:
        raise SSGError(f"--zoom must be between 1 and 16, got {args.zoom}")
    if args.out.suffix.lower() != ".png":
        raise SSGError(f"--out {args.out}: the grid is written as PNG; give a .png file name")
    check_output_path(args.out, "--out")
    C.check_sampling(args.cfg, args.top_k, args.top_p)
    # Everything checkable without the weights is checked first, so mistakes cost no loading time.
    choice = C.model_choice(args)
    device = C.pick_device(args.device)
    dtype = C.pick_dtype(args.dtype, device)
    num_scales = len(choice.patch_nums) if choice.patch_nums else None
    note = fill_default_beta(args, choice.name)
    C.make_ssg(args, num_scales)  # checks --beta early
    if choice.name != "demo":
        labels = C.parse_classes(args.classes or C.DEFAULT_CLASSES, C.NUM_CLASSES)

    vae, var, info = C.load_var_models(args, choice, device)
    if choice.name == "demo":
        labels = C.parse_classes(args.classes or ",".join(map(str, range(var.num_classes))), var.num_classes)
    if note:
        print(note)
    ssg, betas = C.make_ssg(args, len(var.patch_nums), announce=True)

    label_B = torch.tensor(labels, dtype=torch.long, device=device)
    B = len(labels)

    def sample(hook):
        with torch.inference_mode(), C.autocast(device, dtype):
            img = var.autoregressive_infer_cfg(B, label_B, g_seed=args.seed, cfg=args.cfg, top_k=args.top_k,
                                               top_p=args.top_p, more_smooth=args.more_smooth, ssg=hook)
        return img.float()  # (B, 3, H, W) in [0, 1]; autocast may return fp16

    rows = [sample(None)] if args.compare else []
    rows.append(sample(ssg))
    save_grid(args.out, torch.cat(rows), nrow=B, zoom=args.zoom or (4 if choice.name == "demo" else 1))
    what = "baseline (top) and SSG (bottom)" if args.compare else ("SSG" if ssg is not None else "baseline")
    print(f"wrote {args.out} ({what}: {B} image(s) per row, classes {labels}, seed {args.seed}, "
          f"beta {C.format_betas(betas)}, {rows[0].shape[-1]} px)")
    if choice.name == "demo":  # the shipped digits classifier says whether each image shows its class
        from VAR.demo import load_classifier
        clf = load_classifier("cpu")
        names = ["baseline", "SSG"] if args.compare else ["SSG" if ssg is not None else "baseline"]
        with torch.inference_mode():  # the classifier takes images in [-1, 1]
            hits = [int((clf(row.cpu() * 2 - 1).argmax(-1) == label_B.cpu()).sum()) for row in rows]
        print("recognised as the requested digit by the demo classifier: "
              + ", ".join(f"{n} {h}/{B}" for n, h in zip(names, hits)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
