"""Text-to-image sampling with HART, optionally with SSG: upstream's `sample.py` flags plus SSG options.

Demo (as upstream):   python -m hart.sample --prompt "a red heart" [--beta 0.5] [--compare]
Evaluation (MJHQ-30K): python -m hart.sample --prompt_file meta_data.json --no-more_smooth --sample_folder_dir out/
                      (torchrun for several GPUs; resumable; per-image seeds; manifest.json; --npz)

Checkpoints: `--model_path` (the release's `llm/` folder; its sibling `tokenizer/` is the tokenizer)
and `--text_model_path`; without them the files are fetched from `mit-han-lab/hart-0.7b-1024px` and
`mit-han-lab/Qwen2-VL-1.5B-Instruct` (HF cache, or `--ckpt_dir`), see `scripts/download.py --model hart-0.7b`.
Without any prompt, 4 of upstream's default prompts are drawn (with --seed), as upstream does.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from ssg_core.cli import ArgumentParser, add_ssg_args, add_trust_pickle_arg, check_sampling, main_guard, make_ssg
from ssg_core.errors import SSGError
from ssg_core.evaluation import (_atomic_write, check_output_path, image_seed, init_distributed, pack_npz, pending,
                                 save_grid, save_png, shard, versions, write_json)
from ssg_core.hub import resolve_snapshot, sha256

HART_REPO = "mit-han-lab/hart-0.7b-1024px"
TEXT_REPO = "mit-han-lab/Qwen2-VL-1.5B-Instruct"
MODEL_NAME = "hart-0.7b"


def _upstream_bool(flag: str):
    """argparse type for `--FLAG VALUE`, read as upstream's `type=bool` reads it: any non-empty VALUE is True."""

    def parse(text: str) -> bool:
        if text.strip().lower() in ("false", "f", "no", "n", "off", "0"):
            print(f"note: --{flag} {text!r} means True, as in upstream's sample.py (argparse type=bool reads any "
                  f"non-empty value as True); write --no-{flag} to turn it off", file=sys.stderr)
        return bool(text)

    return parse


def add_upstream_bool(g, name: str, default: bool, help: str) -> None:
    """`--NAME` / `--no-NAME` (also with hyphens), and upstream's `--NAME VALUE` (`--use_ema True`)."""
    dash = name.replace("_", "-")
    g.add_argument(f"--{name}", f"--{dash}", nargs="?", const=True, default=default, type=_upstream_bool(name),
                   metavar="VALUE", help=f"{help} (default {'on' if default else 'off'}; as upstream, "
                   f"--{name} VALUE with any non-empty VALUE means on, an empty one off)")
    g.add_argument(f"--no-{name}", f"--no-{dash}", dest=name, action="store_false", help=f"turn --{name} off")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="hart_t2i", description=__doc__)
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
    add_upstream_bool(g, "use_ema", True, "sample with the EMA weights llm/ema_model.bin (upstream default); "
                      "--no-use_ema loads llm/pytorch_model.bin")
    g.add_argument("--shield_model_path", "--shield-model-path", default=None,
                   help="upstream's ShieldGemma prompt filter; accepted for compatibility but not applied here "
                        "(a note says so): prompts are used as given")
    add_trust_pickle_arg(g, sep="_")
    g = p.add_argument_group("prompts (none given: 4 of upstream's default prompts, drawn with --seed)")
    g.add_argument("--prompt", default=None, help="one prompt (an empty one counts as none, as upstream)")
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
    add_upstream_bool(g, "more_smooth", True, "Gumbel-soft token embeddings for smoother images; use "
                      "--no-more_smooth for FID evaluation, as upstream does")
    g.add_argument("--max_token_length", "--max-token-length", type=int, default=300,
                   help="text tokens per prompt; must equal the transformer's context_token")
    add_upstream_bool(g, "use_llm_system_prompt", True,
                      "prepend upstream's prompt-enhancer system prompt for the text encoder")
    g.add_argument("--top_p", "--top-p", type=float, default=0.0, help="nucleus filtering (upstream: off); top-k is "
                   "fixed by upstream at 600 (scales 0-6) / 300 (later scales)")
    add_ssg_args(p)
    g = p.add_argument_group("output and hardware")
    g.add_argument("--sample_folder_dir", "--sample-folder-dir", default="samples/", help="output folder")
    g.add_argument("--store_seperately", "--store_separately", "--store-separately", action="store_true",
                   help="demo mode: one {idx:06d}.png per prompt even for several prompts (otherwise, as upstream, "
                        "several prompts give the grid sample_images.png and one prompt gives 000000.png)")
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


