"""How far each golden token or bit is from flipping, and how far other CPUs move the logits.

    python scripts/golden_margins.py            # margins of the six golden cases, in this process
    python scripts/golden_margins.py --matrix   # the same under every CPU kernel family x thread count

Every sampled token (VAR, HART) or bit (Infinity) is decided by a race margin and a filter margin, in units
of a logit difference (definitions: ssg_core/margins.py); a logit change d can flip it only where its
margin is below 2 d. `--matrix` runs this script again under the kernel families default/avx2/avx512 x
1/2/3 threads (each in a subprocess) and compares every run with the first: the largest change of a
sampler-input logit, the largest change S of any decision's margin (recomputed from that run's logits
with the same random numbers), and the smallest fraction of a margin left. A case is safe on such CPUs
when its smallest margin M >> S. The numbers are in docs/reproducibility.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.errors import SSGError
from ssg_core.margins import Draw, decision_margins, is_exponential_race, spy_sampler

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"
MODELS = ("var", "infinity", "hart")


# ---------------------------------------------------------------- the golden cases
@dataclass
class CaseRun:
    name: str
    draws: list[Draw]
    tokens_match: bool                      # every token / bit equals the golden file's
    golden_diff: dict[str, float] = field(default_factory=dict)  # max |ours - golden| per array group


def _maxabs(a, b) -> float:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return float(np.abs(a.astype(np.float64) - np.asarray(b).astype(np.float64)).max())


def _diffs(pairs: list[tuple[str, object, object]]) -> dict[str, float]:
    """Max |ours - golden| per group name (several arrays may share a group, e.g. all scales' logits)."""
    out: dict[str, float] = {}
    for name, ours, ref in pairs:
        out[name] = max(out.get(name, 0.0), _maxabs(ours, ref))
    return out


def var_runs(gdir: Path) -> list[CaseRun]:
    import VAR.models as models
    import VAR.models.var as var_module
    from ssg_core import SSG
    from ssg_core.evaluation import to_uint8_hwc
    case = json.loads((gdir / "case.json").read_text())
    b = case["var"]["d2"]["builder"]["kwargs"]
    vae, var = models.load_vae_var(gdir / "vae_tiny.pth", gdir / "var_tiny_d2.pth", depth=b["depth"],
                                   patch_nums=b["patch_nums"], shared_aln=b["shared_aln"], V=b["V"], Cvae=b["Cvae"],
                                   ch=b["ch"], num_classes=b["num_classes"])
    runs = []
    for spec in case["cases"]:
        z = np.load(gdir / spec["file"])
        ssg = SSG(beta=spec["ssg_beta"]) if spec["ssg_beta"] else None
        seen, real_decode = {}, vae.fhat_to_img

        def decode(f_hat):  # keep the accumulated latent
            seen["fhat"] = f_hat.clone()
            return real_decode(f_hat)

        vae.fhat_to_img = decode
        try:
            with spy_sampler(var_module, "sample_with_top_k_top_p_") as draws, torch.inference_mode():
                image = var.autoregressive_infer_cfg(spec["B"], torch.tensor(spec["labels"]), g_seed=spec["g_seed"],
                                                     cfg=spec["cfg"], top_k=spec["top_k"], top_p=spec["top_p"],
                                                     more_smooth=spec["more_smooth"], ssg=ssg)
        finally:
            del vae.fhat_to_img
        match = all(torch.equal(d.chosen, torch.from_numpy(z[f"tokens_s{k}"]).reshape(-1)) for k, d in enumerate(draws))
        pairs = [("fhat", seen["fhat"], z["fhat"]), ("image", image, z["image"]),
                 ("image_uint8", to_uint8_hwc(image), z["image_uint8"])]
        if ssg is None:
            pairs += [("logits", draws[k].logits, z[f"logits_s{k}"].reshape(-1, 4096)) for k in (0, 1)]
        else:
            pairs += [("guided", draws[2].logits, z["guided_s2"].reshape(-1, 4096))]
        runs.append(CaseRun("VAR " + ("SSG" if ssg else "plain"), draws, match, _diffs(pairs)))
    return runs


def infinity_runs(gdir: Path) -> list[CaseRun]:
    import Infinity.infinity.models.infinity as inf_module
    from Infinity.infinity.models.bsq_vae.vae import vae_model
    from ssg_core import SSG
    vae = vae_model(str(gdir / "infinity_vae_tiny.pth"), 'dynamic', 32, 2 ** 32, patch_size=16,
                    encoder_ch_mult=[1, 2, 1, 1, 1], decoder_ch_mult=[1, 2, 1, 1, 1], base_ch=32)
    # the keyword set of upstream's tools/run_infinity.py: load_infinity, with the widths of case.json
    model = inf_module.Infinity(
        vae, text_channels=2048, text_maxlen=512, shared_aln=True, raw_scale_schedule=None, checkpointing='full-block',
        customized_flash_attn=False, fused_norm=True, pad_to_multiplier=128, use_flex_attn=False,
        add_lvl_embeding_only_first_block=1, use_bit_label=1, rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2,
        pn='0.06M', apply_spatial_patchify=0, inference_mode=True, train_h_div_w_list=[1.0], depth=2, embed_dim=64,
        num_heads=4, drop_path_rate=0.1, mlp_ratio=4, block_chunks=2).eval().requires_grad_(False)
    model.load_state_dict(torch.load(str(gdir / "infinity_tiny.pth"), weights_only=True), strict=True)
    runs = []
    for file in ("expected.npz", "expected_ssg.npz"):
        z = np.load(gdir / file)
        ssg = SSG(beta=[float(b) for b in z["beta_list"]]) if "beta_list" in z else None
        label = (torch.from_numpy(z['kv_compact']), z['lens'].tolist(), torch.from_numpy(z['cu_seqlens_k']),
                 int(z['max_seqlen_k']))
        cap: dict = {}
        with spy_sampler(inf_module, "sample_with_top_k_top_p_also_inplace_modifying_logits_") as draws:
            _, _, img = model.autoregressive_infer_cfg(
                vae=vae, scale_schedule=[tuple(int(v) for v in s) for s in z['scale_schedule']], label_B_or_BLT=label,
                B=len(z['lens']), g_seed=1, cfg_list=z['cfg_list'].tolist(), tau_list=z['tau_list'].tolist(),
                top_k=900, top_p=0.97, returns_vemb=1, cfg_insertion_layer=[0], vae_type=32, ret_img=True, ssg=ssg,
                capture=cap)
        n = len(z['scale_schedule'])
        match = all(np.array_equal(cap['bits'][k].numpy(), z[f'bits_{k}']) for k in range(n))
        pairs = [("logits", cap['logits'][k], z[f'logits_{k}']) for k in range(n)]
        if ssg is not None:
            pairs += [("guided", cap['guided_logits'][k], z[f'guided_logits_{k}']) for k in range(1, n)]
        pairs += [("summed_codes", cap['summed_codes'], z['summed_codes']),
                  ("image_float", cap['image_float'], z['image_float']), ("image_uint8", img, z['image_bgr'])]
        runs.append(CaseRun("Infinity " + ("SSG" if ssg else "plain"), draws, match, _diffs(pairs)))
    return runs


def hart_runs(gdir: Path) -> list[CaseRun]:
    import hart.modules.models.transformer.hart_transformer_t2i as hart_module
    from ssg_core import SSG
    from ssg_core.evaluation import to_uint8_hwc
    model = hart_module.HARTForT2I.from_pretrained(gdir / "checkpoint" / "llm")
    base = dict(np.load(gdir / "expected.npz"))
    runs = []
    for file in ("expected.npz", "expected_ssg.npz"):
        z = dict(np.load(gdir / file))
        ssg = SSG(beta=[float(b) for b in z["ssg_beta"]]) if "ssg_beta" in z else None
        torch.manual_seed(int(z["torch_seed"]))  # the residual diffusion draws from the global generator
        np.random.seed(int(z["numpy_seed"]))
        trace: dict = {}
        with spy_sampler(hart_module, "sample_with_top_k_top_p_") as draws, torch.inference_mode():
            image = model.autoregressive_infer_cfg(
                B=2, label_B=torch.from_numpy(base["context_tensor"]), g_seed=int(z["g_seed"]), cfg=float(z["cfg"]),
                more_smooth=bool(z["more_smooth"]), context_position_ids=torch.from_numpy(z["context_position_ids"]),
                context_mask=torch.from_numpy(z["context_mask"]), ssg=ssg, trace=trace)
        K = len(z["patch_nums"])
        match = all(np.array_equal(trace["tokens"][k].numpy(), z[f"tokens_s{k}"]) for k in range(K))
        pairs = [("logits", trace["logits"][k][..., :8], z[f"logits_c8_s{k}"]) for k in range(K)]
        if ssg is not None:
            pairs += [("guided", trace["guided"][k][..., :8], z[f"guided_c8_s{k}"]) for k in range(K)]
        pairs += [("fhat", trace["fhat"][0], z["fhat"]), ("residual", trace["residual"][0], z["residual"]),
                  ("image", image, z["image"]), ("image_uint8", to_uint8_hwc(image), z["image_uint8"])]
        runs.append(CaseRun("HART " + ("SSG" if ssg else "plain"), draws, match, _diffs(pairs)))
    return runs


RUNNERS = {"var": var_runs, "infinity": infinity_runs, "hart": hart_runs}

# What a CPU of each kernel family computes differently, as far as one machine can imitate it: torch's own
# kernels (ATEN_CPU_CAPABILITY), oneDNN's convolutions (ONEDNN_MAX_CPU_ISA) and MKL's matrix products
# (MKL_CBWR). .ci/run sets the same variables for its portability passes.
KERNEL_ENV = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
}


