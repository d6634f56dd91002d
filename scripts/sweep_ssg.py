"""Sweep SSG's beta and schedule on any of our models: paired metrics per setting, a table and a plot.

    python scripts/sweep_ssg.py --model demo --betas 0.15,0.3,0.6 --schedules constant,last:1,last:2 \\
        --seeds 0,1,2,3,4 --out results/sweep_demo
    torchrun --nproc_per_node 8 scripts/sweep_ssg.py --model var-d16 --ref VIRTUAL_imagenet256_labeled.npz \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth --num-per-class 10 --out results/sweep_d16
    python scripts/sweep_ssg.py --model infinity-2b --prompts prompts.txt --ref ref.npz --out results/sweep_inf -- --pn 1M
    python scripts/sweep_ssg.py --model hart-0.7b --prompts prompts.txt --ref ref.npz --out results/sweep_hart

The grid: every `--schedules` entry times every `--betas` value, plus the entries of a `--grid` JSON
file, plus the baseline (beta 0). A schedule entry is a shape (constant, linear-decay, linear-increase)
and/or a guided window, joined by "@": `constant`, `last:1` (the last scale only), `from:5` (scales 5 on),
`linear-increase@last:3`. `ssg_core.SSG` defines the per-scale values (shape spread over the window).

Pairing: image i of seed s is sampled from `image_seed(s, i)` in every setting, with the same class or
prompt, so the per-seed difference to the baseline removes most of the sampling noise; the table gives
it as mean +- std over seeds and counts the seeds where the setting beat the baseline.

Resuming: after every (setting, seed) the result is added to `<out>/results.json` (atomically) under its
full settings key (model, checkpoints, sampling flags, metric, number of images, per-scale betas, DSE
options); a rerun skips every (setting, seed) already there, so a killed sweep loses at most one.

Metrics (pluggable, `--metric`):
* digits (the demo's default): the shipped digits classifier's FD, accuracy, classifier score,
  precision, recall (as `scripts/demo_eval.py`), offline;
* inception (the real models' default): FID, Inception Score (one split), precision and recall (k=3)
  of Inception-v3 pool features against a reference batch `--ref` (an .npz with `arr_0` uint8 NHWC,
  e.g. the standard ImageNet reference batch), through torch-fidelity's Inception
  (`pip install -e ".[fid]"`). Its weights are downloaded on first use, or given with
  `--inception-weights` (offline). Reference features are cached in `<out>/`.
Several GPUs: under torchrun every process samples and featurises its share of the images of each
(setting, seed); rank 0 gathers the features, scores and writes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssg_core import SSG
from ssg_core.cli import ArgumentParser, format_betas, main_guard
from ssg_core.errors import SSGError
from ssg_core.evaluation import (_atomic_write, check_output_path, image_seed, init_distributed, shard,
                                 to_uint8_hwc, write_json)
from ssg_core.dse import MODES, PRIORS
from ssg_core.guidance import CACHES, SCHEDULES
from ssg_core.hub import sha256

RESULTS = "results.json"
VAR_MODELS = ("demo", "var-d16", "var-d20", "var-d24", "var-d30", "var-d36")
INFINITY_MODELS = {"infinity-2b": "infinity_2b", "infinity-8b": "infinity_8b", "infinity-125m": "infinity_layer12",
                   "infinity-custom": "infinity_custom"}  # custom: --model_path/--vae_path after --
HART_MODELS = ("hart-0.7b",)
DEFAULT_BETAS = "0.1,0.25,0.5,1"
DEFAULT_SCHEDULES = "constant,last:1,last:2"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's Inception-v3 (TF FID graph)


# ---------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Setting:
    """One SSG setting: a beta with a schedule shape and window, or an explicit per-scale list."""
    beta: float = 0.0
    schedule: str = "constant"
    from_scale: int | None = None
    betas_list: tuple[float, ...] | None = None
    label: str | None = None

    def ssg(self, dse: dict) -> SSG:
        if self.betas_list is not None:
            return SSG(list(self.betas_list), **dse)
        return SSG(self.beta, schedule=self.schedule, from_scale=self.from_scale, **dse)

    @property
    def schedule_name(self) -> str:
        """The curve this setting belongs to in the plot (shape and window, without beta)."""
        if self.betas_list is not None:
            return "per-scale list"
        window = ("" if self.from_scale is None else
                  f"last {-self.from_scale}" if self.from_scale < 0 else f"from scale {self.from_scale}")
        if not window:
            return self.schedule
        return window if self.schedule == "constant" else f"{self.schedule}, {window}"

    def name(self, betas: list[float] | None = None) -> str:
        """The table's name for it: "baseline" when every resolved beta is 0, else its label or description."""
        if betas is not None and not any(betas):
            return "baseline"
        if self.label:
            return self.label
        if self.betas_list is not None:
            return f"beta {format_betas(list(self.betas_list))}"
        return f"{self.schedule_name}, beta {self.beta:g}"


