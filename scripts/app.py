"""Local web demo: the same seed without and with SSG, side by side, scale by scale (Gradio).

    pip install -e ".[app]"
    python scripts/app.py                        # http://127.0.0.1:7860, the shipped demo model; a CPU is enough
    python scripts/app.py --device cuda --ckpt-dir /data/ckpt --port 8000

One click samples the baseline and SSG from the same seed and shows both images, the coarse-to-fine strip (the
image decoded after every scale: baseline row, SSG row) and, per scale, how far SSG moved the logits and what
share of the sampled tokens differ from the baseline. The model menu lists every model of the project; one
whose weights are not on this machine (Hugging Face cache or --ckpt-dir) is marked as not downloaded, with the
`scripts/download.py` command: the app never downloads (it runs with HF_HUB_OFFLINE=1) and sends no usage
statistics. Requests queue: one sampling at a time on the device, any number of browser tabs.

The samplers' own code does the work: model loading and flags from VAR/cli_args.py, Infinity/tools/run_infinity.py
and hart/sample.py, the SSG flags from ssg_core.cli, the demo model from VAR/demo.py.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ssg_core.cli import ArgumentParser, add_ssg_args, check_sampling, main_guard, make_ssg, pick_device
from ssg_core.dse import MODES, PRIORS
from ssg_core.errors import SSGError
from ssg_core.guidance import CACHES, SCHEDULES
from ssg_core.hub import MODELS, missing_files

INSTALL_HINT = 'the web demo needs Gradio: pip install -e ".[app]"'
MAX_IMAGES = 16          # class ids per request: a comparison is meant to be looked at, not to be an evaluation
CELL = 128               # side of one strip cell in pixels
DEFAULT_PROMPT = "a photo of a red fox sitting in the snow, detailed fur"


# ---------------------------------------------------------------- the model menu
@dataclass(frozen=True)
class Entry:
    """One model of the menu. `name` is also its `ssg_core.hub.MODELS` name (what scripts/download.py fetches);
    `flags` are the family sampler's own flags that select it."""
    name: str
    family: str                    # "var" (class ids: the demo and VAR), "infinity" or "hart" (prompts)
    label: str
    flags: tuple[str, ...] = ()


def default_catalog() -> dict[str, Entry]:
    from VAR.cli_args import RELEASED
    entries = [Entry("demo", "var", "demo: tiny VAR on sklearn digits", ("--model", "demo"))]
    entries += [Entry(f"var-d{d}", "var", f"VAR-d{d} (ImageNet classes, {size} px)", ("--model", f"var-d{d}"))
                for d, (size, _) in RELEASED.items()]
    entries += [Entry("infinity-125m", "infinity", "Infinity-125M (text, 256 px)",
                      ("--model_type", "infinity_layer12")),
                Entry("infinity-2b", "infinity", "Infinity-2B (text, 1024 px)", ("--model_type", "infinity_2b")),
                Entry("infinity-8b", "infinity", "Infinity-8B (text, 1024 px)", ("--model_type", "infinity_8b")),
                Entry("hart-0.7b", "hart", "HART-0.7B (text, 1024 px)")]
    return {e.name: e for e in entries}


def download_command(name: str, ckpt_dir: Path | None) -> str:
    return f"python scripts/download.py --model {name}" + (f" --ckpt-dir {ckpt_dir}" if ckpt_dir else "")


def model_status(entry: Entry, ckpt_dir: Path | None) -> tuple[bool, str]:
    """(on this machine?, one line for the page). Looks where the samplers look; never downloads."""
    if entry.name == "demo":
        from VAR import demo
        ok = demo.VAE_CKPT.is_file() and demo.VAR_CKPT.is_file()
        return ok, ("ships with the repository" if ok else "the demo checkpoint is missing from assets/demo/ "
                    "(re-create it with `python VAR/train_demo.py`)")
    if entry.name not in MODELS:  # an entry whose flags name its files directly (tests)
        return True, "local files"
    missing = missing_files(entry.name, ckpt_dir)
    if not missing:
        return True, f"downloaded ({ckpt_dir if ckpt_dir else 'Hugging Face cache'})"
    return False, (f"not downloaded ({len(missing)} missing, e.g. {missing[0]}): run "
                   f"`{download_command(entry.name, ckpt_dir)}` on a machine with network; the app never downloads")


