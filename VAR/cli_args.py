"""What the two VAR entry points share: flags, model choice, checkpoints, SSG setup.

`VAR/sample_ssg.py` (a picture grid) and `scripts/var_sample_eval.py` (50k PNGs for
FID/IS) take the same model, sampling and SSG flags; both build them here so that a
flag means the same thing in both. Everything a user can get wrong is checked here,
before any output file is touched, and reported as a one-line `SSGError`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ssg_core.cli import (add_ssg_args, add_trust_pickle_arg, check_sampling, format_betas, make_ssg,  # noqa: F401
                          pick_device, ssg_settings)  # (shared by every sampler)
from ssg_core.errors import SSGError
from ssg_core.hub import MODELS, load_state_dict, resolve_file, sha256

# Upstream's scale schedules (utils/arg_util.py): 256 px for d16..d30, 512 px for d36.
PATCH_NUMS: dict[int, tuple[int, ...]] = {
    256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
}
# Released checkpoints: depth -> (image size, shared AdaLN). Only d36 is 512 px (and shared AdaLN).
RELEASED: dict[int, tuple[int, bool]] = {16: (256, False), 20: (256, False), 24: (256, False),
                                         30: (256, False), 36: (512, True)}
MODEL_CHOICES = [f"var-d{d}" for d in RELEASED] + ["demo"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 1000  # ImageNet; class 1000 is the model's null (unconditional) class

# The first README example of upstream's demo notebook uses these four classes (twice each).
DEFAULT_CLASSES = "980,437,22,562"


# ---------------------------------------------------------------- flags
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and checkpoints")
    g.add_argument("--model", choices=MODEL_CHOICES, default=None,
                   help="which model: a released VAR (var-d16 .. var-d30 at 256 px, var-d36 at 512 px) or the small "
                        "shipped demo model trained on sklearn digits (tiny images, classes 0-9, see VAR/demo.py). "
                        "Default var-d16 (or what --model-depth / --var-ckpt say)")
    g.add_argument("--model-depth", type=int, choices=sorted(RELEASED), default=None,
                   help="upstream's way to pick a model: 16, 20, 24, 30 or 36 means var-d16 .. var-d36")
    g.add_argument("--image-size", type=int, choices=sorted(PATCH_NUMS), default=None,
                   help="output resolution; must be the one the model was trained for (256 for d16-d30, 512 for "
                        "d36). Default: the model's")
    g.add_argument("--ckpt-dir", type=Path, default=None,
                   help="folder with the checkpoint files (looked up by file name; missing ones are downloaded into "
                        "it). Default: the Hugging Face cache. HF_HUB_OFFLINE=1 forbids downloads")
    g.add_argument("--vae-ckpt", type=Path, default=None,
                   help="explicit VQVAE weight file (overrides the download); its size is read from the file")
    g.add_argument("--var-ckpt", type=Path, default=None,
                   help="explicit VAR weight file (overrides the download); depth, shared AdaLN and scale schedule "
                        "are read from the file and checked against --model/--model-depth/--image-size")
    add_trust_pickle_arg(g)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (defaults: upstream's published FID settings)")
    g.add_argument("--cfg", type=float, default=1.5,
                   help="classifier-free guidance strength; VAR ramps it linearly from 0 at the first scale to cfg "
                        "at the last ((1+t)*cond - t*uncond, t = cfg*k/(K-1)). Upstream's FID setting: 1.5")
    g.add_argument("--top-k", type=int, default=900, help="keep the k most likely tokens per position (0: off)")
    g.add_argument("--top-p", type=float, default=0.96,
                   help="then keep the smallest top set with probability mass >= p (0: off)")
    g.add_argument("--more-smooth", action=argparse.BooleanOptionalAction, default=False,
                   help="upstream's Gumbel-softmax smoothing of the token embeddings: nicer pictures, not used for "
                        "FID")
    g.add_argument("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu. Default: cuda if available")
    g.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="compute precision: fp32, or bf16/fp16 autocast on CUDA (upstream's demo uses fp16). "
                        "Default: fp16 on CUDA, fp32 on CPU (the only choice there)")


# ---------------------------------------------------------------- model choice
@dataclass(frozen=True)
class ModelChoice:
    """What the user asked for. For "demo" the architecture comes from `VAR/demo.py`."""
    name: str                       # "var-d16" .. "var-d36", "demo", or "custom" (explicit --var-ckpt)
    depth: int | None               # None: read from --var-ckpt
    image_size: int | None          # None: read from --var-ckpt
    shared_aln: bool | None

    @property
    def patch_nums(self) -> tuple[int, ...] | None:
        return PATCH_NUMS[self.image_size] if self.image_size else None


def model_choice(args: argparse.Namespace) -> ModelChoice:
    """Resolve --model / --model-depth / --image-size / --var-ckpt into one consistent choice."""
    name = args.model
    if args.model_depth is not None:
        by_depth = f"var-d{args.model_depth}"
        if name is not None and name != by_depth:
            raise SSGError(f"--model {name} and --model-depth {args.model_depth} disagree; give one of them")
        name = by_depth
    if name == "demo":
        if args.image_size is not None or args.var_ckpt is not None or args.vae_ckpt is not None:
            raise SSGError("--model demo uses the shipped demo checkpoint; drop --image-size/--var-ckpt/--vae-ckpt")
        return ModelChoice("demo", None, None, None)
    if name is None:
        if args.var_ckpt is not None:  # architecture read from the file, resolution checked against it
            return ModelChoice("custom", None, args.image_size, None)
        name = "var-d16"
    depth = int(name.removeprefix("var-d"))
    size, shared = RELEASED[depth]
    if args.image_size is not None and args.image_size != size:
        raise SSGError(f"{name} exists only at {size} px (no {args.image_size} px checkpoint was released); "
                       f"drop --image-size or pick " + ("--model-depth 36" if args.image_size == 512
                                                        else "--model-depth 16/20/24/30"))
    return ModelChoice(name, depth, size, shared)


def parse_classes(text: str, num_classes: int) -> list[int]:
    """'980,437' -> [980, 437]; each id must be a class of the model (0 .. num_classes-1)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise SSGError(f"--classes: expected comma-separated class ids, got {text!r}") from None
    if not ids:
        raise SSGError("--classes: give at least one class id")
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise SSGError(f"--classes: unknown class id {bad[0]} (this model has classes 0..{num_classes - 1})")
    return ids


