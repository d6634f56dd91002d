"""The paper's two analysis figures for any of our VAR models (the demo, or official checkpoints).

    python scripts/ssg_spectra.py --model demo --out assets/demo/figures
    python scripts/ssg_spectra.py --model var-d16 --ckpt-dir ckpts --real imagenet_ref.npz --num 64

Baseline and SSG are sampled with the same labels and the same per-image seeds.

(a) `logit_spectra.png`, per step k -> k+1 (the last `--transitions` steps), two rows:
    top: SSG minus baseline, mean +- 1 std over samples, of the logits' log-magnitude spectrum
         at scale k+1 (FFT, mean over vocabulary channels, integer radial bins in cycles per map);
    bottom: the change of that spectrum from step k to step k+1, with and without SSG, on the
         bins both grids hold; spectra are divided by h*w first so that a smooth field has the
         same amplitude on both grids.
    The red dashed line is the Nyquist frequency floor(p_k/2) of the coarser scale: everything
    to its right is new at step k+1. The logits are the ones that are sampled from (after CFG
    and SSG, before top-k/top-p).
(b) `image_spectrum_ratio.png`: radially averaged FFT amplitude of the generated images (grey
    level) divided by that of real images, without and with SSG; 1 = the data's spectrum.
    Real images: the digits for the demo; for other models `--real` (an .npz with `arr_0`
    uint8 NHWC, e.g. the standard reference batch, or a folder of images), else (b) is skipped.
`spectra.json` holds every curve.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssg_core.cli import ArgumentParser, add_ssg_args, format_betas, main_guard, make_ssg, ssg_settings
from ssg_core.errors import SSGError
from ssg_core.evaluation import _atomic_write, check_output_path, image_seed, write_json


class SpectrumRecorder:
    """`on_logits` callback: keeps the (B, R_k) log spectrum of each scale's logits (not the logits)."""

    def __init__(self):
        self.per_scale: dict[int, list[torch.Tensor]] = {}

    def __call__(self, k: int, logits: torch.Tensor, size: tuple[int, int]) -> None:
        from ssg_core.spectral import logit_spectrum
        h, w = size
        spec = logit_spectrum(logits.float(), size) - math.log(h * w)  # / (h*w): amplitude per unit mean
        self.per_scale.setdefault(k, []).append(spec.cpu())

    def stacked(self) -> list[torch.Tensor]:
        return [torch.cat(self.per_scale[k]) for k in sorted(self.per_scale)]