def check_text_model_folder(folder: Path) -> None:
    """One line naming what a text-encoder folder lacks, before transformers reads it (it would build an empty
    tokenizer from a bare config.json, or fail with a long message about converting slow tokenizers)."""
    def has(*names: str) -> bool:
        return all((folder / n).is_file() for n in names)

    missing = []
    if not has("config.json"):
        missing.append("config.json")
    if not (has("tokenizer.json") or has("vocab.json", "merges.txt") or has("tokenizer.model")):
        missing.append("tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    if not any(has(n) for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                "pytorch_model.bin.index.json")):
        missing.append("weights (model.safetensors or pytorch_model.bin, or a sharded *.index.json)")
    if missing:
        raise SSGError(f"text encoder folder {folder} lacks {'; '.join(missing)}")


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


def _one_line(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split())  # transformers' messages span several lines
    return f"{type(e).__name__}: {text if len(text) <= limit else text[:limit] + '...'}"


def fp32_kwargs() -> dict:
    """`from_pretrained` keyword for float32 weights. transformers >= 5 otherwise loads the dtype config.json names
    (bf16 for Qwen2-1.5B-Instruct) where upstream's 4.42 loads float32; the keyword is `dtype` from 4.56 on
    (`torch_dtype` is deprecated there) and `torch_dtype` before."""
    import transformers
    from packaging.version import Version
    return {"dtype" if Version(transformers.__version__).release[:2] >= (4, 56) else "torch_dtype": torch.float32}


def load_text_encoder(folder: Path, device: torch.device):
    """(tokenizer, LLM in float32, eval mode, on `device`); any loading failure is a one-line SSGError."""
    from transformers import AutoModel, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise SSGError(f"cannot load the text encoder's tokenizer from {folder}: {_one_line(e)}") from None
    try:
        text_model = AutoModel.from_pretrained(str(folder), **fp32_kwargs())
    except Exception as e:
        raise SSGError(f"cannot load the text encoder model from {folder}: {_one_line(e)}") from None
    return tokenizer, text_model.to(device).eval().requires_grad_(False)


def load_models(llm_path: Path, text_path: Path, use_ema: bool, device: torch.device, trust_pickle: bool = False):
    """HART transformer (+ tokenizer) and the text LLM with its tokenizer, in eval mode on `device`.
    `trust_pickle` applies to HART's own weight files; transformers loads the text LLM (safetensors, or a .bin
    with weights_only=True)."""
    from hart.modules.models.transformer import HARTForT2I

    model = HARTForT2I.from_pretrained(llm_path, use_ema=use_ema, trust_pickle=trust_pickle).to(device).vae_to(device)
    tokenizer, text_model = load_text_encoder(text_path, device)
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


def select_prompts(args) -> tuple[list[str] | None, list[dict] | None]:
    """(demo prompts, None) or (None, evaluation rows from --prompt_file).

    As upstream, an empty --prompt counts as none, and with no prompt at all 4 of upstream's
    `default_prompts` are drawn; upstream's draw is unseeded, here it is drawn with --seed (reproducible).
    """
    from hart.utils.constants import default_prompts
    given = [name for name, v in (("--prompt", args.prompt or None), ("--prompt_list", args.prompt_list),
                                  ("--prompt_file", args.prompt_file)) if v is not None]
    if len(given) > 1:
        raise SSGError(f"give at most one of --prompt, --prompt_list or --prompt_file (got {', '.join(given)})")
    if args.prompt_file is not None:
        return None, read_prompt_file(args.prompt_file)
    if args.prompt:
        return [args.prompt], None
    if args.prompt_list is not None:
        return list(args.prompt_list), None
    print("note: no prompt given: sampling 4 of upstream's default prompts (drawn with --seed)", file=sys.stderr)
    return random.Random(args.seed).sample(default_prompts, 4), None


def runs(args) -> list[tuple[str, bool]]:
    """(sub-folder, with SSG) of every pass: one, or baseline + SSG with --compare."""
    return [("baseline", False), ("ssg", True)] if args.compare else [("", True)]


def writes_grid(args, num_images: int) -> bool:
    """Upstream's layout: one grid sample_images.png for several images unless --store_seperately, else
    {idx:06d}.png per image (so a single prompt always gives 000000.png)."""
    return not args.store_seperately and num_images > 1


def check_outputs(args, num_prompts: int | None) -> Path:
    """Fail in one line, before anything is downloaded or loaded, if an output could not be written later.

    num_prompts: the demo's prompt count, None in evaluation mode. Checks the output folder, the --compare
    sub-folders and every file of fixed name (a per-index PNG of evaluation mode is checked when written).
    """
    what = "--sample_folder_dir"
    out = check_output_path(args.sample_folder_dir, what, folder=True)
    if num_prompts is None:
        names = ["manifest.json", "prompts.json"] + (["samples.npz"] if args.npz else [])
    elif writes_grid(args, num_prompts):
        names = ["sample_images.png"]
    else:
        names = [f"{i:06d}.png" for i in range(num_prompts)]
    for sub, _ in runs(args):
        folder = check_output_path(out / sub, what, folder=True)
        for name in names:
            check_output_path(folder / name, what)
    if num_prompts is not None:
        for name in ["prompt.txt"] + (["compare.png"] if args.compare else []):
            check_output_path(out / name, what)
    return out


def to_uint8_upstream(images: torch.Tensor, grid: bool = False) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 as upstream's save_images: x255 in the images' own dtype
    (fp16 under fp16 autocast, so fp32 runs are unchanged) or, for a grid, in fp16 whatever the dtype, then
    truncation. Multiplying in fp32 instead moves some values by 1."""
    x = images.detach().to(torch.float16) if grid else images.detach()
    return x.clamp(0, 1).mul(255).permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def save_images(images: torch.Tensor, folder: Path, store_separately: bool) -> list[Path]:
    """Write a demo pass's images as upstream does (see `writes_grid`); returns the written paths."""
    if not store_separately and len(images) > 1:
        cells = torch.from_numpy(to_uint8_upstream(images, grid=True)).permute(0, 3, 1, 2)
        # k/255 in float32 comes back as exactly k from save_grid's x255-and-truncate
        save_grid(folder / "sample_images.png", cells.float() / 255, nrow=12)
        return [folder / "sample_images.png"]
    paths = [folder / f"{i:06d}.png" for i in range(len(images))]
    for path, arr in zip(paths, to_uint8_upstream(images)):
        save_png(path, arr)
    return paths


# ------------------------------------------------------------------------------------------- sampling
class Sampler:
    """Text encoding + `autoregressive_infer_cfg` with the CLI's settings."""

    def __init__(self, args, model, tokenizer, text_model, device: torch.device, announce: bool = True):
        from hart.utils.constants import llm_system_prompt
        self.args, self.model, self.tokenizer, self.text_model, self.device = args, model, tokenizer, text_model, device
        self.system_prompt = llm_system_prompt
        precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
        self.dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if args.max_token_length != model.config.context_token:
            raise SSGError(f"--max_token_length {args.max_token_length} != the transformer's context_token "
                           f"{model.config.context_token}")
        # a wrong-length beta list fails here, before any work; `announce` prints the per-scale betas
        self.ssg, self.betas = make_ssg(args, len(model.patch_nums), announce=announce)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def encode(self, prompts: list[str]):
        from hart.utils.tools import encode_prompts
        with torch.inference_mode(), self.autocast():
            return encode_prompts(prompts, self.text_model, self.tokenizer, self.args.max_token_length,
                                  self.system_prompt, self.args.use_llm_system_prompt)

    def sample(self, encoded, seed: int, with_ssg: bool, trace: dict | None = None, hook=None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (autocast dtype) for the encoded prompts; global generators reseeded with `seed`.

        trace: filled with per-scale tensors (see `HARTForT2I.autoregressive_infer_cfg`). hook: a logits processor
        used instead of the flags' SSG (e.g. the web demo's recording wrapper); `with_ssg` is then not read.
        """
        _, mask, pos, context = encoded
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        with torch.inference_mode(), self.autocast():
            return self.model.autoregressive_infer_cfg(
                B=context.shape[0], label_B=context, g_seed=seed, cfg=self.args.cfg, top_p=self.args.top_p,
                more_smooth=self.args.more_smooth, context_position_ids=pos, context_mask=mask, trace=trace,
                ssg=hook if hook is not None else (self.ssg if with_ssg else None))  # autocast dtype out


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
    for sub, with_ssg in runs(args):
        images[sub] = sampler.sample(encoded, args.seed, with_ssg)
        written += save_images(images[sub], out / sub, args.store_seperately)
    if args.compare:  # row 1: baseline, row 2: SSG
        save_grid(out / "compare.png", torch.cat([images["baseline"], images["ssg"]]), nrow=len(prompts))
        written.append(out / "compare.png")
    text = ("\n".join(prompts) + "\n").encode()
    _atomic_write(out / "prompt.txt", lambda f: f.write(text))
    return written


def run_eval(args, sampler: Sampler, rows: list[dict], out: Path, llm: Path, text: Path, dist) -> None:
    from tqdm import tqdm
    if args.num_images is not None:
        if args.num_images < 1:
            raise SSGError("--num_images must be >= 1")
        rows = rows[: args.num_images]
    n = len(rows)
    # what is already there, counted before any rank writes (the barrier below): for the summary line
    missing = {sub: set(pending(out / sub, range(n))) for sub, _ in runs(args)}  # one scan serves both uses
    existing = {sub: n - len(missing[sub]) for sub in missing}
    if dist.is_main:
        manifest = {"model": MODEL_NAME, "settings": settings(args, llm, text), "num_images": n,
                    "betas": sampler.betas,
                    "seeds": "image i uses seed image_seed(seed, i) = (seed * 1000003 + i) mod (2^63 - 1)",
                    "checkpoints_sha256": checkpoint_hashes(llm, args.use_ema), "versions": versions()}
        for sub, with_ssg in runs(args):
            write_json(out / sub / "manifest.json", manifest | {"ssg": with_ssg and sampler.ssg is not None})
            write_json(out / sub / "prompts.json", rows)
    dist.barrier()
    for sub, with_ssg in runs(args):
        todo = [i for i in shard(range(n), dist) if i in missing[sub]]  # only this rank writes its shard
        with tqdm(todo, desc=f"HART {sub or 'samples'}", disable=not dist.is_main) as bar:  # closed before an error
            for i in bar:
                seed = image_seed(args.seed, i)
                img = sampler.sample(sampler.encode([rows[i]["prompt"]]), seed, with_ssg)
                save_png(out / sub / f"{i:06d}.png", to_uint8_upstream(img)[0])
    dist.barrier()
    if dist.is_main:
        for sub, _ in runs(args):
            line = f"{n} images in {out / sub}: {n - existing[sub]} new, {existing[sub]} already there"
            if args.npz:
                shape = pack_npz(out / sub, n, out / sub / "samples.npz")
                line += f"; wrote {out / sub / 'samples.npz'} {shape}"
            print(line)


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_sampling(cfg=args.cfg)
    if args.cfg < 0:
        raise SSGError(f"--cfg must be >= 0, got {args.cfg}")
    if not 0.0 <= args.top_p < 1.0:
        raise SSGError(f"--top_p must be in [0, 1), got {args.top_p}")
    prompts, rows = select_prompts(args)
    out = check_outputs(args, None if rows is not None else len(prompts))
    dist = init_distributed(args.device)  # checks --device
    if args.shield_model_path is not None:  # upstream replaces prompts that ShieldGemma flags by default prompts
        print("note: --shield_model_path: the ShieldGemma prompt filter is not applied here; prompts are used as "
              "given", file=sys.stderr)
    llm, text = resolve_paths(args)
    check_against_config(args, llm)  # cheap checks before the models are loaded
    check_text_model_folder(text)
    model, tokenizer, text_model = load_models(llm, text, args.use_ema, dist.device, args.trust_pickle)
    sampler = Sampler(args, model, tokenizer, text_model, dist.device)
    if rows is not None:
        run_eval(args, sampler, rows, out, llm, text, dist)
    else:
        for path in run_demo(args, sampler, prompts, out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