# ---------------------------------------------------------------- device and precision
def pick_dtype(text: str | None, device: torch.device) -> str:
    if text is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if text != "fp32" and device.type != "cuda":
        raise SSGError(f"--dtype {text} needs a CUDA device (autocast); on {device.type} use --dtype fp32")
    return text


def autocast(device: torch.device, dtype: str):
    """Upstream's mixed precision: autocast on CUDA for bf16/fp16; nothing for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


# ---------------------------------------------------------------- checkpoints
def resolve_checkpoints(args: argparse.Namespace, choice: ModelChoice) -> tuple[Path, Path]:
    """(vae_path, var_path): explicit files first, else `ssg_core.hub` (HF cache or --ckpt-dir)."""
    paths: dict[str, Path | None] = {"vae": args.vae_ckpt, "var": args.var_ckpt}
    for what, p in paths.items():
        if p is not None and not Path(p).is_file():
            raise SSGError(f"--{what}-ckpt {p} does not exist")
    if any(p is None for p in paths.values()):
        hub_name = choice.name if choice.name in MODELS else "var-d16"  # custom VAR file + released VAE
        for f in MODELS[hub_name]:
            what = "vae" if Path(f.filename).name.startswith("vae") else "var"
            if paths[what] is None:
                paths[what] = resolve_file(f.repo_id, f.filename, args.ckpt_dir, model=hub_name)
    return Path(paths["vae"]), Path(paths["var"])


@dataclass
class VarArch:
    """Architecture facts read from the weight files themselves."""
    depth: int
    shared_aln: bool
    patch_nums: tuple[int, ...]
    vae_ch: int

    @property
    def image_size(self) -> int:
        return 16 * self.patch_nums[-1]


def peek_shapes(path: Path, nested: tuple[str, ...], trust_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a weight file without reading its tensors (loaded onto the meta device)."""
    return {k: tuple(v.shape)
            for k, v in load_state_dict(path, nested=nested, device="meta", trust_pickle=trust_pickle).items()}