def run_cases(golden: Path = GOLDEN, models=MODELS) -> list[CaseRun]:
    """Run the plain and SSG golden case of each model, recording every draw. Checks that the exponential
    race reproduces every draw (the reading of torch.multinomial the golden READMEs state)."""
    runs = []
    for m in models:
        if not (golden / m).is_dir():
            raise SSGError(f"golden data not found at {golden / m} (--golden)")
        runs += RUNNERS[m](golden / m)
    for r in runs:
        for k, d in enumerate(r.draws):
            if not is_exponential_race(d):
                raise SSGError(f"{r.name}, scale {k}: torch.multinomial is not the exponential race on this torch")
    return runs


# ---------------------------------------------------------------- reports
def summary(runs: list[CaseRun]) -> dict:
    """Per case: smallest race / filter margin per scale, and which scale holds the smallest margin."""
    out = {}
    for r in runs:
        race, filt = zip(*(decision_margins(d) for d in r.draws))
        out[r.name] = {"tokens_match_golden": r.tokens_match, "golden_diff": r.golden_diff,
                       "race_per_scale": [float(x.min()) for x in race],
                       "filter_per_scale": [float(x.min()) for x in filt],
                       "decisions": sum(len(x) for x in race)}
    return out


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2e}"


def print_margins(s: dict) -> None:
    print("case           decisions  min race margin (scale)  min filter margin (scale)  tokens = golden")
    for name, v in s.items():
        race, filt = v["race_per_scale"], v["filter_per_scale"]
        kr, kf = int(np.argmin(race)), int(np.argmin(filt))
        print(f"{name:<14} {v['decisions']:>9}  {_fmt(race[kr]):>15} ({kr})  {_fmt(filt[kf]):>17} ({kf})        "
              f"{'yes' if v['tokens_match_golden'] else 'NO'}")


