"""Text-to-image sampling with HART, optionally with SSG: upstream's `sample.py` flags plus SSG options.

Demo (as upstream):   python -m hart.sample --prompt "a red heart" [--beta 0.5] [--compare]
Evaluation (MJHQ-30K): python -m hart.sample --prompt_file meta_data.json --no-more_smooth --sample_folder_dir out/
                      (torchrun for several GPUs; resumable; per-image seeds; manifest.json; --npz)

Checkpoints: `--model_path` (the release's `llm/` folder; its sibling `tokenizer/` is the tokenizer)
and `--text_model_path`; without them the files are fetched from `mit-han-lab/hart-0.7b-1024px` and
`mit-han-lab/Qwen2-VL-1.5B-Instruct` (HF cache, or `--ckpt_dir`), see `scripts/download.py --model hart-0.7b`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from ssg_core.cli import add_ssg_args, main_guard, make_ssg
from ssg_core.errors import SSGError
from ssg_core.evaluation import (image_seed, init_distributed, pack_npz, pending, save_grid, save_png, shard,
                                 to_uint8_hwc, versions, write_json)
from ssg_core.hub import resolve_snapshot, sha256

HART_REPO = "mit-han-lab/hart-0.7b-1024px"
TEXT_REPO = "mit-han-lab/Qwen2-VL-1.5B-Instruct"
MODEL_NAME = "hart-0.7b"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hart_t2i", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    B = argparse.BooleanOptionalAction
    g = p.add_argument_group("checkpoints")
    g.add_argument("--model_path", "--model-path", default=None,
                   help="HART transformer folder (the release's llm/, with config.json and ema_model.bin); its sibling "
                        f"tokenizer/ holds the tokenizer. Default: {HART_REPO} from the Hugging Face hub/cache")
    g.add_argument("--text_model_path", "--text-model-path", default=None,
                   help=f"text encoder folder (Qwen2 LLM + tokenizer). Default: {TEXT_REPO} from the hub/cache")
    g.add_argument("--ckpt_dir", "--ckpt-dir", default=None,
                   help="download/look for the default checkpoints in CKPT_DIR/hart-0.7b-1024px and "
                        "CKPT_DIR/Qwen2-VL-1.5B-Instruct instead of the Hugging Face cache")
    g.add_argument("--use_ema", "--use-ema", action=B, default=True,
                   help="sample with the EMA weights llm/ema_model.bin (upstream default); --no-use_ema loads "
                        "llm/pytorch_model.bin")
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", default=None, help="one prompt")
    g.add_argument("--prompt_list", "--prompt-list", nargs="+", default=None, help="several prompts, sampled as one batch")
    g.add_argument("--prompt_file", "--prompt-file", default=None,
                   help="evaluation mode: a .txt file (one prompt per line) or MJHQ-30K's meta_data.json "
                        "({id: {prompt, category}}); writes {index:06d}.png, resumable, one image per prompt")
    g.add_argument("--num_images", "--num-images", type=int, default=None,
                   help="evaluation mode: only the first NUM_IMAGES prompts of the file")
    g = p.add_argument_group("sampling (defaults = upstream sample.py)")
    g.add_argument("--seed", type=int, default=1, help="seed of the sampling generator (and, here, of the global torch/"
                   "NumPy generators, which upstream leaves unseeded); in evaluation mode image i uses a seed derived "
                   "from (seed, i)")
    g.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (ramped as cfg*k/(K-1))")
    g.add_argument("--more_smooth", "--more-smooth", action=B, default=True,
                   help="Gumbel-soft token embeddings for smoother images (upstream default on); use "
                        "--no-more_smooth for FID evaluation, as upstream does")
    g.add_argument("--max_token_length", "--max-token-length", type=int, default=300,
                   help="text tokens per prompt; must equal the transformer's context_token")
    g.add_argument("--use_llm_system_prompt", "--use-llm-system-prompt", action=B, default=True,
                   help="prepend upstream's prompt-enhancer system prompt for the text encoder")
    g.add_argument("--top_p", "--top-p", type=float, default=0.0, help="nucleus filtering (upstream: off); top-k is "
                   "fixed by upstream at 600 (scales 0-6) / 300 (later scales)")
    add_ssg_args(p)
    g = p.add_argument_group("output and hardware")
    g.add_argument("--sample_folder_dir", "--sample-folder-dir", default="samples/", help="output folder")
    g.add_argument("--store_seperately", "--store_separately", "--store-separately", action="store_true",
                   help="demo mode: one {idx:06d}.png per prompt instead of the grid sample_images.png")
    g.add_argument("--npz", action=B, default=False, help="evaluation mode: pack the PNGs into samples.npz at the end")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    g.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"),
                   help="autocast dtype (default: fp16 on CUDA as upstream, fp32 on CPU)")
    return p


# ------------------------------------------------------------------------------------------- loading
def resolve_paths(args) -> tuple[Path, Path]:
    """(llm folder, text encoder folder), downloading the defaults when needed."""
    if args.model_path is not None:
        llm = Path(args.model_path)
        if not llm.is_dir():
            raise SSGError(f"--model_path {llm} is not a folder (expected the release's llm/ folder)")
    else:
        patterns = ["llm/config.json", "llm/ema_model.bin" if args.use_ema else "llm/pytorch_model.bin", "tokenizer/*"]
        ckpt = Path(args.ckpt_dir) / HART_REPO.split("/")[1] if args.ckpt_dir else None
        llm = resolve_snapshot(HART_REPO, patterns, ckpt, MODEL_NAME) / "llm"
    if args.text_model_path is not None:
        text = Path(args.text_model_path)
        if not text.is_dir():
            raise SSGError(f"--text_model_path {text} is not a folder")
    else:
        ckpt = Path(args.ckpt_dir) / TEXT_REPO.split("/")[1] if args.ckpt_dir else None
        text = resolve_snapshot(TEXT_REPO, ["*.json", "*.txt", "*.safetensors", "*.bin"], ckpt, MODEL_NAME)
    return llm, text


def check_against_config(args, llm: Path) -> None:
    """Beta list length and text length against llm/config.json, before any weights are read."""
    from hart.modules.models.loading import read_config_dict
    from hart.modules.models.transformer import HARTForT2IConfig
    cfg = read_config_dict(llm, HARTForT2IConfig.model_type)
    defaults = HARTForT2IConfig()
    make_ssg(args, len(cfg.get("patch_nums", defaults.patch_nums)))
    T = cfg.get("context_token", defaults.context_token)
    if args.max_token_length != T:
        raise SSGError(f"--max_token_length {args.max_token_length} != the transformer's context_token {T}")


def load_models(llm_path: Path, text_path: Path, use_ema: bool, device: torch.device):
    """HART transformer (+ tokenizer) and the text LLM with its tokenizer, in eval mode on `device`."""
    from transformers import AutoModel, AutoTokenizer

    from hart.modules.models.transformer import HARTForT2I

    model = HARTForT2I.from_pretrained(llm_path, use_ema=use_ema).to(device).vae_to(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(text_path))
        text_model = AutoModel.from_pretrained(str(text_path)).to(device).eval().requires_grad_(False)
    except (OSError, ValueError) as e:
        raise SSGError(f"cannot load the text encoder from {text_path}: {str(e).splitlines()[0][:200]}") from None
    hidden = getattr(text_model.config, "hidden_size", None)
    if hidden != model.config.context_dim:
        raise SSGError(f"text encoder hidden size {hidden} != the transformer's context_dim {model.config.context_dim}")
    return model, tokenizer, text_model


def read_prompt_file(path: str) -> list[dict]:
    """[{index, prompt, (id, category)}] from a .txt (one prompt a line) or MJHQ's meta_data.json."""
    p = Path(path)
    if not p.is_file():
        raise SSGError(f"--prompt_file {p} does not exist")
    if p.suffix == ".json":
        try:
            meta = json.loads(p.read_text())
            rows = [{"id": k, "prompt": v["prompt"], "category": v.get("category")} for k, v in meta.items()]
        except (ValueError, AttributeError, KeyError, TypeError):
            raise SSGError(f"{p}: expected MJHQ-30K's meta_data.json format {{id: {{prompt, category}}}}") from None
    else:
        rows = [{"prompt": line.strip()} for line in p.read_text().splitlines() if line.strip()]
    if not rows:
        raise SSGError(f"--prompt_file {p} holds no prompts")
    return [{"index": i, **r} for i, r in enumerate(rows)]


