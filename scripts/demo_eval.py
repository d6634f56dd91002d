"""Evaluate SSG on the offline demo model (VAR on sklearn digits): metrics, sweeps, table, plot.

    python scripts/demo_eval.py --quick                       # baseline vs SSG, one seed: two metrics lines
    python scripts/demo_eval.py --out results/demo_eval       # beta + temperature sweeps + DSE ablations

Metrics, from the shipped digits classifier (`assets/demo/classifier_demo.safetensors`) on the
generated images versus all 1797 real digits:

* fd: Frechet distance of the classifier's 128-d penultimate features (FID's formula);
* accuracy: share of samples classified as the requested class;
* cs: the Inception-Score formula on the classifier's probabilities ("classifier score", max 10);
* precision / recall: k-NN (k=3) manifold estimates (Kynkaenniemi et al. 2019) on the same features.

Every setting is sampled with the same seeds (image i of seed s uses `image_seed(s, i)` in
every setting), so differences between settings are paired. Each row reports mean +- standard
deviation across seeds, and the per-seed FD difference to the baseline (same seeds) as mean +-
std: the paired difference has much less noise than the two FDs themselves. A "real" row scores random subsets of real digits of the same size:
the noise floor of each metric at this sample size.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.errors import SSGError
from ssg_core.evaluation import _atomic_write, check_output_path, write_json

METRICS = ("fd", "accuracy", "classifier_score", "precision", "recall")
SHORT = {"fd": "FD", "accuracy": "acc", "classifier_score": "CS", "precision": "prec", "recall": "rec"}


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SSGError(f"expected a comma-separated list of numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SSGError(f"expected a comma-separated list of integers, got {text!r}") from None


def setting(beta: float = 0.0, temperature: float = 1.0, top_k: int = 0, mode: str = "bilinear",
            prior: str = "dse", rescale: bool = True, cache: str = "raw") -> dict:
    """One sampling setting; SSG options only matter when beta > 0."""
    s = {"beta": beta, "temperature": temperature, "top_k": top_k}
    if beta > 0:
        s.update(mode=mode, prior=prior, rescale=rescale, cache=cache)
    return s


def setting_name(s: dict) -> str:
    if s.get("real"):
        return "real digits (noise floor)"
    parts = ["baseline" if s["beta"] == 0 else f"SSG b={s['beta']:g}"]
    if s["beta"] > 0 and (s["prior"], s["mode"], s["rescale"], s["cache"]) != ("dse", "bilinear", True, "raw"):
        parts.append(f"{s['prior']}/{s['mode']}" + ("" if s["rescale"] else " no-rescale")
                     + ("" if s["cache"] == "raw" else f" cache={s['cache']}"))
    if s["temperature"] != 1.0:
        parts.append(f"T={s['temperature']:g}")
    if s["top_k"]:
        parts.append(f"top-k={s['top_k']}")
    return ", ".join(parts)


def setting_key(s: dict) -> str:
    return json.dumps(s, sort_keys=True)


def build_settings(args) -> dict[str, list[dict]]:
    """Sweep name -> list of settings (a setting may appear in several sweeps; it runs once)."""
    sweeps: dict[str, list[dict]] = {}
    want = set(args.sweep)
    if "beta" in want:
        sweeps["beta"] = [setting(beta=b) for b in args.betas]
    if "temperature" in want:
        sweeps["temperature"] = [setting(beta=b, temperature=t) for b in (0.0, args.ssg_beta) for t in args.temperatures]
    if "topk" in want:
        sweeps["topk"] = [setting(beta=b, top_k=k) for b in (0.0, args.ssg_beta) for k in args.top_ks]
    if "ablations" in want:
        b = args.ssg_beta
        sweeps["ablations"] = [setting(), setting(beta=b), setting(beta=b, prior="interp", mode="nearest"),
                               setting(beta=b, prior="interp", mode="bilinear"), setting(beta=b, rescale=False),
                               setting(beta=b, cache="guided")]
    return sweeps


def run_setting(var, scorer, s: dict, seed: int, per_class: int, args) -> dict[str, float]:
    from ssg_core import SSG
    from VAR import demo
    labels = torch.arange(demo.NUM_CLASSES).repeat_interleave(per_class)
    if s.get("real"):  # noise floor: a random subset of real digits of the same size, scored the same way
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(scorer.real_images), generator=g)[:len(labels)]
        return scorer.score((scorer.real_images[pick] + 1) / 2, scorer.real_labels[pick])
    ssg = None
    if s["beta"] > 0:
        ssg = SSG(beta=s["beta"], mode=s["mode"], rescale=s["rescale"], prior=s["prior"], cache=s["cache"])
    hook = demo.LogitsHook(ssg=ssg, temperature=s["temperature"])
    images = demo.sample(var, labels, seed=seed, hook=hook, cfg=args.cfg, top_k=s["top_k"], top_p=args.top_p,
                         batch_size=args.batch_size)
    return scorer.score(images, labels)


def summarise(runs: dict[int, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """seed -> metrics  ==>  metric -> (mean, std across seeds; std 0 for one seed)."""
    out = {}
    for m in METRICS:
        v = np.array([r[m] for r in runs.values()])
        out[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    return out


def paired_fd_difference(runs: dict[str, dict], base: dict[str, dict], seeds: list[int]) -> tuple[float, float]:
    """Mean and std over seeds of FD(setting) - FD(baseline) with the same seed (same noise)."""
    d = np.array([runs[str(s)]["fd"] - base[str(s)]["fd"] for s in seeds])
    return float(d.mean()), (float(d.std(ddof=1)) if len(d) > 1 else 0.0)


def markdown_table(title: str, rows: list[tuple[str, dict, tuple[float, float] | None]], n_seeds: int) -> str:
    head = f"**{title}** (mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''})\n\n"
    head += ("| setting | " + " | ".join(f"{SHORT[m]} {'↓' if m == 'fd' else '↑'}" for m in METRICS)
             + " | ΔFD vs baseline, paired |\n")
    head += "|---|" + "---|" * (len(METRICS) + 1) + "\n"
    fmt = {"fd": "{:.2f} ± {:.2f}", "classifier_score": "{:.2f} ± {:.2f}"}
    for name, summ, diff in rows:
        head += (f"| {name} | " + " | ".join(fmt.get(m, "{:.3f} ± {:.3f}").format(*summ[m]) for m in METRICS)
                 + " | " + ("{:+.2f} ± {:.2f}".format(*diff) if diff is not None else "") + " |\n")
    return head


def plot(path: Path, sweeps: dict[str, list[dict]], summary: dict[str, dict], real: dict | None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [k for k in ("beta", "temperature", "topk") if k in sweeps]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels) + ("beta" in sweeps), figsize=(4.6 * (len(panels) + ("beta" in sweeps)), 3.8))
    axes = np.atleast_1d(axes)
    ai = 0
    if "beta" in sweeps:
        ss = sweeps["beta"]
        b = [s["beta"] for s in ss]
        for ax, metrics_ in ((axes[0], ("fd",)), (axes[1], ("accuracy", "precision", "recall"))):
            for m in metrics_:
                mu = [summary[setting_key(s)][m][0] for s in ss]
                sd = [summary[setting_key(s)][m][1] for s in ss]
                ax.errorbar(b, mu, yerr=sd, marker="o", capsize=3, label=SHORT[m])
                if real is not None:
                    ax.axhline(real[m][0], ls=":", lw=1, color=ax.lines[-1].get_color())
            ax.set_xlabel("SSG beta")
            ax.set_title("Frechet distance vs beta" if metrics_ == ("fd",) else "accuracy / precision / recall vs beta")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("FD (classifier features) ↓")
        ai = 2
    for key in panels:
        if key == "beta":
            continue
        ax = axes[ai]
        ai += 1
        knob = "temperature" if key == "temperature" else "top_k"
        for beta, label in ((0.0, "without SSG"), (None, "with SSG")):
            ss = [s for s in sweeps[key] if (s["beta"] == 0) == (beta == 0.0)]
            x = [summary[setting_key(s)]["classifier_score"][0] for s in ss]
            y = [summary[setting_key(s)]["fd"][0] for s in ss]
            xe = [summary[setting_key(s)]["classifier_score"][1] for s in ss]
            ye = [summary[setting_key(s)]["fd"][1] for s in ss]
            ax.errorbar(x, y, xerr=xe, yerr=ye, marker="o", capsize=2, label=label if beta == 0.0 else
                        f"with SSG (beta={ss[0]['beta']:g})")
            for s, xi, yi in zip(ss, x, y):
                ax.annotate(f"{s[knob]:g}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("classifier score (IS formula) ↑")
        ax.set_ylabel("FD ↓")
        ax.set_title(f"FD-CS trade-off over {'temperature' if knob == 'temperature' else 'top-k'}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Metrics and sweeps for SSG on the shipped demo model (digits), on CPU.")
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                   help="only baseline and SSG at --ssg-beta, first seed: two metric lines, no files")
    p.add_argument("--sweep", default="beta,temperature,ablations",
                   help="comma-separated sweeps: beta, temperature, topk, ablations (default: beta,temperature,ablations)")
    p.add_argument("--betas", default="0,0.1,0.25,0.5,1,2", help="beta values of the beta sweep")
    p.add_argument("--ssg-beta", type=float, default=0.5,
                   help="beta of the SSG curve in the temperature/top-k sweeps and of the ablations (default: 0.5, "
                        "the project's default)")
    p.add_argument("--temperatures", default="0.8,1,1.25",
                   help="logit temperatures of the temperature sweep (applied after SSG, before top-p)")
    p.add_argument("--top-ks", default="8,32,128,0", help="top-k values of the top-k sweep (0: off)")
    p.add_argument("--per-class", type=int, default=50, help="samples per class and seed (10 classes; default: 50)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; mean and std are over these")
    p.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance (upstream's FID setting 1.5)")
    p.add_argument("--top-p", type=float, default=0.96, help="top-p (upstream's FID setting 0.96)")
    p.add_argument("--batch-size", type=int, default=250, help="images per sampling call (does not change results)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; on a busy shared machine 1 is often fastest)")
    p.add_argument("--out", type=Path, default=Path("results/demo_eval"),
                   help="folder for results.json (per-seed numbers; reused to resume), table.md and sweep.png")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.sweep = [s.strip() for s in args.sweep.split(",") if s.strip()]
    bad = set(args.sweep) - {"beta", "temperature", "topk", "ablations"}
    if bad:
        raise SSGError(f"--sweep: unknown sweep {sorted(bad)[0]!r}; choose from beta, temperature, topk, ablations")
    args.betas, args.temperatures, args.top_ks = _floats(args.betas), _floats(args.temperatures), _ints(args.top_ks)
    seeds = _ints(args.seeds)
    if not seeds:
        raise SSGError("--seeds: give at least one seed")
    if args.per_class < 1 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        raise SSGError("--per-class, --batch-size and --threads must be positive")
    if any(t <= 0 for t in args.temperatures):
        raise SSGError("--temperatures must be positive")
    if min(args.betas + [args.ssg_beta]) < 0:
        raise SSGError("beta values must be >= 0")
    check_output_path(args.out, "--out", folder=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from VAR import demo
    _, var = demo.load_demo("cpu")
    scorer = demo.DigitsScorer("cpu")

    if args.quick:
        t0 = time.time()
        for s in (setting(), setting(beta=args.ssg_beta)):
            r = run_setting(var, scorer, s, seeds[0], args.per_class, args)
            print(f"{setting_name(s):>16}: " + "  ".join(f"{SHORT[m]} {r[m]:.3f}" for m in METRICS))
        print(f"({10 * args.per_class} samples per setting, seed {seeds[0]}, {time.time() - t0:.0f} s)")
        return 0

    sweeps = build_settings(args)
    todo = {setting_key(s): s for ss in sweeps.values() for s in ss}
    real_setting = {"real": True}
    todo[setting_key(real_setting)] = real_setting
    res_path = args.out / "results.json"
    cfg_id = {"cfg": args.cfg, "top_p": args.top_p, "per_class": args.per_class}
    try:
        store = json.loads(res_path.read_text()) if res_path.is_file() else {"config": cfg_id, "runs": {}}
    except (OSError, ValueError):
        raise SSGError(f"{res_path} is unreadable; delete it (or use another --out)") from None
    if store.get("config") != cfg_id:  # never overwrite results made with other settings
        diff = ", ".join(k for k in cfg_id if store.get("config", {}).get(k) != cfg_id[k])
        raise SSGError(f"{res_path} holds results made with other settings ({diff} differ); use another --out "
                       f"or the same settings")
    jobs = [(k, seed) for k in todo for seed in seeds if str(seed) not in store["runs"].get(k, {})]
    t0 = time.time()
    with tqdm(jobs, desc="settings x seeds", disable=not args.progress) as bar:  # closed before an error
        for k, seed in bar:
            store["runs"].setdefault(k, {})[str(seed)] = run_setting(var, scorer, todo[k], seed, args.per_class, args)
            write_json(res_path, store)  # after every run: a killed sweep resumes where it stopped
    elapsed = time.time() - t0

    summary = {k: summarise({int(s): store["runs"][k][str(s)] for s in seeds}) for k in todo}
    real = summary[setting_key(real_setting)]
    text = (f"Demo model, {10 * args.per_class} samples per setting and seed, seeds {args.seeds}, cfg {args.cfg}, "
            f"top-p {args.top_p}; FD/precision/recall against all 1797 real digits.\n\n")
    base_key = setting_key(setting())
    base_runs = store["runs"].get(base_key) if all(str(s) in store["runs"].get(base_key, {}) for s in seeds) else None

    def diff(s: dict):
        k = setting_key(s)
        if base_runs is None or k == base_key or s.get("real"):
            return None
        return paired_fd_difference(store["runs"][k], base_runs, seeds)

    for name, ss in sweeps.items():
        rows = ([(setting_name(s), summary[setting_key(s)], diff(s)) for s in ss]
                + [(setting_name(real_setting), real, None)])
        text += markdown_table(f"{name} sweep", rows, len(seeds)) + "\n"
    _atomic_write(args.out / "table.md", lambda f: f.write(text.encode()))
    plot(args.out / "sweep.png", sweeps, summary, real)
    print(text)
    print(f"wrote {args.out / 'table.md'}, {args.out / 'sweep.png'}, {res_path} ({elapsed:.0f} s of sampling)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