def compare_with(runs: list[CaseRun], base_file: Path) -> dict:
    """Per case, against the saved base run (whose tokens must be the same): the largest change of any
    sampler-input logit, the largest change of any decision's margin, the smallest fraction of a margin
    that was left (1: untouched; 0 or less: the token flipped), how many decisions have a margin below the
    largest change, and how many flips to expect if the same margin changes had hit decisions at random
    (sum over changes of the share of margins below it)."""
    base = torch.load(base_file, weights_only=True)
    out = {}
    for r in runs:
        logit_diff, left, same, margins, shifts = 0.0, 1.0, True, [], []
        for k, d in enumerate(r.draws):
            ref = base[f"{r.name}/{k}"]
            if not torch.equal(d.chosen, ref["chosen"]):
                same = False
                break  # later scales follow other tokens: nothing to compare
            logit_diff = max(logit_diff, float((d.logits - ref["logits"]).abs().max()))
            m0, m1 = torch.minimum(ref["race"], ref["filter"]), torch.minimum(*decision_margins(d))
            both = torch.isfinite(m0) & torch.isfinite(m1)
            margins.append(m0[torch.isfinite(m0)])
            shifts.append((m1 - m0)[both].abs())
            if both.any():
                left = min(left, float((m1[both] / m0[both]).min()))
        margins, shifts = torch.cat(margins).sort().values, torch.cat(shifts)
        shift = float(shifts.max()) if len(shifts) else 0.0
        below = torch.searchsorted(margins, shifts.contiguous()).double() / max(1, len(margins))
        out[r.name] = {"tokens_equal_base": same, "max_logit_diff": logit_diff, "max_margin_change": shift,
                       "min_margin_left": left, "decisions": len(margins),
                       "margins_below_max_change": int(torch.searchsorted(margins, torch.tensor([shift]).double())),
                       "expected_flips_at_random": float(below.sum())}
    return out