# ---------------------------------------------------------------- one sampling run and what it leaves
@dataclass
class Settings:
    """What a request asks for besides the model and its condition."""
    seed: int = 0
    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    beta: str = "0.5"              # one number, or a comma-separated per-scale list (ssg_core.cli.parse_beta)
    beta_schedule: str = "constant"
    last_scales: int = 0           # guide only the last n scales (0: every scale from 1 on), as --beta-last-scales
    dse_mode: str = "bilinear"
    rescale: bool = True
    prior: str = "dse"
    cache: str = "raw"


@dataclass
class Run:
    images: torch.Tensor           # (B, 3, H, W) in [0, 1] on CPU
    scales: list[torch.Tensor]     # K x (3, H, W) in [0, 1]: image 0 of the batch decoded after each scale
    tokens: list[torch.Tensor]     # K x (B, l_k) or (B, l_k, d) (Infinity's bits): what was sampled at each scale


class ScaleRecorder:
    """The `ssg=` hook of a sampling call that wraps an SSG (or nothing, for the baseline) and records, per
    scale, the mean |guided - raw| of the post-CFG logits. Its output is the SSG's output (or the input
    tensor itself), so a run with it samples exactly what the same run with `ssg` (or None) samples.
    `on_scale(k)` is called after each scale's guidance (the progress bar)."""

    def __init__(self, ssg=None, on_scale: Callable[[int], None] | None = None):
        self.ssg, self.on_scale = ssg, on_scale
        self.change: list[float] = []

    def reset(self, num_scales: int) -> None:
        if self.ssg is not None:
            self.ssg.reset(num_scales)
        self.change = []

    def __call__(self, k: int, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.ssg(k, logits, size) if self.ssg is not None else logits
        # measured before the sampler's top-k/top-p writes -inf into `out` in place
        self.change.append(0.0 if out is logits else float((out.float() - logits.float()).abs().mean()))
        if self.on_scale is not None:
            self.on_scale(k)
        return out


def tokens_changed(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    """Per scale, the share of token positions whose sampled token differs between two runs (a position of
    Infinity counts as changed when any of its bits does)."""
    out = []
    for x, y in zip(a, b):
        ne = x != y
        out.append(float((ne.any(-1) if ne.ndim == 3 else ne).float().mean()))
    return out


# ---------------------------------------------------------------- the three model families
class VarModel:
    """The demo model and VAR d16-d36, loaded as `VAR/sample_ssg.py` loads them."""

    condition = "classes"

    def __init__(self, entry: Entry, ckpt_dir: Path | None, device: torch.device):
        from VAR import cli_args as C
        self.C, self.device = C, device
        args = _parse(_var_parser(), [*entry.flags, *(["--ckpt-dir", str(ckpt_dir)] if ckpt_dir else [])])
        self.vae, self.var, _ = C.load_var_models(args, C.model_choice(args), device)
        self.dtype = C.pick_dtype(None, device)
        self.grids = [(pn, pn) for pn in self.var.patch_nums]

    def parse_condition(self, text: str) -> list[int]:
        ids = self.C.parse_classes(text, self.var.num_classes)
        if len(ids) > MAX_IMAGES:
            raise SSGError(f"--classes: at most {MAX_IMAGES} class ids per comparison, got {len(ids)}")
        return ids

    def run(self, labels: list[int], s: Settings, hook: ScaleRecorder, strip: bool = True) -> Run:
        label_B = torch.tensor(labels, dtype=torch.long, device=self.device)
        with torch.inference_mode(), self.C.autocast(self.device, self.dtype):
            img, tokens = self.var.autoregressive_infer_cfg(len(labels), label_B, g_seed=s.seed, cfg=s.cfg,
                                                            top_k=s.top_k, top_p=s.top_p, more_smooth=False,
                                                            ssg=hook, return_tokens=True)
            # the VAE's own multi-scale decoding of the first image's tokens: f_hat after each scale, to the image
            scales = self.vae.idxBl_to_img([t[:1] for t in tokens], same_shape=True, last_one=False) if strip else []
        return Run(img.float().cpu(), [x[0].float().add(1).mul(0.5).cpu() for x in scales], tokens)


class InfinityModel:
    """Infinity 125M/2B/8B, loaded and sampled by `Infinity/tools/run_infinity.py`."""

    condition = "prompt"

    def __init__(self, entry: Entry, ckpt_dir: Path | None, device: torch.device):
        from Infinity.tools import run_infinity as R
        self.R, self.device = R, device
        self.args = _infinity_args(entry, ckpt_dir, device)
        self.setup = R.load_all(self.args, device)
        self.grids = [(h, w) for _, h, w in self.setup.scale_schedule]

    def parse_condition(self, text: str) -> str:
        if not text.strip():
            raise SSGError("give a prompt")
        return text

    def run(self, prompt: str, s: Settings, hook: ScaleRecorder, strip: bool = True) -> Run:
        args = copy.copy(self.args)
        args.top_k, args.top_p = s.top_k, s.top_p
        setup = replace(self.setup, cfg_list=[s.cfg] * len(self.grids))  # one number: every scale, as --cfg
        capture: dict = {}
        img = self.R.sample(setup, args, prompt, s.seed, hook, capture=capture)  # (H, W, 3) uint8 RGB
        bits = capture["bits"]  # K x (B, h', w', d) on the VAE grid
        return Run(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255,
                   self._decode_scales([b[:1] for b in bits]) if strip else [], [b.flatten(1, 2) for b in bits])

    @torch.inference_mode()
    def _decode_scales(self, bits: list[torch.Tensor]) -> list[torch.Tensor]:
        """The sampler's accumulation of codes (upsampled to the last grid and summed), decoded after each scale."""
        vae = self.setup.vae
        size = (1, *bits[-1].shape[1:3])
        summed, out = 0, []
        for b in bits:
            codes = vae.quantizer.lfq.indices_to_codes(b.to(self.device).unsqueeze(1), label_type="bit_label")
            if tuple(codes.shape[-3:]) != size:
                codes = F.interpolate(codes, size=size, mode=vae.quantizer.z_interplote_up)
            summed = summed + codes
            out.append(vae.decode(summed.squeeze(-3))[0].float().add(1).mul(0.5).cpu())
        return out


class HartModel:
    """HART-0.7B, loaded and sampled by `hart/sample.py`."""

    condition = "prompt"

    def __init__(self, entry: Entry, ckpt_dir: Path | None, device: torch.device):
        from hart import sample as H
        self.H, self.device = H, device
        self.args = _parse(H.build_parser(), [*entry.flags, "--device", str(device),
                                              *(["--ckpt_dir", str(ckpt_dir)] if ckpt_dir else [])])
        llm, text = H.resolve_paths(self.args)
        H.check_against_config(self.args, llm)
        H.check_text_model_folder(text)
        self.model, self.tokenizer, self.text_model = H.load_models(llm, text, self.args.use_ema, device)
        self.grids = [(pn, pn) for pn in self.model.patch_nums]

    def parse_condition(self, text: str) -> str:
        if not text.strip():
            raise SSGError("give a prompt")
        return text

    def run(self, prompt: str, s: Settings, hook: ScaleRecorder, strip: bool = True) -> Run:
        if not 0 <= s.top_p < 1:
            raise SSGError(f"--top_p must be in [0, 1) for HART, got {s.top_p}")
        args = copy.copy(self.args)
        args.cfg, args.top_p = s.cfg, s.top_p  # top-k is fixed by upstream HART (600, then 300)
        sampler = self.H.Sampler(args, self.model, self.tokenizer, self.text_model, self.device)
        trace: dict = {}
        img = sampler.sample(sampler.encode([prompt]), s.seed, False, trace=trace, hook=hook)
        vae = self.model.vae_proxy[0]
        with torch.inference_mode():
            scales = [vae.fhat_to_img(f[:1].float())[0].float().add(1).mul(0.5).cpu()
                      for f in (trace["fhat_scales"] if strip else [])]
        return Run(img.float().cpu(), scales, trace["tokens"])


FAMILIES = {"var": VarModel, "infinity": InfinityModel, "hart": HartModel}


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a sampler's flags; a mistake is an SSGError (the page shows it) rather than an exit."""
    try:
        return parser.parse_args(argv)
    except SystemExit:
        raise SSGError(f"bad sampler flags {argv}") from None


def _var_parser() -> argparse.ArgumentParser:
    from VAR import cli_args as C
    p = ArgumentParser()
    C.add_model_args(p)
    C.add_sampling_args(p)
    return p


def _infinity_args(entry: Entry, ckpt_dir: Path | None, device: torch.device | None) -> argparse.Namespace:
    from Infinity.tools import run_infinity as R
    # --prompt and --save_file only satisfy the sampler's checks: the app passes its prompts itself, writes nothing
    argv = [*entry.flags, "--prompt", "-", "--save_file", str(Path(tempfile.gettempdir()) / "ssg_app_unused.png"),
            *(["--ckpt_dir", str(ckpt_dir)] if ckpt_dir else []), *(["--device", str(device)] if device else [])]
    args = _parse(R.build_parser(), argv)
    R.resolve_settings(args)  # the model's published cfg / tau / resolution
    return args


def sampling_defaults(entry: Entry) -> dict:
    """The condition and the cfg / top-k / top-p each sampler uses by default (upstream's published settings)."""
    if entry.family == "var":
        d = _parse(_var_parser(), list(entry.flags))
        if entry.name == "demo":
            from VAR.demo import NUM_CLASSES, SAMPLING_DEFAULTS
            return dict(condition=",".join(map(str, range(NUM_CLASSES))), cfg=SAMPLING_DEFAULTS["cfg"],
                        top_k=SAMPLING_DEFAULTS["top_k"], top_p=SAMPLING_DEFAULTS["top_p"])
        from VAR.cli_args import DEFAULT_CLASSES
        return dict(condition=DEFAULT_CLASSES, cfg=d.cfg, top_k=d.top_k, top_p=d.top_p)
    if entry.family == "infinity":
        a = _infinity_args(entry, None, None)
        return dict(condition=DEFAULT_PROMPT, cfg=float(a.cfg.split(",")[0]), top_k=a.top_k, top_p=a.top_p)
    from hart import sample as H
    a = _parse(H.build_parser(), list(entry.flags))
    return dict(condition=DEFAULT_PROMPT, cfg=a.cfg, top_k=0, top_p=a.top_p)


def _last_scales(value) -> int | None:
    """The page's "last n scales" number as `--beta-last-scales` takes it: None for 0 (every scale)."""
    try:
        n = float(value or 0)
    except (TypeError, ValueError):
        raise SSGError(f"guided scales must be a whole number of scales, got {value!r}") from None
    if not math.isfinite(n) or n != int(n) or n < 0:
        raise SSGError(f"guided scales must be a whole number of scales >= 0 (0: every scale), got {value}")
    return int(n) or None


def build_ssg(s: Settings, num_scales: int):
    """(SSG or None when every beta is 0, per-scale betas) through `ssg_core.cli.make_ssg`, so the page's options
    mean what the samplers' flags mean (and any option added there gets its default here)."""
    p = ArgumentParser()
    add_ssg_args(p, compare=False)
    args = p.parse_args([])
    args.beta, args.beta_schedule, args.dse_mode = s.beta, s.beta_schedule, s.dse_mode
    args.beta_last_scales = _last_scales(s.last_scales)
    args.rescale, args.prior, args.cache = bool(s.rescale), s.prior, s.cache
    return make_ssg(args, num_scales)


# ---------------------------------------------------------------- a comparison
@dataclass
class Comparison:
    baseline: Run
    guided: Run
    betas: list[float]
    logit_change: list[float]      # per scale: mean |guided - raw| of the SSG run's post-CFG logits
    token_change: list[float]      # per scale: share of positions whose token differs from the baseline
    seconds: tuple[float, float]   # sampling time of the baseline and of the SSG run
    grids: list[tuple[int, int]]


def compare(model, condition_text: str, s: Settings, progress: Callable[[int, int, str], None] | None = None,
            strip: bool = True) -> Comparison:
    """Sample the baseline and SSG from the same seed with `model` (a VarModel, InfinityModel or HartModel);
    `strip=False` skips decoding the image after every scale.

    Everything a user can get wrong is checked before sampling and raised as a one-line SSGError.
    """
    for name, value in (("seed", s.seed), ("cfg", s.cfg), ("top-k", s.top_k), ("top-p", s.top_p)):
        if value is None or not math.isfinite(value):
            raise SSGError(f"{name}: give a finite number")
    if s.seed < 0 or s.seed != int(s.seed):
        raise SSGError(f"seed must be an integer >= 0, got {s.seed}")
    s = replace(s, seed=int(s.seed), top_k=int(s.top_k))
    check_sampling(s.cfg, s.top_k, s.top_p)
    condition = model.parse_condition(condition_text)
    K = len(model.grids)
    ssg, betas = build_ssg(s, K)
    runs, seconds, recorders = [], [], []
    for i, hook_ssg in enumerate((None, ssg)):
        if i == 1 and ssg is None:  # every beta is 0: SSG is the baseline, bit for bit
            runs.append(runs[0])
            seconds.append(0.0)
            recorders.append(recorders[0])
            break
        what = "baseline" if i == 0 else "SSG"
        rec = ScaleRecorder(hook_ssg, None if progress is None else
                            (lambda k, i=i, what=what: progress(i * K + k + 1, 2 * K, f"{what}: scale {k + 1}/{K}")))
        t0 = time.perf_counter()
        runs.append(model.run(condition, s, rec, strip))
        seconds.append(time.perf_counter() - t0)
        recorders.append(rec)
    return Comparison(runs[0], runs[1], betas, recorders[1].change, tokens_changed(runs[0].tokens, runs[1].tokens),
                      (seconds[0], seconds[1]), list(model.grids))


# ---------------------------------------------------------------- pictures
def to_uint8(x: torch.Tensor) -> "np.ndarray":
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def grid_image(images: torch.Tensor) -> "np.ndarray":
    """A batch (B, 3, H, W) in [0, 1] as one near-square picture (the two sides share the page's width); tiny
    images enlarged to 256 px (pixels repeated)."""
    from torchvision.utils import make_grid
    zoom = max(1, 2 * CELL // images.shape[-1])
    x = images.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1) if zoom > 1 else images
    return to_uint8(make_grid(x.clamp(0, 1), nrow=math.ceil(math.sqrt(len(x))), padding=4, pad_value=1.0))


def _cell(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (3, CELL, CELL * W / H): pixels repeated when smaller, area-averaged when larger."""
    h, w = x.shape[-2:]
    size = (CELL, max(1, round(CELL * w / h)))
    mode = "nearest-exact" if h < CELL else "area"
    return F.interpolate(x[None], size=size, mode=mode)[0]


def strip_image(baseline: list[torch.Tensor], guided: list[torch.Tensor]) -> "np.ndarray":
    """The coarse-to-fine strip: one column per scale, baseline on top, SSG below."""
    from torchvision.utils import make_grid
    cells = [_cell(x) for x in baseline] + [_cell(x) for x in guided]
    return to_uint8(make_grid(torch.stack(cells), nrow=len(baseline), padding=4, pad_value=1.0))


def change_plot(c: Comparison):
    """A matplotlib Figure: per scale, the mean |logit change| (bars) and the share of tokens changed (line)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 2.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = list(range(1, len(c.grids) + 1))
    labels = [f"{h}" if h == w else f"{h}x{w}" for h, w in c.grids]
    ax1.bar(x, c.logit_change, color="#d9534f")
    ax1.set_title("mean |guided - raw logits|", fontsize=9)
    ax2.plot(x, [100 * v for v in c.token_change], marker="o", color="#337ab7")
    ax2.set_ylim(0, 100)
    ax2.set_title("tokens that differ from the baseline (%)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_xlabel("scale (grid side)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    return fig


def summary(entry: Entry, c: Comparison) -> str:
    betas = ", ".join(f"{b:g}" for b in c.betas)
    ssg_time = f"{c.seconds[1]:.1f} s" if c.seconds[1] else "same as the baseline (every beta is 0)"
    return (f"**{entry.name}**: betas per scale [{betas}]; baseline {c.seconds[0]:.1f} s, SSG {ssg_time}; "
            f"{100 * c.token_change[-1]:.0f}% of the last scale's tokens differ from the baseline.")


# ---------------------------------------------------------------- the app state (models in memory, one device)
class App:
    """Loads models on first use and keeps the demo plus the most recently used other model in memory."""

    def __init__(self, device: torch.device, ckpt_dir: Path | None = None, catalog: dict[str, Entry] | None = None):
        self.device, self.ckpt_dir = device, ckpt_dir
        self.catalog = catalog if catalog is not None else default_catalog()
        self.loaded: dict[str, object] = {}

    def model(self, name: str, progress: Callable[[int, int, str], None] | None = None):
        entry = self.catalog.get(name)
        if entry is None:
            raise SSGError(f"unknown model {name!r}; known: {', '.join(self.catalog)}")
        if name not in self.loaded:
            ok, status = model_status(entry, self.ckpt_dir)
            if not ok:
                raise SSGError(f"{name} is {status}" if status.startswith("not") else status)
            if progress is not None:
                progress(0, 1, f"loading {name}")
            for other in [k for k in self.loaded if k != "demo"]:  # free the memory before loading another
                del self.loaded[other]
            self.loaded[name] = FAMILIES[entry.family](entry, self.ckpt_dir, self.device)
        return self.loaded[name]

    def compare(self, name: str, condition: str, s: Settings, progress=None, strip: bool = True) -> Comparison:
        return compare(self.model(name, progress), condition, s, progress, strip)


# ---------------------------------------------------------------- the page
def build_ui(app: App):
    import gradio as gr

    names = list(app.catalog)
    status0 = {n: model_status(app.catalog[n], app.ckpt_dir) for n in names}
    choices = [(app.catalog[n].label + ("" if status0[n][0] else "  (not downloaded)"), n) for n in names]
    d0 = sampling_defaults(app.catalog[names[0]])

    def on_model(name: str, current_prompt: str | None):
        entry = app.catalog[name]
        ok, status = model_status(entry, app.ckpt_dir)
        d = sampling_defaults(entry)
        text = entry.family != "var"  # class ids are the model's own (digits or ImageNet); a prompt carries over
        return ("weights: " + status.replace("not downloaded", "**not downloaded**", 1),
                gr.update(visible=not text, value=None if text else d["condition"]),
                gr.update(visible=text, value=(current_prompt or "").strip() or d["condition"] if text else None),
                d["cfg"], gr.update(value=d["top_k"], interactive=entry.family != "hart"), d["top_p"])

    def on_run(name, classes, prompt, seed, beta, betas, schedule, last_scales, mode, rescale, prior, cache, cfg,
               top_k, top_p, progress=gr.Progress()):
        s = Settings(seed=seed, cfg=cfg, top_k=top_k, top_p=top_p, beta=(betas or "").strip() or str(beta),
                     beta_schedule=schedule, last_scales=last_scales, dse_mode=mode, rescale=rescale, prior=prior, cache=cache)
        try:
            entry = app.catalog.get(name)
            condition = prompt if entry is not None and entry.family != "var" else classes
            c = app.compare(name, condition or "", s, lambda i, n, desc: progress((i, n), desc=desc))
        except SSGError as e:
            return None, None, None, None, f"**error:** {e}"
        except Exception as e:  # a bug or the device (out of memory): one line here, the traceback in the terminal
            traceback.print_exc()
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            return None, None, None, None, f"**error:** {type(e).__name__}: {first} (details in the terminal)"
        return (grid_image(c.baseline.images), grid_image(c.guided.images),
                strip_image(c.baseline.scales, c.guided.scales), change_plot(c), summary(app.catalog[name], c))

    # delete_cache: the pictures Gradio serves are files; drop those older than an hour, every hour
    with gr.Blocks(title="SSG: baseline vs SSG", analytics_enabled=False, delete_cache=(3600, 3600)) as ui:
        gr.Markdown("## SSG (Scaled Spatial Guidance): the same seed without and with guidance, scale by scale")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                model = gr.Dropdown(choices=choices, value=names[0], label="model", elem_id="model")
                model_info = gr.Markdown(elem_id="model-status")
                classes = gr.Textbox(label="class ids (comma-separated)", value=d0["condition"], elem_id="classes")
                prompt = gr.Textbox(label="prompt", visible=False, elem_id="prompt")
                seed = gr.Number(label="seed", value=0, precision=0, elem_id="seed")
                beta = gr.Slider(0, 2, value=0.5, step=0.05, label="beta", elem_id="beta")
                betas = gr.Textbox(label="per-scale betas (optional, overrides the slider; the first is 0)",
                                   placeholder="0, 0.5, 0.5, ...", elem_id="betas")
                schedule = gr.Dropdown(list(SCHEDULES), value="constant", label="beta schedule (for one beta)",
                                       elem_id="schedule")
                last_scales = gr.Number(label="guide only the last n scales (0: every scale; for one beta)", value=0,
                                        precision=0, minimum=0, elem_id="last-scales")
                with gr.Accordion("DSE options", open=False):
                    mode = gr.Dropdown(list(MODES), value="bilinear", label="interpolation of the new band")
                    rescale = gr.Checkbox(value=True, label="rescale the pasted coarse block")
                    prior = gr.Dropdown(list(PRIORS), value="dse", label="prior (interp: the paper's ablation)")
                    cache = gr.Dropdown(list(CACHES), value="raw", label="previous logits kept (raw or guided)")
                with gr.Accordion("sampling", open=False):
                    cfg = gr.Number(label="cfg", value=d0["cfg"], elem_id="cfg")
                    top_k = gr.Number(label="top-k (0: off)", value=d0["top_k"], precision=0, elem_id="top-k")
                    top_p = gr.Number(label="top-p (0: off)", value=d0["top_p"], elem_id="top-p")
                run = gr.Button("Compare", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                status = gr.Markdown("Pick a model and press Compare.", elem_id="status")
                with gr.Row():
                    base_img = gr.Image(label="baseline", format="png", interactive=False, elem_id="baseline")
                    ssg_img = gr.Image(label="SSG", format="png", interactive=False, elem_id="ssg")
                strip = gr.Image(label="coarse to fine, first image: decoded after each scale (top baseline, "
                                       "bottom SSG)", format="png", interactive=False, elem_id="strip")
                plot = gr.Plot(label="per scale: how far SSG moved the logits, and what it changed", elem_id="plot")
        model_outputs = [model_info, classes, prompt, cfg, top_k, top_p]
        model.change(on_model, inputs=[model, prompt], outputs=model_outputs, queue=False)
        ui.load(on_model, inputs=[model, prompt], outputs=model_outputs, queue=False)
        run.click(on_run, inputs=[model, classes, prompt, seed, beta, betas, schedule, last_scales, mode, rescale, prior, cache,
                                  cfg, top_k, top_p],
                  outputs=[base_img, ssg_img, strip, plot, status],
                  concurrency_limit=1, concurrency_id=f"sampling-{app.device}")  # one sampling at a time per device
    return ui


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Local web demo (Gradio): baseline and SSG from the same seed, side by side, "
                                   "scale by scale. Needs the app extra: pip install -e \".[app]\"")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--share", action=argparse.BooleanOptionalAction, default=False,
                   help="also make a public gradio.live link (needs network)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu. Default: cuda if available")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="folder with checkpoints fetched by `scripts/download.py --ckpt-dir`. Default: the Hugging "
                        "Face cache")
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise SSGError(f"--port must be between 1 and 65535, got {args.port}")
    if args.ckpt_dir is not None and not args.ckpt_dir.is_dir():
        raise SSGError(f"--ckpt-dir {args.ckpt_dir} is not a folder")
    device = pick_device(args.device)
    # before huggingface_hub and gradio are imported (both read these once): no downloads, no usage statistics
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SSGError(INSTALL_HINT) from None
    t0 = time.perf_counter()
    ui = build_ui(App(device, args.ckpt_dir))
    ui.queue(default_concurrency_limit=1)
    try:
        _, local_url, share_url = ui.launch(server_name=args.host, server_port=args.port, share=args.share,
                                            prevent_thread_lock=True, quiet=True, ssr_mode=False, show_error=False)
    except OSError as e:
        why = "in use" if "empty port" in str(e) else str(e).splitlines()[0]
        raise SSGError(f"cannot serve on {args.host}:{args.port} ({why}); try another --port") from None
    print(f"SSG web demo on {local_url} (device {device}, started in {time.perf_counter() - t0:.1f} s; Ctrl+C stops it)"
          + (f"; public link {share_url}" if share_url else ""), flush=True)
    try:
        ui.block_thread()
    finally:
        ui.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