# ------------------------------------------------------------------------------------------- sampling
class Sampler:
    """Text encoding + `autoregressive_infer_cfg` with the CLI's settings."""

    def __init__(self, args, model, tokenizer, text_model, device: torch.device):
        from hart.utils.constants import llm_system_prompt
        self.args, self.model, self.tokenizer, self.text_model, self.device = args, model, tokenizer, text_model, device
        self.system_prompt = llm_system_prompt
        precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
        self.dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if args.max_token_length != model.config.context_token:
            raise SSGError(f"--max_token_length {args.max_token_length} != the transformer's context_token "
                           f"{model.config.context_token}")
        self.ssg, self.betas = make_ssg(args, len(model.patch_nums))  # a wrong-length beta list fails here, before any work

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def encode(self, prompts: list[str]):
        from hart.utils.tools import encode_prompts
        with torch.inference_mode(), self.autocast():
            return encode_prompts(prompts, self.text_model, self.tokenizer, self.args.max_token_length,
                                  self.system_prompt, self.args.use_llm_system_prompt)

    def sample(self, encoded, seed: int, with_ssg: bool) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] for the encoded prompts; global generators reseeded with `seed`."""
        _, mask, pos, context = encoded
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        with torch.inference_mode(), self.autocast():
            return self.model.autoregressive_infer_cfg(
                B=context.shape[0], label_B=context, g_seed=seed, cfg=self.args.cfg, top_p=self.args.top_p,
                more_smooth=self.args.more_smooth, context_position_ids=pos, context_mask=mask,
                ssg=self.ssg if with_ssg else None).float()

    def runs(self) -> list[tuple[str, bool]]:
        """(sub-folder, with SSG) of every pass: one, or baseline + SSG with --compare."""
        if self.args.compare:
            return [("baseline", False), ("ssg", True)]
        return [("", True)]


def settings(args, llm: Path, text: Path) -> dict:
    return {k: v for k, v in vars(args).items()} | {"model_path": str(llm), "text_model_path": str(text)}


def checkpoint_hashes(llm: Path, use_ema: bool) -> dict[str, str]:
    from hart.modules.models.loading import find_weight_file
    files = [llm / "config.json", llm / ("ema_model.bin" if use_ema else "pytorch_model.bin"),
             llm.parent / "tokenizer" / "config.json", find_weight_file(llm.parent / "tokenizer")]
    return {str(f): sha256(f) for f in files if f.is_file()}


def run_demo(args, sampler: Sampler, prompts: list[str], out: Path) -> list[Path]:
    encoded = sampler.encode(prompts)
    written, images = [], {}
    for sub, with_ssg in sampler.runs():
        imgs = sampler.sample(encoded, args.seed, with_ssg)
        images[sub] = imgs
        folder = out / sub
        if args.store_seperately:
            for i, arr in enumerate(to_uint8_hwc(imgs)):
                save_png(folder / f"{i:06d}.png", arr)
                written.append(folder / f"{i:06d}.png")
        else:
            save_grid(folder / "sample_images.png", imgs, nrow=12)
            written.append(folder / "sample_images.png")
    if args.compare:  # row 1: baseline, row 2: SSG
        save_grid(out / "compare.png", torch.cat([images["baseline"], images["ssg"]]), nrow=len(prompts))
        written.append(out / "compare.png")
    tmp = out / ".prompt.txt.tmp"
    tmp.write_text("\n".join(prompts) + "\n")
    tmp.replace(out / "prompt.txt")  # whole or not at all
    return written


def run_eval(args, sampler: Sampler, rows: list[dict], out: Path, llm: Path, text: Path, dist) -> None:
    from tqdm import tqdm
    if args.num_images is not None:
        if args.num_images < 1:
            raise SSGError("--num_images must be >= 1")
        rows = rows[: args.num_images]
    n = len(rows)
    if dist.is_main:
        manifest = {"model": MODEL_NAME, "settings": settings(args, llm, text), "num_images": n,
                    "betas": sampler.betas,
                    "seeds": "image i uses seed image_seed(seed, i) = (seed * 1000003 + i) mod (2^63 - 1)",
                    "checkpoints_sha256": checkpoint_hashes(llm, args.use_ema), "versions": versions()}
        for sub, with_ssg in sampler.runs():
            write_json(out / sub / "manifest.json", manifest | {"ssg": with_ssg and sampler.ssg is not None})
            write_json(out / sub / "prompts.json", rows)
    for sub, with_ssg in sampler.runs():
        todo = pending(out / sub, shard(range(n), dist))
        for i in tqdm(todo, desc=f"HART {sub or 'samples'}", disable=not dist.is_main):
            seed = image_seed(args.seed, i)
            img = sampler.sample(sampler.encode([rows[i]["prompt"]]), seed, with_ssg)
            save_png(out / sub / f"{i:06d}.png", to_uint8_hwc(img)[0])
    dist.barrier()
    if args.npz and dist.is_main:
        for sub, _ in sampler.runs():
            shape = pack_npz(out / sub, n, out / sub / "samples.npz")
            print(f"wrote {out / sub / 'samples.npz'} {shape}")


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sum(x is not None for x in (args.prompt, args.prompt_list, args.prompt_file)) != 1:
        raise SSGError("give exactly one of --prompt, --prompt_list or --prompt_file")
    if args.cfg < 0:
        raise SSGError(f"--cfg must be >= 0, got {args.cfg}")
    if not 0.0 <= args.top_p < 1.0:
        raise SSGError(f"--top_p must be in [0, 1), got {args.top_p}")
    dist = init_distributed(args.device)  # checks --device
    rows = read_prompt_file(args.prompt_file) if args.prompt_file else None
    llm, text = resolve_paths(args)
    check_against_config(args, llm)  # cheap checks before the models are loaded
    model, tokenizer, text_model = load_models(llm, text, args.use_ema, dist.device)
    sampler = Sampler(args, model, tokenizer, text_model, dist.device)
    out = Path(args.sample_folder_dir)
    if rows is not None:
        run_eval(args, sampler, rows, out, llm, text, dist)
    else:
        prompts = [args.prompt] if args.prompt is not None else list(args.prompt_list)
        for path in run_demo(args, sampler, prompts, out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
