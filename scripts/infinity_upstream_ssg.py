"""Text-to-image with SSG on your own FoundationVision/Infinity checkout; writes one PNG grid.

    python scripts/infinity_upstream_ssg.py --upstream ~/src/Infinity \
        --model_path weights/infinity_2b_reg.pth --vae_type 32 --vae_path weights/infinity_vae_d32reg.pth \
        --text_encoder_ckpt weights/flan-t5-xl --pn 1M --model_type infinity_2b --cfg 4 --tau 0.5 \
        --add_lvl_embeding_only_first_block 1 --rope2d_each_sa_layer 1 --rope2d_normalized_by_hw 2 \
        --prompt "an astronaut riding a horse" --prompt "a red fox in the snow" \
        --beta 0.5 --compare --out infinity_upstream_ssg.png          # top row: baseline, bottom row: SSG

Everything but the SSG hook is the checkout's code: its `tools/run_infinity.py` supplies every model flag
(`add_common_arguments`, with upstream's defaults: pass the values of its scripts/infer.sh as above), the loaders
(`load_tokenizer`, `load_visual_tokenizer`, `load_transformer`, which read the official files as upstream does)
and `gen_one_img`, which runs `Infinity.autoregressive_infer_cfg` inside `ssg_core.integrations.enable_ssg`.
One image per --prompt and row, seed --seed. Upstream's inference code needs a CUDA GPU and flash-attn. Needs
`ssg_core` importable (`pip install ./packages/ssg-core`, or run it from this repository); written against
Infinity 4c27bbb.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

import _upstream

_upstream.import_ssg_core()

from ssg_core.cli import ArgumentParser, add_ssg_args, main_guard, make_ssg  # noqa: E402
from ssg_core.errors import SSGError  # noqa: E402
from ssg_core.integrations import enable_ssg  # noqa: E402

UPSTREAM = "FoundationVision/Infinity (4c27bbb)"


def build_parser(run_infinity=None) -> argparse.ArgumentParser:
    p = ArgumentParser(description="SSG text-to-image with an unmodified FoundationVision/Infinity checkout; writes "
                                   "a PNG grid. The model flags are those of the checkout's tools/run_infinity.py "
                                   "(shown with --upstream PATH --help).")
    p.add_argument("--upstream", type=Path, required=True,
                   help="root folder of your FoundationVision/Infinity checkout (the one holding infinity/ and tools/)")
    p.add_argument("--prompt", action="append", default=None,
                   help="text prompt; repeat the flag for several images per row. Default: upstream's 'a dog'")
    _upstream.add_grid_args(p, "infinity_upstream_ssg.png")
    add_ssg_args(p)
    if run_infinity is not None:
        run_infinity.add_common_arguments(p.add_argument_group("upstream's flags (tools/run_infinity.py)"))
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--upstream", type=Path)
    known, _ = pre.parse_known_args(argv)
    run_infinity = None
    if known.upstream is not None:   # upstream's flags come from the checkout itself
        _upstream.use_checkout(known.upstream, "infinity.models.infinity", "tools/run_infinity.py", UPSTREAM)
        try:
            run_infinity = _upstream.load_file_module(known.upstream.expanduser().resolve() / "tools" / "run_infinity.py",
                                                      "run_infinity")
        except ImportError as e:
            raise SSGError(f"importing tools/run_infinity.py of --upstream {known.upstream} failed ({e}); install "
                           f"the packages upstream's code imports into this environment") from None
    args = build_parser(run_infinity).parse_args(argv)
    _upstream.check_grid_args(args)
    ri = run_infinity
    try:
        schedule = ri.dynamic_resolution_h_w[args.h_div_w_template][args.pn]["scales"]
    except KeyError:
        raise SSGError(f"--h_div_w_template {args.h_div_w_template} --pn {args.pn}: not in upstream's resolution "
                       f"table (templates: {sorted(float(t) for t in ri.h_div_w_templates)})") from None
    schedule = [(1, h, w) for _, h, w in schedule]   # as upstream's run_infinity.py main
    ssg, betas = make_ssg(args, len(schedule))       # checked before any weight is read
    try:
        cfg = [float(c) for c in args.cfg.split(",")]
    except ValueError:
        raise SSGError(f"--cfg: one number or one per scale, got {args.cfg!r}") from None
    cfg = cfg[0] if len(cfg) == 1 else cfg
    prompts = args.prompt or ["a dog"]

    text_tokenizer, text_encoder = ri.load_tokenizer(t5_path=args.text_encoder_ckpt)
    vae = ri.load_visual_tokenizer(args)
    infinity = ri.load_transformer(vae, args)

    def sample(prompt: str, hook) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available()), torch.no_grad(), \
                (enable_ssg(infinity, hook) if hook is not None else contextlib.nullcontext()):
            img = ri.gen_one_img(infinity, vae, text_tokenizer, text_encoder, prompt, g_seed=args.seed, gt_leak=0,
                                 gt_ls_Bl=None, cfg_list=cfg, tau_list=args.tau, scale_schedule=schedule,
                                 cfg_insertion_layer=[args.cfg_insertion_layer], vae_type=args.vae_type,
                                 sampling_per_bits=args.sampling_per_bits,
                                 enable_positive_prompt=args.enable_positive_prompt)
        return img.flip(-1).permute(2, 0, 1).float().div(255).cpu()   # (H, W, 3) uint8 BGR -> (3, H, W) RGB

    what = _upstream.save_comparison(args.out, lambda hook: torch.stack([sample(p, hook) for p in prompts]), ssg,
                                     args.compare, nrow=len(prompts), zoom=args.zoom)
    print(f"wrote {args.out} ({what}: {len(prompts)} prompt(s), seed {args.seed}, {len(schedule)} scales, "
          f"beta {betas})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