@torch.no_grad()
def sample_with_spectra(var, labels: torch.Tensor, seed: int, ssg, cfg: float, top_k: int, top_p: float,
                        batch_size: int, progress: bool, desc: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images (N, 3, H, W) in [0, 1] and per-scale log spectra [(N, R_k)] of the sampled logits."""
    from VAR.demo import LogitsHook
    rec = SpectrumRecorder()
    hook = LogitsHook(ssg=ssg, on_logits=rec)
    images = []
    for i in tqdm(range(0, len(labels), batch_size), desc=desc, disable=not progress):
        lab = labels[i:i + batch_size].to(var.lvl_1L.device)
        seeds = [image_seed(seed, j) for j in range(i, i + len(lab))]
        images.append(var.autoregressive_infer_cfg(len(lab), lab, g_seed=seeds, cfg=cfg, top_k=top_k, top_p=top_p,
                                                   more_smooth=False, ssg=hook).float().cpu())
    return torch.cat(images), rec.stacked()


def logit_curves(base: list[torch.Tensor], ssg: list[torch.Tensor], patch_nums, transitions: list[int]) -> list[dict]:
    """Per transition k -> k+1: SSG - baseline at scale k+1, and the step change for each run."""
    out = []
    for k in transitions:
        diff = ssg[k + 1] - base[k + 1]  # (N, R_{k+1})
        R = base[k].shape[1]
        step_b = base[k + 1][:, :R] - base[k]
        step_s = ssg[k + 1][:, :R] - ssg[k]
        out.append({"k": k, "p_k": patch_nums[k], "p_next": patch_nums[k + 1], "nyquist_k": patch_nums[k] // 2,
                    "diff_mean": diff.mean(0).tolist(), "diff_std": diff.std(0).tolist(),
                    "step_base_mean": step_b.mean(0).tolist(), "step_base_std": step_b.std(0).tolist(),
                    "step_ssg_mean": step_s.mean(0).tolist(), "step_ssg_std": step_s.std(0).tolist()})
    return out


def _band(ax, x, mean, std, color, label):
    mean, std = np.asarray(mean), np.asarray(std)
    ax.plot(x, mean, color=color, marker="o", ms=3, label=label)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)


def plot_logits(path: Path, curves: list[dict], title: str, beta_text: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(curves)
    fig, axes = plt.subplots(2, n, figsize=(3.4 * n, 6.2), squeeze=False)
    for j, c in enumerate(curves):
        top, bottom = axes[0, j], axes[1, j]
        x = np.arange(len(c["diff_mean"]))
        _band(top, x, c["diff_mean"], c["diff_std"], "tab:blue", "Mean diff. (SSG - base) ± 1 std")
        top.axhline(0, color="tab:green", lw=0.8)
        top.set_title(f"step {c['k']} → {c['k'] + 1} ({c['p_k']}→{c['p_next']})")
        xs = np.arange(len(c["step_base_mean"]))
        _band(bottom, xs, c["step_base_mean"], c["step_base_std"], "tab:blue", "without SSG")
        _band(bottom, xs, c["step_ssg_mean"], c["step_ssg_std"], "tab:orange", "with SSG")
        bottom.axhline(0, color="tab:green", lw=0.8)
        for ax in (top, bottom):
            ax.axvline(c["nyquist_k"], color="red", ls="--", lw=1, label=f"Nyquist (p_k={c['p_k']})")
            ax.set_xlabel("radial bin (cycles per map)")
            ax.grid(alpha=0.3)
        if j == 0:
            top.set_ylabel("Δ log magnitude at k+1\n(SSG − baseline)")
            bottom.set_ylabel("Δ log magnitude, step k → k+1")
        if j == n - 1:
            top.legend(fontsize=7)
            bottom.legend(fontsize=7)
    fig.suptitle(f"{title}: logit spectra, SSG {beta_text} vs baseline")
    fig.tight_layout()
    _save(fig, path)


def plot_images(path: Path, freqs: np.ndarray, ratio_base: np.ndarray, ratio_ssg: np.ndarray, title: str,
                beta_text: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.axhline(1.0, color="0.2", ls="--", label="Dataset (reference)")
    ax.plot(freqs, ratio_base, color="tab:blue", marker="o", ms=3, label="Without SSG")
    ax.plot(freqs, ratio_ssg, color="tab:orange", marker="o", ms=3, label=f"With SSG ({beta_text})")
    ax.set_xscale("log")
    ax.set_xlabel("spatial frequency (cycles per image)")
    ax.set_ylabel("spectral amplitude ratio (to dataset)")
    ax.set_title(f"{title}: image spectra")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    try:
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


def load_real_images(path: Path, size: int, limit: int) -> torch.Tensor:
    """Real images (N, 3, size, size) in [0, 1] from an .npz (`arr_0`, uint8 NHWC) or an image folder."""
    import torch.nn.functional as F
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as z:
            if "arr_0" not in z:
                raise SSGError(f"--real {path}: no 'arr_0' array in the .npz")
            arr = z["arr_0"][:limit]
    elif path.is_dir():
        from PIL import Image
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:limit]
        if not files:
            raise SSGError(f"--real {path}: no .png/.jpg/.webp images in the folder")
        arr = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC)) for f in files])
    else:
        raise SSGError(f"--real {path}: expected an .npz file or a folder of images")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise SSGError(f"--real {path}: expected images (N, H, W, 3), got shape {arr.shape}")
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return x


def build_parser() -> argparse.ArgumentParser:
    from VAR import cli_args as C
    p = ArgumentParser(description="SSG analysis figures: logit spectra per step and image-spectrum ratio.")
    C.add_model_args(p)
    C.add_sampling_args(p)
    add_ssg_args(p, compare=False)
    g = p.add_argument_group("analysis")
    g.add_argument("--num", type=int, default=200,
                   help="images per run (baseline and SSG each; classes cycle 0..9 for the demo, random ImageNet "
                        "classes otherwise). Default 200")
    g.add_argument("--seed", type=int, default=0, help="seed of labels and per-image noise (shared by both runs)")
    g.add_argument("--batch-size", type=int, default=50, help="images per sampling call (does not change results)")
    g.add_argument("--transitions", type=int, default=4,
                   help="plot the last N steps k -> k+1 (0: all). Default 4, as the paper")
    g.add_argument("--real", type=Path, default=None,
                   help="real images for figure (b): .npz with arr_0 (N, H, W, 3) uint8, or an image folder. The "
                        "demo uses the digits. Without it, other models skip figure (b)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--out", type=Path, default=Path("results/spectra"), help="output folder")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    from VAR import cli_args as C
    args = build_parser().parse_args(argv)
    if args.num < 2 or args.batch_size < 1:
        raise SSGError("--num must be at least 2 and --batch-size positive")
    if args.transitions < 0:
        raise SSGError("--transitions must be >= 0")
    if args.real is not None and not args.real.exists():
        raise SSGError(f"--real {args.real} does not exist")
    check_output_path(args.out, "--out", folder=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    choice = C.model_choice(args)
    device = C.pick_device(args.device)
    make_ssg(args, None)  # check the SSG flags before the (slow) model load
    vae, var, info = C.load_var_models(args, choice, device)
    K = len(var.patch_nums)
    ssg, betas = make_ssg(args, K, announce=True)
    if ssg is None:
        raise SSGError("--beta is 0 at every scale: there is nothing to compare with the baseline")
    g = torch.Generator().manual_seed(args.seed)
    if choice.name == "demo":
        labels = torch.arange(args.num) % var.num_classes
    else:
        labels = torch.randint(0, var.num_classes, (args.num,), generator=g)

    runs = {}
    with C.autocast(device, C.pick_dtype(args.dtype, device)):
        for name, hook_ssg in (("baseline", None), ("ssg", ssg)):
            runs[name] = sample_with_spectra(var, labels, args.seed, hook_ssg, args.cfg, args.top_k, args.top_p,
                                             args.batch_size, args.progress, desc=name)
    title = choice.name
    beta_text = f"beta per scale {format_betas(betas)}"
    transitions = list(range(K - 1))[-args.transitions:] if args.transitions else list(range(K - 1))
    curves = logit_curves(runs["baseline"][1], runs["ssg"][1], var.patch_nums, transitions)
    plot_logits(args.out / "logit_spectra.png", curves, title, beta_text)
    result = {"model": choice.name, "num": args.num, "seed": args.seed, "cfg": args.cfg, "top_k": args.top_k,
              "top_p": args.top_p, "ssg": ssg_settings(args, betas), "patch_nums": list(var.patch_nums),
              "logit_transitions": curves}

    real = None
    if choice.name == "demo":
        from VAR.demo import load_digits_images
        real = (load_digits_images()[0] + 1) / 2
    elif args.real is not None:
        real = load_real_images(args.real, runs["baseline"][0].shape[-1], limit=10_000)
    if real is not None:
        from ssg_core.spectral import image_spectrum
        ref = image_spectrum(real).mean(0)
        base = image_spectrum(runs["baseline"][0]).mean(0) / ref
        guided = image_spectrum(runs["ssg"][0]).mean(0) / ref
        freqs = np.arange(len(ref))
        keep = freqs >= 1  # the mean is removed: bin 0 carries nothing
        plot_images(args.out / "image_spectrum_ratio.png", freqs[keep], base.numpy()[keep], guided.numpy()[keep],
                    title, beta_text)
        result["image_ratio"] = {"freq": freqs[keep].tolist(), "without_ssg": base.numpy()[keep].tolist(),
                                 "with_ssg": guided.numpy()[keep].tolist(), "num_real": len(real)}
    else:
        print("figure (b) skipped: give --real <reference .npz or image folder> for the image-spectrum ratio")
    write_json(args.out / "spectra.json", result)
    print(f"wrote {args.out / 'logit_spectra.png'}" + (f", {args.out / 'image_spectrum_ratio.png'}" if real is not None
                                                        else "") + f", {args.out / 'spectra.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