def parse_schedule(text: str) -> tuple[str, int | None]:
    """'constant' / 'last:2' / 'from:5' / 'linear-increase@last:3' -> (shape, from_scale)."""
    shape, from_scale = "constant", None
    for part in (p.strip() for p in text.split("@")):
        if part in SCHEDULES:
            shape = part
            continue
        kind, _, num = part.partition(":")
        if kind not in ("last", "from") or not num.strip().lstrip("-").isdigit():
            raise SSGError(f"--schedules: cannot read {text!r}; write a shape ({', '.join(SCHEDULES)}) and/or a "
                           f"window last:N or from:K, joined by @ (e.g. linear-increase@last:3)")
        n = int(num)
        if n < 1:
            raise SSGError(f"--schedules {text!r}: {kind}:{n} must be at least 1")
        from_scale = -n if kind == "last" else n
    return shape, from_scale


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SSGError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if any(not np.isfinite(v) for v in values):
        raise SSGError(f"{what}: values must be finite, got {text!r}")
    return values


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SSGError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise SSGError(f"{what}: give at least one value")
    return values


def read_grid_file(path: Path) -> list[Setting]:
    """A JSON list of settings: {"betas": [0, ..., b]} (one value per scale) or {"beta": b, "schedule":
    "constant", "from_scale": k}; each may carry a "label" for the table."""
    try:
        items = json.loads(Path(path).read_text())
    except OSError as e:
        raise SSGError(f"--grid {path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise SSGError(f"--grid {path}: not valid JSON ({e})") from None
    if not isinstance(items, list):
        raise SSGError(f"--grid {path}: expected a JSON list of settings")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not ({"beta", "betas"} & set(it)) or set(it) - {
                "beta", "betas", "schedule", "from_scale", "label"}:
            raise SSGError(f"--grid {path}: entry {i} must be an object with \"betas\" (a per-scale list) or "
                           f"\"beta\" (+ optional \"schedule\", \"from_scale\"), and an optional \"label\"")
        try:
            if "betas" in it:
                s = Setting(betas_list=tuple(float(b) for b in it["betas"]), label=it.get("label"))
            else:
                s = Setting(beta=float(it["beta"]), schedule=it.get("schedule", "constant"),
                            from_scale=it.get("from_scale"), label=it.get("label"))
            s.ssg({})  # checks the values now
        except (TypeError, ValueError):
            raise SSGError(f"--grid {path}: entry {i} holds a value that is not a number") from None
        except SSGError as e:
            raise SSGError(f"--grid {path}: entry {i}: {e}") from None
        out.append(s)
    return out


def build_grid(args) -> list[Setting]:
    """Baseline first, then --schedules x --betas, then --grid entries."""
    grid = [Setting()]
    betas = _floats(args.betas, "--betas")
    for spec in (t.strip() for t in args.schedules.split(",") if t.strip()):
        shape, from_scale = parse_schedule(spec)
        grid += [Setting(beta=b, schedule=shape, from_scale=from_scale) for b in betas if b != 0]
    if args.grid is not None:
        grid += read_grid_file(args.grid)
    return grid


# ---------------------------------------------------------------- metrics
class DigitsMetric:
    """The demo's metrics from the shipped digits classifier (see `VAR.demo.DigitsScorer`)."""
    name, primary = "digits", "fd"
    columns = ("fd", "accuracy", "classifier_score", "precision", "recall")

    def __init__(self, device: torch.device):
        from VAR.demo import DigitsScorer
        self.scorer = DigitsScorer(device)

    def describe(self) -> dict:
        return {"name": self.name, "reference": "all 1797 sklearn digits"}

    def features(self, images01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 128) classifier features."""
        return self.scorer.features(images01.float() * 2 - 1)

    def score(self, feats: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        return self.scorer.score_features(feats, labels)


class InceptionMetric:
    """FID, Inception Score (one split), precision/recall (k=3) against a reference batch.

    `extractor`: torch-fidelity's feature-extractor interface: a module taking uint8 images (B, 3, H, W)
    and returning a tuple (pool features (B, D), logits (B, C)) for features_list ['2048',
    'logits_unbiased']; any module with that interface works (the tests use a tiny one).
    Reference features are computed once and cached in `cache_dir`.
    """
    name, primary = "inception", "fid"
    columns = ("fid", "inception_score", "precision", "recall")

    def __init__(self, extractor, ref: Path, cache_dir: Path, device: torch.device, extractor_name: str,
                 batch_size: int = 100, is_main: bool = True):
        self.extractor, self.device, self.batch_size = extractor.to(device), device, batch_size
        self.ref, self.extractor_name = Path(ref), extractor_name
        self.ref_sha = sha256(self.ref)
        self.cache = Path(cache_dir) / f"reference_{self.ref_sha[:16]}_{extractor_name}.npz"
        self.ref_feats = self._reference_features() if is_main else None

    def describe(self) -> dict:
        return {"name": self.name, "extractor": self.extractor_name, "reference": str(self.ref),
                "reference_sha256": self.ref_sha}

    @torch.no_grad()
    def _extract(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        for i in range(0, len(images_uint8), self.batch_size):
            f, lg = self.extractor(images_uint8[i:i + self.batch_size].to(self.device))
            feats.append(f.float().cpu())
            logits.append(lg.float().cpu())
        return torch.cat(feats), torch.cat(logits)

    def _reference_features(self) -> torch.Tensor:
        if self.cache.is_file():
            with np.load(self.cache) as z:
                return torch.from_numpy(z["features"])
        with np.load(self.ref) as z:
            if "arr_0" not in z:
                raise SSGError(f"--ref {self.ref}: no 'arr_0' array (expected uint8 images (N, H, W, 3))")
            arr = z["arr_0"]
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) < 4:
            raise SSGError(f"--ref {self.ref}: expected uint8 images (N, H, W, 3) with N >= 4, got {arr.dtype} "
                           f"{arr.shape}")
        feats = torch.cat([self._extract(torch.from_numpy(arr[i:i + 1000]).permute(0, 3, 1, 2))[0]
                           for i in range(0, len(arr), 1000)])
        _atomic_write(self.cache, lambda f: np.savez(f, features=feats.numpy()))
        return feats

    def features(self, images01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D + C): pool features and logits side by side, from the uint8
        images a PNG would hold (x255, truncated, as the samplers write them)."""
        u8 = torch.from_numpy(to_uint8_hwc(images01)).permute(0, 3, 1, 2)
        f, lg = self._extract(u8)
        return torch.cat([f, lg], dim=1)

    def score(self, feats: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        from VAR import metrics
        D = self.ref_feats.shape[1]
        pool, logits = feats[:, :D], feats[:, D:]
        p, r = metrics.precision_recall(self.ref_feats, pool, k=3)
        return {"fid": metrics.frechet_distance(self.ref_feats, pool),
                "inception_score": metrics.classifier_score(logits.double().softmax(-1)),
                "precision": p, "recall": r}


def load_inception(weights: Path | None):
    """torch-fidelity's Inception-v3 returning (pool 2048, logits_unbiased); one-line errors when the package
    is missing or its weights cannot be fetched. A given weight file is checked with a weights-only load first
    (torch-fidelity itself unpickles it fully)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    except ImportError:
        raise SSGError("the inception metric needs torch-fidelity: pip install -e \".[fid]\" (or pip install "
                       "torch-fidelity)") from None
    if weights is not None:
        from ssg_core.hub import load_state_dict
        if not Path(weights).is_file():
            raise SSGError(f"--inception-weights {weights} does not exist")
        load_state_dict(weights)  # a file that is not a plain tensor dict fails here, in one line, unexecuted
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                           feature_extractor_weights_path=None if weights is None else str(weights))
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        if weights is not None:
            raise SSGError(f"--inception-weights {weights}: not torch-fidelity's Inception-v3 weights "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''})") from None
        raise SSGError(f"cannot fetch torch-fidelity's Inception weights ({type(e).__name__}); download "
                       f"{URL_INCEPTION_V3} on a machine with internet and pass --inception-weights FILE") from None


# ---------------------------------------------------------------- models
@dataclass
class Target:
    """A model to sweep: `generate(indices, seed, ssg)` -> images (B, 3, H, W) in [0, 1] for those image
    indices, image i from `image_seed(seed, i)` with its own class or prompt; `labels` the class of every
    index (None for text-to-image)."""
    name: str
    num_scales: int
    num_images: int
    settings: dict
    generate: object
    labels: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def var_target(args, device: torch.device) -> Target:
    """VAR or the demo, through `VAR.cli_args` (the flags and loading of VAR/sample_ssg.py)."""
    from VAR import cli_args as C
    C.check_sampling(args.cfg, args.top_k, args.top_p)
    choice = C.model_choice(args)
    dtype = C.pick_dtype(args.dtype, device)
    vae, var, info = C.load_var_models(args, choice, device)
    classes = (C.parse_classes(args.classes, var.num_classes) if args.classes is not None
               else list(range(var.num_classes)))
    per_class = args.num_per_class or (50 if choice.name == "demo" else 10)
    labels = torch.tensor(classes).repeat_interleave(per_class)

    @torch.no_grad()
    def generate(indices: list[int], seed: int, ssg: SSG | None) -> torch.Tensor:
        lab = labels[indices].to(device)
        seeds = [image_seed(seed, i) for i in indices]
        with torch.inference_mode(), C.autocast(device, dtype):
            img = var.autoregressive_infer_cfg(len(indices), lab, g_seed=seeds, cfg=args.cfg, top_k=args.top_k,
                                               top_p=args.top_p, more_smooth=args.more_smooth, ssg=ssg)
        return img.float().cpu()

    settings = {"model": choice.name, "architecture": {k: v for k, v in info.items() if k != "checkpoints"},
                "checkpoint_sha256": C.checkpoint_hashes(info), "classes": classes, "num_per_class": per_class,
                "class_rule": "classes[index // num_per_class]", "cfg": args.cfg, "top_k": args.top_k,
                "top_p": args.top_p, "more_smooth": args.more_smooth, "dtype": dtype}
    return Target(choice.name, len(var.patch_nums), len(labels), settings, generate, labels, info)


def read_prompt_lines(path: Path | None, limit: int | None) -> list[str]:
    if path is None:
        raise SSGError("text-to-image models need --prompts FILE (one prompt per line)")
    p = Path(path)
    if not p.is_file():
        raise SSGError(f"--prompts {p} does not exist")
    prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise SSGError(f"--prompts {p} holds no prompts")
    return prompts[:limit] if limit else prompts


def infinity_target(args, device: torch.device, passthrough: list[str]) -> Target:
    """Infinity through Infinity/tools/run_infinity.py: its flags (after --), its loading and `sample`."""
    from Infinity.tools import run_infinity as R
    prompts = read_prompt_lines(args.prompts, args.num_images)
    rargs = R.build_parser().parse_args(["--model_type", INFINITY_MODELS[args.model], "--prompt_file",
                                         str(args.prompts), *passthrough])
    _no_ssg_flags(rargs)
    R.resolve_settings(rargs)
    setup = R.load_all(rargs, device)

    def generate(indices: list[int], seed: int, ssg: SSG | None) -> torch.Tensor:
        imgs = [R.sample(setup, rargs, prompts[i], image_seed(seed, i), ssg) for i in indices]  # (H, W, 3) uint8
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255

    settings = {"model": args.model, "prompts": prompts, "files": setup.files,
                "scale_schedule": setup.scale_schedule, "cfg_list": setup.cfg_list, "tau_list": setup.tau_list,
                "top_k": rargs.top_k, "top_p": rargs.top_p, "cfg_insertion_layer": rargs.cfg_insertion_layer,
                "negative_prompt": rargs.negative_prompt, "bf16": rargs.bf16}
    return Target(args.model, len(setup.scale_schedule), len(prompts), settings, generate)


def hart_target(args, device: torch.device, passthrough: list[str]) -> Target:
    """HART through hart/sample.py: its flags (after --), its loading and `Sampler`."""
    from hart import sample as H
    prompts = read_prompt_lines(args.prompts, args.num_images)
    hargs = H.build_parser().parse_args(passthrough)
    _no_ssg_flags(hargs)
    llm, text = H.resolve_paths(hargs)
    H.check_against_config(hargs, llm)
    H.check_text_model_folder(text)
    model, tokenizer, text_model = H.load_models(llm, text, hargs.use_ema, device)
    sampler = H.Sampler(hargs, model, tokenizer, text_model, device, announce=False)

    def generate(indices: list[int], seed: int, ssg: SSG | None) -> torch.Tensor:
        sampler.ssg = ssg  # the sweep's setting instead of the one from HART's own --beta flags
        out = []
        for i in indices:
            img = sampler.sample(sampler.encode([prompts[i]]), image_seed(seed, i), with_ssg=ssg is not None)
            out.append(torch.from_numpy(H.to_uint8_upstream(img)).permute(0, 3, 1, 2).float() / 255)  # its PNGs
        return torch.cat(out)

    settings = {"model": args.model, "prompts": prompts, "checkpoints_sha256": H.checkpoint_hashes(llm, hargs.use_ema),
                "cfg": hargs.cfg, "top_p": hargs.top_p, "more_smooth": hargs.more_smooth,
                "max_token_length": hargs.max_token_length, "use_llm_system_prompt": hargs.use_llm_system_prompt,
                "precision": hargs.precision}
    return Target(args.model, len(model.patch_nums), len(prompts), settings, generate)


def _no_ssg_flags(model_args) -> None:
    """The sweep's grid sets SSG: the sampler's own SSG flags after -- would be silently ignored, so refuse them."""
    if (model_args.beta not in (None, "0.5") or model_args.beta_schedule != "constant"
            or model_args.beta_from_scale is not None or model_args.beta_last_scales is not None
            or getattr(model_args, "compare", False)):
        raise SSGError("give the SSG grid with --betas/--schedules/--grid, not the sampler's --beta, "
                       "--beta-schedule, --beta-from-scale, --beta-last-scales or --compare after --")


# ---------------------------------------------------------------- running
def settings_key(target: Target, metric, betas: list[float], dse: dict) -> str:
    """Everything that decides a result (the seed aside), as canonical JSON."""
    ssg = {"betas": betas} | (dse if any(betas) else {})
    key = {"target": target.settings, "num_images": target.num_images, "metric": metric.describe(), "ssg": ssg}
    return json.dumps(key, sort_keys=True, default=str)


def load_store(path: Path) -> dict:
    if not path.is_file():
        return {"records": []}
    try:
        store = json.loads(path.read_text())
        assert isinstance(store.get("records"), list)
    except (OSError, ValueError, AssertionError):
        raise SSGError(f"{path} is not a sweep results file; delete it or use another --out") from None
    return store


def gather_features(feats: torch.Tensor, indices: list[int], dist) -> tuple[torch.Tensor, list[int]] | None:
    """All ranks' (features, indices) on rank 0, in index order; None on the other ranks."""
    if dist.world == 1:
        return feats, indices
    parts = [None] * dist.world
    torch.distributed.all_gather_object(parts, (feats.cpu(), indices))
    if not dist.is_main:
        return None
    f = torch.cat([p[0] for p in parts])
    idx = [i for p in parts for i in p[1]]
    order = np.argsort(idx, kind="stable")
    return f[torch.from_numpy(order)], [idx[j] for j in order]


def run_one(target: Target, metric, ssg: SSG | None, seed: int, batch_size: int, dist) -> dict[str, float] | None:
    """Sample this rank's share of the images, featurise, gather; rank 0 returns the metrics."""
    mine = shard(range(target.num_images), dist)
    feats = []
    for i in range(0, len(mine), batch_size):
        feats.append(metric.features(target.generate(mine[i:i + batch_size], seed, ssg)))
    gathered = gather_features(torch.cat(feats) if feats else torch.zeros(0), mine, dist)
    if gathered is None:
        return None
    f, idx = gathered
    if idx != list(range(target.num_images)):
        raise SSGError("internal: gathered image indices are incomplete")
    return metric.score(f, target.labels)


def summarise(store: dict, grid: list[tuple[Setting, list[float], str]], seeds: list[int], metric) -> list[dict]:
    """Per setting: mean/std of every metric over seeds, and the paired difference of the primary metric to
    the baseline (the first grid entry) with the number of seeds where it is better (lower)."""
    by_key = {(r["key"], r["seed"]): r["metrics"] for r in store["records"]}
    base_key = grid[0][2]
    rows = []
    for setting, betas, key in grid:
        runs = [by_key.get((key, s)) for s in seeds]
        if any(r is None for r in runs):
            continue
        row = {"setting": setting, "betas": betas, "name": setting.name(betas), "n": len(seeds)}
        for m in metric.columns:
            v = np.array([r[m] for r in runs])
            row[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        base = [by_key.get((base_key, s)) for s in seeds]
        if key != base_key and all(b is not None for b in base):
            row["diffs"] = {}
            for m in metric.columns:
                d = np.array([r[m] - b[m] for r, b in zip(runs, base)])
                row["diffs"][m] = (float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                                   int((d < 0).sum() if m in LOWER_IS_BETTER else (d > 0).sum()))
            row["diff"] = row["diffs"][metric.primary][:2]
            row["better"] = row["diffs"][metric.primary][2]
        rows.append(row)
    return rows


SHORT = {"fd": "FD", "fid": "FID", "accuracy": "acc", "classifier_score": "CS", "inception_score": "IS",
         "precision": "prec", "recall": "rec"}
LOWER_IS_BETTER = ("fd", "fid")


def markdown_table(rows: list[dict], metric, header: str) -> str:
    p = SHORT[metric.primary]
    text = header + "\n\n| setting | per-scale beta | " + " | ".join(
        f"{SHORT[m]} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metric.columns)
    text += f" | Δ{p} vs baseline, paired | seeds better |\n|---|---|" + "---|" * (len(metric.columns) + 2) + "\n"
    for r in rows:
        cells = [("{:.2f} ± {:.2f}" if m in ("fd", "fid", "classifier_score", "inception_score") else
                  "{:.3f} ± {:.3f}").format(*r[m]) for m in metric.columns]
        diff = "{:+.2f} ± {:.2f}".format(*r["diff"]) if "diff" in r else ""
        better = f"{r['better']} of {r['n']}" if "diff" in r else ""
        text += f"| {r['name']} | {format_betas(r['betas'])} | " + " | ".join(cells) + f" | {diff} | {better} |\n"
    paired = [r for r in rows if "diffs" in r]
    if paired:  # the same seeds and images: these differences carry much less noise than the columns above
        text += ("\nPaired differences to the baseline (setting minus baseline, same seeds; mean ± std over seeds, "
                 "and on how many seeds the setting was better)\n\n| setting | "
                 + " | ".join(f"Δ{SHORT[m]}" for m in metric.columns) + " |\n|---|" + "---|" * len(metric.columns)
                 + "\n")
        for r in paired:
            text += f"| {r['name']} | " + " | ".join(
                ("{:+.2f} ± {:.2f} ({}/{})" if m in ("fd", "fid", "classifier_score", "inception_score") else
                 "{:+.3f} ± {:.3f} ({}/{})").format(*r["diffs"][m], r["n"]) for m in metric.columns) + " |\n"
    return text


def plot(path: Path, rows: list[dict], metric, title: str) -> None:
    """Left: the primary metric against beta, one curve per schedule, the baseline as a line; right: the
    paired difference to the baseline (mean +- std over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    curves: dict[str, list[dict]] = {}
    base = None
    for r in rows:
        if not any(r["betas"]):
            base = r
        elif r["setting"].betas_list is None:
            curves.setdefault(r["setting"].schedule_name, []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    m = metric.primary
    for name, rs in curves.items():
        rs = sorted(rs, key=lambda r: r["setting"].beta)
        b = [r["setting"].beta for r in rs]
        axes[0].errorbar(b, [r[m][0] for r in rs], yerr=[r[m][1] for r in rs], marker="o", capsize=3, label=name)
        if all("diff" in r for r in rs):
            axes[1].errorbar(b, [r["diff"][0] for r in rs], yerr=[r["diff"][1] for r in rs], marker="o", capsize=3,
                             label=name)
    if base is not None:
        axes[0].axhline(base[m][0], color="0.3", ls="--", label="baseline (beta 0)")
        axes[0].axhspan(base[m][0] - base[m][1], base[m][0] + base[m][1], color="0.5", alpha=0.15)
    axes[1].axhline(0, color="0.3", ls="--")
    axes[0].set_ylabel(f"{SHORT[m]} (mean ± std over seeds)")
    axes[1].set_ylabel(f"Δ{SHORT[m]} vs baseline, same seeds")
    # differences near 0 matter most: linear there, logarithmic for the large ones
    small = [abs(r["diff"][0]) for rs in curves.values() for r in rs if "diff" in r]
    if small and max(small) > 10 * min(x for x in small + [1.0] if x > 0):
        axes[1].set_yscale("symlog", linthresh=max(1e-3, float(np.median(small))))
        axes[1].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    betas = sorted({r["setting"].beta for rs in curves.values() for r in rs})
    for ax in axes:
        ax.set_xlabel("beta")
        if betas:
            ax.set_xticks(betas)
            ax.set_xticklabels([f"{b:g}" for b in betas], fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title.replace("; ", "\n", 1), fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from VAR import cli_args as C
    p = ArgumentParser(description="Sweep SSG's beta and schedule: paired metrics per setting, resumable, with a "
                                   "markdown table and a plot. Text-to-image samplers take their own flags after --.",
                       epilog=__doc__.split("\n\n")[1])
    g = p.add_argument_group("grid")
    g.add_argument("--betas", default=DEFAULT_BETAS, help="beta values, combined with every --schedules entry")
    g.add_argument("--schedules", default=DEFAULT_SCHEDULES,
                   help="comma-separated schedules: a shape (constant, linear-decay, linear-increase) and/or a guided "
                        "window (last:N = the last N scales, from:K = scales K on), joined by @, e.g. "
                        "constant,last:1,linear-increase@from:3")
    g.add_argument("--grid", type=Path, default=None,
                   help="JSON file with more settings: a list of {\"betas\": [one value per scale]} or {\"beta\": b, "
                        "\"schedule\": ..., \"from_scale\": k}, each with an optional \"label\"")
    g.add_argument("--dse-mode", choices=MODES, default="bilinear", help="DSE interpolation, for every setting")
    g.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=True, help="DSE rescale, every setting")
    g.add_argument("--prior", choices=PRIORS, default="dse", help="prior type, for every setting")
    g.add_argument("--cache", choices=CACHES, default="raw", help="cached logits, for every setting")
    g = p.add_argument_group("images and metric")
    g.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each setting is sampled with every seed")
    g.add_argument("--num-per-class", type=int, default=None,
                   help="class-conditional models: images per class and seed (default 50 for the demo, 10 for VAR: "
                        "10,000 images over the 1000 classes)")
    g.add_argument("--classes", default=None, help="class-conditional models: comma-separated class ids (default all)")
    g.add_argument("--prompts", type=Path, default=None, help="text-to-image models: a file with one prompt per line")
    g.add_argument("--num-images", type=int, default=None, help="text-to-image models: only the first N prompts")
    g.add_argument("--metric", choices=("digits", "inception"), default=None,
                   help="digits (the demo's classifier; default for --model demo) or inception (FID/IS/precision/"
                        "recall against --ref; default otherwise)")
    g.add_argument("--ref", type=Path, default=None,
                   help="inception metric: reference images, .npz with arr_0 uint8 (N, H, W, 3) (e.g. the standard "
                        "ImageNet reference batch)")
    g.add_argument("--inception-weights", type=Path, default=None,
                   help=f"inception metric: torch-fidelity's {INCEPTION_FILE} (default: downloaded and cached by "
                        "torch-fidelity on first use)")
    g.add_argument("--batch-size", type=int, default=50, help="images per sampling call (does not change results)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--out", type=Path, default=Path("results/sweep"),
                   help="folder for results.json (resumable), table.md, sweep.png and cached reference features")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    C.add_model_args(p)
    model = next(a for a in p._actions if a.dest == "model")  # the VAR flag, widened to every model family
    model.choices = list(VAR_MODELS) + list(INFINITY_MODELS) + list(HART_MODELS)
    model.help = ("which model: demo, var-d16 .. var-d36 (VAR flags below), infinity-2b/-8b/-125m/-custom or "
                  "hart-0.7b (their own sampler's flags after --, e.g. -- --pn 1M). Default var-d16")
    C.add_sampling_args(p)
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    family = ("infinity" if args.model in INFINITY_MODELS else "hart" if args.model in HART_MODELS else "var")
    if passthrough and family == "var":
        raise SSGError("flags after -- are for the text-to-image samplers; VAR's flags go before it")
    seeds = _ints(args.seeds, "--seeds")
    if len(set(seeds)) != len(seeds):
        raise SSGError("--seeds: each seed once")
    for flag, v in (("--batch-size", args.batch_size), ("--threads", args.threads),
                    ("--num-per-class", args.num_per_class), ("--num-images", args.num_images)):
        if v is not None and v < 1:
            raise SSGError(f"{flag} must be at least 1, got {v}")
    metric_name = args.metric or ("digits" if args.model == "demo" else "inception")
    if metric_name == "digits" and args.model != "demo":
        raise SSGError("--metric digits scores the demo's digits; use --metric inception (with --ref) for other models")
    if metric_name == "inception" and args.ref is None:
        raise SSGError("--metric inception needs --ref, an .npz of reference images (arr_0 uint8 NHWC)")
    if args.ref is not None and not args.ref.is_file():
        raise SSGError(f"--ref {args.ref} does not exist")
    grid = build_grid(args)
    check_output_path(args.out, "--out", folder=True)
    for name in (RESULTS, "table.md", "sweep.png"):
        check_output_path(args.out / name, "--out")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dse = {"mode": args.dse_mode, "rescale": args.rescale, "prior": args.prior, "cache": args.cache}

    dist = init_distributed(args.device)
    device = dist.device
    if family == "var":
        target = var_target(args, device)
    elif family == "infinity":
        target = infinity_target(args, device, passthrough)
    else:
        target = hart_target(args, device, passthrough)
    if target.num_images < 4:  # k-NN precision/recall with k=3 and a covariance need a few images
        raise SSGError(f"{target.num_images} images per setting and seed are too few for the metrics; give at "
                       f"least 4 (more classes, --num-per-class, or more prompts)")
    # every setting against the model's scale count, before any sampling
    resolved = []
    for s in grid:
        try:
            betas = s.ssg(dse).betas(target.num_scales)
        except SSGError as e:
            raise SSGError(f"setting {s.name()}: {e}") from None
        resolved.append((s, betas))
    if metric_name == "digits":
        metric = DigitsMetric(device)
    else:
        metric = InceptionMetric(load_inception(args.inception_weights), args.ref, args.out, device,
                                 "torch-fidelity-inception-v3-compat", is_main=dist.is_main)
    grid3, seen = [], set()
    for s, betas in resolved:
        key = settings_key(target, metric, betas, dse)
        if key not in seen:  # e.g. last:1 and from:K-1 are the same setting: sampled once
            seen.add(key)
            grid3.append((s, betas, key))

    res_path = args.out / RESULTS
    store = load_store(res_path) if dist.is_main else {"records": []}
    done = {(r["key"], r["seed"]) for r in store["records"]}
    flags = [int((key, seed) in done) for _, _, key in grid3 for seed in seeds]
    if dist.world > 1:  # every rank follows rank 0's to-do list
        obj = [flags]
        torch.distributed.broadcast_object_list(obj, src=0)
        flags = obj[0]
    jobs = [(g, seed) for (g, seed), f in zip(((g, s) for g in grid3 for s in seeds), flags) if not f]
    if dist.is_main:
        print(f"{target.name}: {len(grid3)} settings x {len(seeds)} seeds, {target.num_images} images each; "
              f"{len(grid3) * len(seeds) - len(jobs)} already in {res_path}, {len(jobs)} to run")
    t_all = time.time()
    for (setting, betas, key), seed in tqdm(jobs, desc="settings x seeds", disable=not (args.progress and dist.is_main)):
        ssg = setting.ssg(dse)
        t0 = time.time()
        result = run_one(target, metric, ssg if ssg.enabled else None, seed, args.batch_size, dist)
        if dist.is_main:
            store["records"].append({"key": key, "seed": seed, "name": setting.name(betas), "betas": betas,
                                     "metrics": result, "seconds": round(time.time() - t0, 2)})
            write_json(res_path, store)  # after every run: a killed sweep resumes here
    if dist.is_main:
        report(args.out, store, grid3, seeds, metric, target, len(jobs), time.time() - t_all)
    dist.close()
    return 0


def report(out: Path, store: dict, grid3: list, seeds: list[int], metric, target, sampled: int, seconds: float) -> None:
    """Rank 0: the table and the plot of every setting in `store`, written beside results.json."""
    res_path = out / RESULTS
    rows = summarise(store, grid3, seeds, metric)
    header = (f"{target.name}, {target.num_images} images per setting and seed, seeds {','.join(map(str, seeds))}; "
              f"metric {metric.name}; mean ± std over seeds; Δ paired with the baseline (same seeds and images)")
    text = markdown_table(rows, metric, header)
    _atomic_write(out / "table.md", lambda f: f.write(text.encode()))
    plot(out / "sweep.png", rows, metric, header)
    print(text)
    print(f"wrote {out / 'table.md'}, {out / 'sweep.png'}, {res_path} "
          f"({sampled} (setting, seed) runs sampled now, in {seconds:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
