"""Train the offline demo model on sklearn's digits, in three seeded stages, on CPU.

    python VAR/train_demo.py                    # all stages: classifier, VQVAE, VAR (~10 min, 2 cores)
    python VAR/train_demo.py --stage var        # only the transformer, on the shipped VQVAE

1. classifier: a small CNN on 80% of the digits (20% held out for its accuracy); its features
   serve the Frechet distance / precision / recall of `scripts/demo_eval.py`.
2. vae: the VQVAE (f4, 8x8 latent, multi-scale residual quantizer over 6 scales): MSE + L1
   reconstruction plus the quantizer's commitment/codebook loss, straight-through gradients,
   and dead-code restarts from the batch's residuals (a tiny codebook collapses without them).
3. var: the next-scale transformer with teacher forcing (`VAR.forward`) on the VQVAE's token
   pyramids, cross-entropy over all L positions, labels dropped to the null class with
   probability `cond_drop_rate` (0.1, as upstream) so classifier-free guidance works.

Every stage is reproducible from `--seed` (fixed thread count; CPU kernels are deterministic).
Checkpoints are written to `--out` as fp16 safetensors, with `train_log.json` (losses, timings).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.errors import SSGError
from VAR import demo


# ---------------------------------------------------------------- helpers
def _batches(n: int, batch_size: int, generator: torch.Generator):
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n - batch_size + 1, batch_size):  # drop the last partial batch: fixed shapes
        yield perm[i:i + batch_size]


def _cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# ---------------------------------------------------------------- classifier
def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 12, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0, progress: bool = True):
    """Train `DigitsClassifier` on the 80% split; returns (model in eval mode, held-out accuracy, losses)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = demo.train_test_split(len(images), seed=seed)
    clf = demo.DigitsClassifier()
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * (len(train_idx) // batch_size)
    step, losses = 0, []
    for _ in tqdm(range(epochs), desc="classifier", disable=not progress):
        clf.train()
        for b in _batches(len(train_idx), batch_size, g):
            idx = train_idx[b]
            x = demo.random_shift(images[idx], 1, g)
            _set_lr(opt, _cosine_lr(step, total, lr, 20))
            loss = F.cross_entropy(clf(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
    clf.eval().requires_grad_(False)
    with torch.no_grad():
        acc = (clf(images[test_idx]).argmax(1) == labels[test_idx]).float().mean().item()
    return clf, acc, losses


# ---------------------------------------------------------------- VQVAE
def quantize_for_training(quantizer, f: torch.Tensor):
    """Multi-scale residual quantization of f (B, Cvae, H, W) with training signals.

    Same scale loop as upstream's `VectorQuantizer2.forward`: area-downsample the residual to
    each scale, nearest code by squared L2, bicubic-upsample (not at the last scale), phi,
    accumulate. Returns (f_hat with straight-through gradient to f, vq loss averaged over scales,
    per-scale indices [(B, pn*pn)], per-scale residual vectors [(B*pn*pn, Cvae)] for code restarts).
    """
    B, C, H, W = f.shape
    patch_nums = quantizer.v_patch_nums
    K = len(patch_nums)
    codebook = quantizer.embedding.weight  # (V, Cvae)
    f_no_grad = f.detach()
    f_rest = f_no_grad.clone()
    f_hat = torch.zeros_like(f_no_grad)
    vq_loss = f.new_zeros(())
    idx_list, rests = [], []
    for si, pn in enumerate(patch_nums):
        rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
        rest_NC = rest.permute(0, 2, 3, 1).reshape(-1, C)
        with torch.no_grad():
            d = rest_NC.square().sum(1, keepdim=True) + codebook.square().sum(1) - 2 * rest_NC @ codebook.T
            idx = d.argmin(1)
        h = codebook[idx].view(B, pn, pn, C).permute(0, 3, 1, 2)
        if si != K - 1:
            h = F.interpolate(h, size=(H, W), mode="bicubic")
        h = quantizer.quant_resi[si / (K - 1)](h)
        f_hat = f_hat + h
        f_rest = f_rest - h.detach()
        vq_loss = vq_loss + F.mse_loss(f_hat.detach(), f) * quantizer.beta + F.mse_loss(f_hat, f_no_grad)
        idx_list.append(idx.view(B, pn * pn))
        rests.append(rest_NC)
    f_hat = (f_hat.detach() - f_no_grad) + f  # straight-through: decoder gradients flow to the encoder
    return f_hat, vq_loss / K, idx_list, rests


def vae_losses(vae, x: torch.Tensor):
    """(reconstruction loss, vq loss, idx_list, rests) for images x (B, 3, H, W) in [-1, 1]."""
    f = vae.quant_conv(vae.encoder(x))
    f_hat, vq_loss, idx_list, rests = quantize_for_training(vae.quantize, f)
    rec = vae.decoder(vae.post_quant_conv(f_hat))
    rec_loss = F.mse_loss(rec, x) + 0.2 * F.l1_loss(rec, x)
    return rec_loss, vq_loss, idx_list, rests


def train_vae(vae, images: torch.Tensor, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
              restart_every: int = 25, warmup: int = 20, progress: bool = True) -> list[float]:
    """Train `vae` in place for `steps` steps; returns the per-step total loss."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    V = vae.quantize.embedding.weight.shape[0]
    usage = torch.zeros(V)
    losses: list[float] = []
    bar = tqdm(total=steps, desc="vqvae", disable=not progress)
    while len(losses) < steps:
        for b in _batches(len(images), batch_size, g):
            step = len(losses)
            if step >= steps:
                break
            x = demo.random_shift(images[b], 1, g)
            _set_lr(opt, _cosine_lr(step, steps, lr, warmup))
            rec_loss, vq_loss, idx_list, rests = vae_losses(vae, x)
            loss = rec_loss + vq_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 2.0)
            opt.step()
            usage += torch.cat([i.flatten() for i in idx_list]).bincount(minlength=V).float()
            if (step + 1) % restart_every == 0 and step + 1 < 0.8 * steps:
                _restart_dead_codes(vae.quantize.embedding.weight, usage, torch.cat(rests).detach(), g)
                usage.zero_()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(rec=f"{rec_loss.item():.4f}", vq=f"{vq_loss.item():.4f}")
    bar.close()
    vae.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def _restart_dead_codes(codebook: torch.Tensor, usage: torch.Tensor, candidates: torch.Tensor,
                        g: torch.Generator) -> int:
    """Replace codes never used since the last restart by random residual vectors of the batch."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        pick = torch.randint(0, len(candidates), (len(dead),), generator=g)
        codebook[dead] = candidates[pick] + 1e-3 * torch.randn(len(dead), codebook.shape[1], generator=g)
    return len(dead)


# ---------------------------------------------------------------- VAR
@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, labels: torch.Tensor, copies: int, seed: int,
                   batch_size: int = 256) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Token pyramids of the images and of `copies` randomly shifted (+-1 px) versions of them.

    Returns ([(N', pn*pn)] int64 per scale, labels (N',)) with N' = N * (1 + copies).
    """
    g = torch.Generator().manual_seed(seed + 1)
    xs = [images] + [demo.random_shift(images, 1, g) for _ in range(copies)]
    x_all, y_all = torch.cat(xs), labels.repeat(1 + copies)
    per_scale: list[list[torch.Tensor]] = [[] for _ in vae.quantize.v_patch_nums]
    for i in range(0, len(x_all), batch_size):
        for si, idx in enumerate(vae.img_to_idxBl(x_all[i:i + batch_size])):
            per_scale[si].append(idx)
    return [torch.cat(p) for p in per_scale], y_all


def var_loss(vae, var, idx_list: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing cross-entropy over all L positions: idx_list [(B, pn*pn)], labels (B,)."""
    with torch.no_grad():  # the VQVAE is frozen here
        x_in = vae.quantize.idxBl_to_var_input(idx_list)  # (B, L-1, Cvae)
    logits = var(labels, x_in)                            # (B, L, V)
    target = torch.cat(idx_list, dim=1)                   # (B, L)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


def train_var(vae, var, tokens: list[torch.Tensor], labels: torch.Tensor, steps: int, batch_size: int = 64,
              lr: float = 2e-3, seed: int = 0, warmup: int = 50, progress: bool = True) -> list[float]:
    """Train `var` in place with teacher forcing and label dropout; returns the per-step loss."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # VAR.forward draws the label dropout from the global RNG
    var.train().requires_grad_(True)
    decay = [p for n, p in var.named_parameters() if p.ndim >= 2 and "pos_" not in n and "emb" not in n]
    no_decay = [p for n, p in var.named_parameters() if not (p.ndim >= 2 and "pos_" not in n and "emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    losses: list[float] = []
    bar = tqdm(total=steps, desc="var", disable=not progress)
    while len(losses) < steps:
        for b in _batches(len(labels), batch_size, g):
            step = len(losses)
            if step >= steps:
                break
            _set_lr(opt, _cosine_lr(step, steps, lr, warmup))
            loss = var_loss(vae, var, [t[b] for t in tokens], labels[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    var.eval().requires_grad_(False)
    return losses


# ---------------------------------------------------------------- CLI
def _summary(losses: list[float]) -> dict[str, float]:
    n = max(1, len(losses) // 20)
    return {"first": sum(losses[:n]) / n, "last": sum(losses[-n:]) / n, "steps": len(losses)}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Train the offline demo model (VQVAE + VAR on sklearn digits) on CPU.")
    p.add_argument("--stage", choices=["all", "classifier", "vae", "var"], default="all",
                   help="which stage to run; 'var' reuses the VQVAE checkpoint in --out (default: all)")
    p.add_argument("--out", type=Path, default=demo.ASSETS, help="output folder for checkpoints and train_log.json")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default: 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, fixed for reproducibility (default: 1; on a shared machine more threads "
                        "than free cores make every step many times slower)")
    p.add_argument("--classifier-epochs", type=int, default=12, help="classifier epochs (default: 12)")
    p.add_argument("--vae-steps", type=int, default=300, help="VQVAE optimisation steps of batch 32 (default: 300)")
    p.add_argument("--var-steps", type=int, default=600, help="VAR optimisation steps of batch 64 (default: 600)")
    p.add_argument("--var-copies", type=int, default=4,
                   help="shifted copies of the data set encoded for VAR training (default: 4)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        raise SSGError("--threads must be at least 1")
    from ssg_core.evaluation import check_output_path, write_json
    check_output_path(args.out, "--out", folder=True)  # before any training: checkpoints are written atomically
    torch.set_num_threads(args.threads)
    log_path = args.out / "train_log.json"
    log: dict = {}  # this run's entries, merged into the file at the end (other stages keep theirs)
    images, labels = demo.load_digits_images()

    if args.stage in ("all", "classifier"):
        t0 = time.time()
        clf, acc, losses = train_classifier(images, labels, epochs=args.classifier_epochs, seed=args.seed,
                                            progress=args.progress)
        demo.save_half(clf, args.out / demo.CLASSIFIER_CKPT.name)
        log["classifier"] = {"seconds": time.time() - t0, "held_out_accuracy": acc, "loss": _summary(losses),
                             "epochs": args.classifier_epochs, "seed": args.seed}
        print(f"classifier: held-out accuracy {acc:.4f} ({time.time() - t0:.0f} s)")

    vae_path, var_path = args.out / demo.VAE_CKPT.name, args.out / demo.VAR_CKPT.name
    if args.stage in ("all", "vae"):
        t0 = time.time()
        vae, _ = demo.build_demo("cpu", seed=args.seed, test_mode=False)
        losses = train_vae(vae, images, steps=args.vae_steps, seed=args.seed, progress=args.progress)
        demo.save_half(vae, vae_path)
        with torch.no_grad():
            rec = vae.idxBl_to_img(vae.img_to_idxBl(images[:512]), same_shape=True, last_one=True)
            rec_mse = F.mse_loss(rec, images[:512]).item()
        log["vae"] = {"seconds": time.time() - t0, "loss": _summary(losses), "recon_mse_512": rec_mse,
                      "steps": args.vae_steps, "seed": args.seed}
        print(f"vqvae: loss {log['vae']['loss']}, recon MSE {rec_mse:.4f} ({time.time() - t0:.0f} s)")

    if args.stage in ("all", "var"):
        t0 = time.time()
        if not vae_path.is_file():
            raise SSGError(f"{vae_path} is missing: run the 'vae' stage first")
        from ssg_core.hub import load_state_dict, load_strict
        vae, var = demo.build_demo("cpu", seed=args.seed, test_mode=False)
        load_strict(vae, demo._to_model_dtypes(load_state_dict(vae_path), vae), "demo VQVAE checkpoint")
        vae.eval().requires_grad_(False)
        tokens, tok_labels = encode_dataset(vae, images, labels, copies=args.var_copies, seed=args.seed)
        losses = train_var(vae, var, tokens, tok_labels, steps=args.var_steps, seed=args.seed, progress=args.progress)
        demo.save_half(var, var_path)
        log["var"] = {"seconds": time.time() - t0, "loss": _summary(losses), "steps": args.var_steps,
                      "copies": args.var_copies, "seed": args.seed}
        print(f"var: loss {log['var']['loss']} ({time.time() - t0:.0f} s)")

    for entry in log.values():
        entry.update(threads=args.threads, torch=torch.__version__)
    write_json(log_path, {**(json.loads(log_path.read_text()) if log_path.is_file() else {}), **log})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