def save_base(runs: list[CaseRun], path: Path) -> None:
    data = {}
    for r in runs:
        for k, d in enumerate(r.draws):
            race, filt = decision_margins(d)
            data[f"{r.name}/{k}"] = {"logits": d.logits, "chosen": d.chosen, "race": race, "filter": filt}
    torch.save(data, path)


def matrix(args) -> int:
    """Run this script under every kernel family x thread count; print the table; 1 if a token changed."""
    combos = [(k, t) for k in args.kernels.split(",") for t in args.thread_counts.split(",")]
    if set(k for k, _ in combos) - set(KERNEL_ENV):
        raise SSGError(f"--kernels: choose from {', '.join(KERNEL_ENV)}")
    if not all(t.isdigit() and int(t) > 0 for _, t in combos):
        raise SSGError(f"--thread-counts: positive integers, got {args.thread_counts!r}")
    cap = torch.backends.cpu.get_cpu_capability()
    try:  # the CPU's own flags where Linux shows them (torch's pick follows ATEN_CPU_CAPABILITY if set)
        avx512 = " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        avx512 = "AVX512" in cap
    print(f"this CPU: torch picks {cap} kernels; AVX-512 {'present' if avx512 else 'absent'}")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.pt"
        for i, (kernel, threads) in enumerate(combos):
            out = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, __file__, "--golden", str(args.golden), "--models", args.models, "--threads", threads,
                   "--json", str(out), "--save" if i == 0 else "--against", str(base)]
            env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR")}
            env.update(KERNEL_ENV[kernel])
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode:
                raise SSGError(f"run with ATEN_CPU_CAPABILITY={kernel}, {threads} threads failed: "
                               f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
            rows.append(json.loads(out.read_text()) | {"family": kernel, "env": KERNEL_ENV[kernel]})
    first = rows[0]
    print(f"base run: {first['kernels']} kernels, {first['threads']} threads; per case: tokens equal to the golden "
          "file; against the base run: the largest change of a sampler-input logit and of a decision's margin, and "
          "the smallest fraction of a margin left")
    for row in rows:
        env = " ".join(f"{k}={v}" for k, v in row["env"].items())
        print(f"\n{row['family']}: torch uses {row['kernels']} kernels, {row['threads']} threads ({env})")
        for name, v in row["margins"].items():
            c = row.get("compare", {}).get(name)
            failed |= not v["tokens_match_golden"] or (c is not None and not c["tokens_equal_base"])
            extra = "" if c is None else (f"  max |d logit| {_fmt(c['max_logit_diff'])}  max |d margin| "
                                          f"{_fmt(c['max_margin_change'])}  margin left >= {c['min_margin_left']:.3f}"
                                          + ("" if c["tokens_equal_base"] else "  TOKENS DIFFER FROM BASE"))
            print(f"  {name:<14} tokens = golden: {'yes' if v['tokens_match_golden'] else 'NO'}{extra}")
    print("\nlargest |ours - golden| over all runs, per array:")
    for name in first["margins"]:
        groups = sorted({g for row in rows for g in row["margins"][name]["golden_diff"]})
        worst = {g: max(row["margins"][name]["golden_diff"][g] for row in rows) for g in groups}
        print(f"  {name:<14} " + ", ".join(f"{g} {_fmt(v)}" for g, v in worst.items()))
    print("\nover all runs: smallest margin M (base run), largest logit change, largest margin change S, M / S, "
          "smallest fraction of a margin left, decisions with a margin below S, flips to expect if the margin "
          "changes had hit decisions at random")
    for name, v in first["margins"].items():
        margin = min(min(v["race_per_scale"]), min(v["filter_per_scale"]))
        cmp = [row["compare"][name] for row in rows[1:]] or [{"max_logit_diff": 0.0, "max_margin_change": 0.0,
                                                              "min_margin_left": 1.0, "margins_below_max_change": 0,
                                                              "expected_flips_at_random": 0.0}]
        shift = max(c["max_margin_change"] for c in cmp)
        print(f"  {name:<14} M {_fmt(margin)}  max |d logit| {_fmt(max(c['max_logit_diff'] for c in cmp))}  "
              f"S {_fmt(shift)}  M/S {_fmt(margin / shift if shift else math.inf)}  "
              f"left >= {min(c['min_margin_left'] for c in cmp):.3f}  "
              f"below S: {max(c['margins_below_max_change'] for c in cmp)} of {v['decisions']}  "
              f"expected flips <= {max(c['expected_flips_at_random'] for c in cmp):.2f}")
    if args.json:
        from ssg_core.evaluation import write_json
        write_json(args.json, rows)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0] + " (the golden data's cases; needs ../shared/golden)")
    p.add_argument("--golden", type=Path, default=GOLDEN, help="folder holding var/, infinity/, hart/")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of var, infinity, hart")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--matrix", action="store_true",
                   help="run under every --kernels x --thread-counts combination and compare them")
    p.add_argument("--kernels", default="default,avx2,avx512",
                   help="kernel families for --matrix (each sets ATEN_CPU_CAPABILITY, and for default and avx2 also "
                        "oneDNN's and MKL's instruction sets)")
    p.add_argument("--thread-counts", default="1,2,3", help="thread counts for --matrix")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    p.add_argument("--save", type=Path, default=None, help=argparse.SUPPRESS)     # internal: --matrix's base run
    p.add_argument("--against", type=Path, default=None, help=argparse.SUPPRESS)  # internal: compare with it
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(MODELS):
        raise SSGError(f"--models: choose from {', '.join(MODELS)}, got {args.models!r}")
    if args.json is not None:
        from ssg_core.evaluation import check_output_path
        check_output_path(args.json, "--json")
    if args.matrix:
        return matrix(args)
    if args.threads is not None:
        if args.threads < 1:
            raise SSGError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    runs = run_cases(args.golden, models)
    result = {"kernels": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
              "margins": summary(runs)}
    if args.save is not None:
        save_base(runs, args.save)
    if args.against is not None:
        result["compare"] = compare_with(runs, args.against)
    print(f"{result['kernels']} kernels, {result['threads']} threads; margins in logit-difference units "
          "(a token can flip only where a logit of its row moves by half its margin)")
    print_margins(result["margins"])
    if args.json:
        from ssg_core.evaluation import write_json
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
