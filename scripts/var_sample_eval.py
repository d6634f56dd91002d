"""Evaluation sampling for FID / IS: N images per class as PNGs, then one `.npz` and a manifest.

    torchrun --nproc_per_node 8 scripts/var_sample_eval.py --model var-d16 --beta 0.5 --sample-dir samples/d16_b05
    python scripts/var_sample_eval.py ...            # one process works too

Image i has class `classes[i // num_per_class]` (all 1000 ImageNet classes by default)
and its own generator seeded with `image_seed(seed, i)`, so it depends only on
(seed, i, settings): never on the number of processes, the batch size or restarts.
Each image is written atomically as `{i:06d}.png`; existing files are skipped, so a
killed run resumes where it stopped. When all are there, rank 0 packs them into
`<sample-dir>.npz` (`arr_0`, uint8 NHWC, shuffled with a fixed seed; `index` holds the
PNG index of every row) for the standard ImageNet evaluator, and writes
`<sample-dir>/manifest.json` (every setting, checkpoint SHA-256, versions).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.errors import SSGError
from ssg_core.evaluation import (check_output_path, image_seed, init_distributed, pack_npz, pending, save_png, shard,
                                 to_uint8_hwc, versions, write_json)
from VAR import cli_args as C

MANIFEST = "manifest.json"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="VAR (+SSG) evaluation sampling: {index:06d}.png per image, then a shuffled .npz for the "
                    "standard FID/IS evaluator and a JSON manifest. Run with torchrun for several GPUs.")
    p.add_argument("--sample-dir", type=Path, required=True,
                   help="folder for the PNGs (created; finished images are skipped, so rerunning resumes)")
    p.add_argument("--num-per-class", type=int, default=50,
                   help="images per class (50 x 1000 classes = the usual 50,000)")
    p.add_argument("--classes", default=None,
                   help="comma-separated subset of class ids for small runs (default: every class of the model)")
    p.add_argument("--seed", type=int, default=0, help="global seed; image i uses image_seed(seed, i)")
    p.add_argument("--per-proc-batch-size", type=int, default=25,
                   help="images per forward pass on each process (does not change the images)")
    p.add_argument("--npz", type=Path, default=None, help="output .npz (default: <sample-dir>.npz)")
    p.add_argument("--shuffle-seed", type=int, default=0,
                   help="seed of the fixed shuffle of the .npz rows (split-based Inception Score must not see "
                        "the images in class order)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="debugging: stop after writing this many images on each process, without packing "
                        "(simulates a killed run; rerun without it to resume)")
    C.add_model_args(p)
    C.add_sampling_args(p)
    C.add_ssg_args(p, compare=False)
    return p


def run_settings(args: argparse.Namespace, choice: C.ModelChoice, classes: list[int], betas: list[float],
                 dtype: str, device: torch.device, arch: dict) -> dict:
    """Everything that decides the pixels of image i. A resumed run must have the same."""
    return {
        "model": choice.name, "architecture": arch, "classes": classes, "num_per_class": args.num_per_class,
        "num_images": len(classes) * args.num_per_class, "seed": args.seed, "seed_rule": "image_seed(seed, index)",
        "class_rule": "classes[index // num_per_class]", "cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p,
        "more_smooth": args.more_smooth, "dtype": dtype, "device_type": device.type,
        "ssg": C.ssg_settings(args, betas),
    }


def check_resumable(sample_dir: Path, settings: dict) -> None:
    """Refuse to mix images made with other settings into one folder."""
    path = sample_dir / MANIFEST
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())["settings"]
    except (ValueError, KeyError):
        raise SSGError(f"{path} is unreadable; delete it (or use a new --sample-dir)") from None
    fresh = json.loads(json.dumps(settings, default=str))  # same normalisation as the file (tuples -> lists)
    diff = [k for k in sorted(set(old) | set(fresh)) if old.get(k) != fresh.get(k)]
    if diff:
        raise SSGError(f"{sample_dir} holds images made with other settings ({', '.join(diff)} differ); "
                       f"use a new --sample-dir or the same settings")


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_per_class < 1 or args.per_proc_batch_size < 1:
        raise SSGError("--num-per-class and --per-proc-batch-size must be at least 1")
    check_output_path(args.sample_dir, "--sample-dir", folder=True)
    npz = args.npz if args.npz is not None else args.sample_dir.parent / (args.sample_dir.name + ".npz")
    check_output_path(npz, "--npz")
    if npz.resolve() == args.sample_dir.resolve():
        raise SSGError(f"--npz {npz} is the --sample-dir itself; give the .npz file its own name")
    C.check_sampling(args.cfg, args.top_k, args.top_p)
    choice = C.model_choice(args)
    device = C.pick_device(args.device)
    dtype = C.pick_dtype(args.dtype, device)
    C.make_ssg(args, len(choice.patch_nums) if choice.patch_nums else None)  # checks --beta early
    if choice.name != "demo" and args.classes is not None:
        C.parse_classes(args.classes, C.NUM_CLASSES)

    dist = init_distributed(args.device if args.device is not None else device.type)
    device = dist.device
    vae, var, info = C.load_var_models(args, choice, device)
    classes = (C.parse_classes(args.classes, var.num_classes) if args.classes is not None
               else list(range(var.num_classes)))
    ssg, betas = C.make_ssg(args, len(var.patch_nums), announce=True)
    arch = {k: v for k, v in info.items() if k != "checkpoints"}
    settings = run_settings(args, choice, classes, betas, dtype, device, arch)
    check_resumable(args.sample_dir, settings)
    dist.barrier()  # every rank has checked the old manifest before rank 0 rewrites it
    num = len(classes) * args.num_per_class
    if dist.is_main:
        write_json(args.sample_dir / MANIFEST, {"settings": settings, "complete": False})

    missing = set(pending(args.sample_dir, range(num)))  # one scan of the folder serves both
    already = num - len(missing)  # for the closing line
    todo = [i for i in shard(range(num), dist) if i in missing]
    if args.stop_after is not None:
        todo = todo[:max(0, args.stop_after)]
    bs = args.per_proc_batch_size
    # `with`: an error (a full disk) closes the bar first, so its one line stands on a line of its own
    with tqdm(total=len(todo), desc=f"sampling (rank 0 of {dist.world})", unit="img", disable=not dist.is_main) as bar:
        for start in range(0, len(todo), bs):
            idx = todo[start:start + bs]
            labels = torch.tensor([classes[i // args.num_per_class] for i in idx], dtype=torch.long, device=device)
            seeds = [image_seed(args.seed, i) for i in idx]
            with torch.inference_mode(), C.autocast(device, dtype):
                img = var.autoregressive_infer_cfg(len(idx), labels, g_seed=seeds, cfg=args.cfg, top_k=args.top_k,
                                                   top_p=args.top_p, more_smooth=args.more_smooth, ssg=ssg)
            for i, im in zip(idx, to_uint8_hwc(img.float())):
                save_png(args.sample_dir / f"{i:06d}.png", im)
            bar.update(len(idx))
    if args.stop_after is not None:
        print(f"rank {dist.rank}: stopped after {len(todo)} image(s) (--stop-after); rerun without it to resume")
        return 0

    dist.barrier()
    if dist.is_main:
        shape = pack_npz(args.sample_dir, num, npz, shuffle_seed=args.shuffle_seed)
        write_json(args.sample_dir / MANIFEST, {
            "settings": settings, "complete": True, "npz": str(npz), "npz_shape": list(shape),
            "shuffle_seed": args.shuffle_seed, "checkpoints": info["checkpoints"],
            "checkpoint_sha256": C.checkpoint_hashes(info), "versions": versions(),
            "last_run": {"world_size": dist.world, "per_proc_batch_size": bs,
                         "torch_threads": torch.get_num_threads(),
                         "argv": sys.argv[1:] if argv is None else list(argv)},
        })
        print(f"{num} images in {args.sample_dir} ({num - already} sampled now, {already} already there); wrote "
              f"{npz} {tuple(shape)} and {args.sample_dir / MANIFEST}")
    dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