def read_arch(vae_path: Path, var_path: Path, trust_pickle: bool = False) -> VarArch:
    """Depth, AdaLN sharing and scale schedule of a VAR file, VAE width of a VQVAE file (shapes only)."""
    from VAR.models import TRAINING_NESTING
    vae_sd = peek_shapes(vae_path, TRAINING_NESTING["vae"], trust_pickle)
    var_sd = peek_shapes(var_path, TRAINING_NESTING["var"], trust_pickle)
    if "decoder.conv_out.weight" not in vae_sd or "quantize.embedding.weight" not in vae_sd:
        raise SSGError(f"{vae_path} is not a VAR VQVAE checkpoint (no decoder.conv_out.weight / quantize.embedding."
                       f"weight); did you swap --vae-ckpt and --var-ckpt?")
    if "pos_1LC" not in var_sd or "class_emb.weight" not in var_sd:
        raise SSGError(f"{var_path} is not a VAR transformer checkpoint (no pos_1LC / class_emb.weight); did you "
                       f"swap --vae-ckpt and --var-ckpt?")
    blocks = {int(k.split(".")[1]) for k in var_sd if k.startswith("blocks.")}
    L = var_sd["pos_1LC"][1]
    sets = [pn for pn in PATCH_NUMS.values() if sum(p * p for p in pn) == L]
    if not sets:
        raise SSGError(f"{var_path} has {L} token positions, which matches neither released scale schedule "
                       f"(680 for 256 px, 2240 for 512 px)")
    return VarArch(depth=max(blocks) + 1 if blocks else 0, shared_aln="shared_ada_lin.1.weight" in var_sd,
                   patch_nums=sets[0], vae_ch=vae_sd["decoder.conv_out.weight"][1])


def check_arch(arch: VarArch, choice: ModelChoice, var_path: Path) -> None:
    if choice.depth is not None and arch.depth != choice.depth:
        raise SSGError(f"{var_path} holds a depth-{arch.depth} VAR, but {choice.name} (depth {choice.depth}) was "
                       f"asked; wrong file or wrong --model")
    if choice.image_size is not None and arch.image_size != choice.image_size:
        raise SSGError(f"{var_path} is a {arch.image_size} px model, but {choice.image_size} px was asked")
    if choice.shared_aln is not None and arch.shared_aln != choice.shared_aln:
        raise SSGError(f"{var_path}: shared AdaLN is {arch.shared_aln}, but {choice.name} has {choice.shared_aln}")


def load_var_models(args: argparse.Namespace, choice: ModelChoice, device: torch.device):
    """Resolve, read, check and strictly load the VQVAE and VAR for `choice`.

    Returns (vae, var, info): both modules in eval mode on `device`; info holds the
    checkpoint paths (`checkpoint_hashes` turns them into SHA-256) and the architecture.
    """
    if choice.name == "demo":
        try:
            from VAR import demo
        except ImportError:
            raise SSGError("the demo model is not available in this checkout (VAR/demo.py is missing)") from None
        vae, var = demo.load_demo(device)
        files = {"vae": str(getattr(demo, "VAE_CKPT", "")), "var": str(getattr(demo, "VAR_CKPT", ""))}
        return vae.eval(), var.eval(), {"checkpoints": files, "patch_nums": list(var.patch_nums)}

    from VAR.models import load_vae_var
    vae_path, var_path = resolve_checkpoints(args, choice)
    trust = args.trust_pickle
    arch = read_arch(vae_path, var_path, trust)  # shapes only: cheap, and lets us name the mismatch
    check_arch(arch, choice, var_path)
    vae, var = load_vae_var(vae_path, var_path, depth=arch.depth, patch_nums=arch.patch_nums, device=device,
                            shared_aln=arch.shared_aln, ch=arch.vae_ch, trust_pickle=trust)
    info = {"checkpoints": {"vae": str(vae_path), "var": str(var_path)}, "depth": arch.depth,
            "shared_aln": arch.shared_aln, "patch_nums": list(arch.patch_nums), "vae_ch": arch.vae_ch}
    return vae.eval(), var.eval(), info


def checkpoint_hashes(info: dict) -> dict[str, str]:
    return {what: sha256(p) for what, p in info["checkpoints"].items() if os.path.isfile(p)}
