"""Text-to-image with SSG on your own mit-han-lab/hart checkout; writes one PNG grid.

    python scripts/hart_upstream_ssg.py --upstream ~/src/hart --model_path pretrained_models/HART-1024/llm \
        --text_model_path pretrained_models/Qwen2-VL-1.5B-Instruct \
        --prompt "a red heart on a white table" --prompt "an owl in the snow" \
        --beta 0.5 --compare --out hart_upstream_ssg.png          # top row: baseline, bottom row: SSG

Everything but the SSG hook is the checkout's code, used as its sample.py does: `HARTForT2I.from_pretrained`
(which also loads the hybrid tokenizer from the sibling folder tokenizer/), the EMA weights (llm/ema_model.bin,
unless --no-use_ema), the Qwen2 text encoder through transformers, `hart.utils.encode_prompts` with upstream's
system prompt, and the model's own `autoregressive_infer_cfg` inside `ssg_core.integrations.enable_ssg`: SSG guides
the discrete tokens, the residual diffusion runs unchanged on top. Both rows start from the same seeds (the
sampling generator and, for the residual diffusion, the global torch and NumPy generators). Unlike sample.py, no
ShieldGemma safety check runs and no prompt is drawn at random (default: upstream's first four default prompts).
Upstream's inference code needs a CUDA GPU and, as pinned, transformers 4.42. Needs `ssg_core` importable
(`pip install ./packages/ssg-core`); written against HART e28a41f.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path

import numpy as np
import torch

import _upstream

_upstream.import_ssg_core()

from ssg_core.cli import ArgumentParser, add_ssg_args, add_trust_pickle_arg, main_guard, make_ssg, pick_device  # noqa: E402
from ssg_core.errors import SSGError  # noqa: E402
from ssg_core.hub import load_state_dict, load_strict  # noqa: E402
from ssg_core.integrations import enable_ssg  # noqa: E402

UPSTREAM = "mit-han-lab/hart (e28a41f)"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="SSG text-to-image with an unmodified mit-han-lab/hart checkout; writes a PNG grid.")
    p.add_argument("--upstream", type=Path, required=True,
                   help="root folder of your mit-han-lab/hart checkout (the one holding hart/ and sample.py)")
    p.add_argument("--model_path", default="pretrained_models/HART-1024/llm",
                   help="HART transformer folder (config.json, pytorch_model.bin, ema_model.bin; tokenizer/ beside it)")
    p.add_argument("--text_model_path", default="Qwen2-VL-1.5B-Instruct", help="Qwen2 text encoder folder or repo id")
    p.add_argument("--prompt", action="append", default=None,
                   help="text prompt; repeat the flag for several images per row. Default: upstream's first four "
                        "default prompts")
    p.add_argument("--seed", type=int, default=1, help="sampling seed (g_seed), also seeds the residual diffusion")
    p.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="sample with ema_model.bin")
    p.add_argument("--max_token_length", type=int, default=300, help="text tokens (the model's context length)")
    p.add_argument("--use_llm_system_prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="prepend upstream's system prompt to every prompt")
    p.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance")
    p.add_argument("--more_smooth", action=argparse.BooleanOptionalAction, default=True,
                   help="upstream's Gumbel-softmax smoothing (sample.py's default; off for FID)")
    p.add_argument("--device", default=None, help="torch device. Default: cuda if available, else cpu")
    _upstream.add_grid_args(p, "hart_upstream_ssg.png")
    add_trust_pickle_arg(p, sep="_")
    add_ssg_args(p)
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _upstream.check_grid_args(args)
    device = pick_device(args.device)
    make_ssg(args, None)   # the SSG flags, checked before any weight is read (a beta list's length: below)
    t2i = _upstream.use_checkout(args.upstream, "hart.modules.models.transformer.hart_transformer_t2i",
                                 "hart/modules/models/transformer/hart_transformer_t2i.py", UPSTREAM)
    from hart.utils import default_prompts, encode_prompts, llm_system_prompt
    from transformers import AutoModel, AutoTokenizer

    model_path = Path(args.model_path)
    try:
        model = t2i.HARTForT2I.from_pretrained(str(model_path))
    except (OSError, AttributeError) as e:   # a missing folder; transformers >= 5 (upstream pins 4.42)
        raise SSGError(f"upstream's HARTForT2I.from_pretrained({model_path}) failed ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]})") from None
    ssg, betas = make_ssg(args, len(model.patch_nums))
    model = model.to(device).eval()
    if args.use_ema:   # as sample.py: a copy of the model with the EMA weights
        ema = copy.deepcopy(model)
        load_strict(ema, load_state_dict(model_path / "ema_model.bin", trust_pickle=args.trust_pickle),
                    f"EMA weights {model_path / 'ema_model.bin'}")
        model = ema
    text_tokenizer = AutoTokenizer.from_pretrained(args.text_model_path)
    text_model = AutoModel.from_pretrained(args.text_model_path).to(device).eval()
    prompts = args.prompt or list(default_prompts[:4])

    def sample(hook) -> torch.Tensor:
        torch.manual_seed(args.seed)   # the residual diffusion draws from the global generators
        np.random.seed(args.seed)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            _, context_mask, context_position_ids, context_tensor = encode_prompts(
                prompts, text_model, text_tokenizer, args.max_token_length, llm_system_prompt,
                args.use_llm_system_prompt)
            with enable_ssg(model, hook) if hook is not None else contextlib.nullcontext():
                img = model.autoregressive_infer_cfg(B=context_tensor.size(0), label_B=context_tensor, cfg=args.cfg,
                                                     g_seed=args.seed, more_smooth=args.more_smooth,
                                                     context_position_ids=context_position_ids,
                                                     context_mask=context_mask)
        return img.float()   # (B, 3, H, W) in [0, 1]

    what = _upstream.save_comparison(args.out, sample, ssg, args.compare, nrow=len(prompts), zoom=args.zoom)
    print(f"wrote {args.out} ({what}: {len(prompts)} prompt(s), seed {args.seed}, beta {betas})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
