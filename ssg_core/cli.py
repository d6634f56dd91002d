"""Small helpers shared by the command-line entry points."""
from __future__ import annotations

import argparse
import functools
import math
import sys
from typing import Callable

import torch

from .errors import SSGError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; an option's help ends with its default, unless it has none
    (None, False) or the help text already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.default is None or action.default is False  # `is`: 0 is a default
                or action.default == argparse.SUPPRESS or "default" in text.lower()):
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house rules: a usage mistake is one line on stderr (`error: ...`, exit status 2)
    instead of the usage block, --help shows the defaults, and every long flag may be spelled with `-` or `_`
    between words (`--top-k` or `--top_k`): the upstream codebases disagree, and users carry both habits."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        declared = {}
        for action in self._actions:
            for flag in action.option_strings:
                if flag.startswith("--"):
                    declared.setdefault(flag.replace("_", "-"), flag)
        respelled, positional_only = [], False
        for token in args:
            if token == "--":
                positional_only = True
            if not positional_only and token.startswith("--") and len(token) > 2:
                name, eq, value = token.partition("=")
                if name not in self._option_string_actions and name.replace("_", "-") in declared:
                    token = declared[name.replace("_", "-")] + eq + value
            respelled.append(token)
        return super().parse_known_args(respelled, namespace)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main_guard(fn: Callable[..., int | None]) -> Callable[..., int | None]:
    """Wrap a CLI `main` so that an `SSGError` prints `error: <message>` and exits with status 2."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SSGError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapped


def pick_device(text: str | None) -> torch.device:
    """`--device`: None means CUDA when available, else CPU; a bad name or a missing GPU is a one-line error."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise SSGError(f"--device: not a torch device: {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SSGError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
    return dev


def check_sampling(cfg: float | None = None, top_k: int | None = None, top_p: float | None = None,
                   sep: str = "-") -> None:
    """One-line errors for sampling flags out of range, which upstream would silently ignore (a negative top-k,
    a top-p above 1 turn the filter off) or turn into a torch error deep inside sampling (a NaN cfg).
    `sep` is the word separator of the caller's flags: "-" (--top-k) or "_" (Infinity's and HART's --top_k)."""
    if cfg is not None and not math.isfinite(cfg):
        raise SSGError(f"--cfg must be a finite number, got {cfg}")
    if top_k is not None and top_k < 0:
        raise SSGError(f"--top{sep}k must be >= 0 (0: off), got {top_k}")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise SSGError(f"--top{sep}p must be between 0 and 1 (0: off), got {top_p}")


def parse_beta(text: str) -> float | list[float]:
    """Parse `--beta`: one number (constant for scales >= 1) or a comma-separated per-scale list."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise SSGError(f"--beta: expected a number or a comma-separated list, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SSGError(f"--beta: expected a number or a comma-separated list, got {text!r}") from None
    return values[0] if len(values) == 1 and "," not in text else values


def add_trust_pickle_arg(p, sep: str = "-") -> None:
    """Add `--trust-pickle` (dest `trust_pickle`, off by default) to a parser or argument group: the one way an
    entry point lets a checkpoint run code (`ssg_core.hub.load_state_dict(..., trust_pickle=True)`).
    `sep` is the word separator of the caller's other flags ("_" for Infinity's and HART's upstream style);
    `ArgumentParser` accepts the other spelling too."""
    p.add_argument(f"--trust{sep}pickle", dest="trust_pickle", action=argparse.BooleanOptionalAction, default=False,
                   help="load checkpoint files that torch's weights-only loader refuses (pickles that refer to other "
                        "Python code) with a full pickle load. RISK: such a file can run any code on this machine "
                        "as you; use it only for files from a source you trust. Without it such files are refused "
                        "and nothing in them runs (the released checkpoints and upstream's training checkpoints do not need it)")


# ---------------------------------------------------------------- the SSG flags, shared by every sampler
def _scale_count(flag: str):
    """argparse type: a positive number of scales / scale index."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}" + (
                " (scale 0 is never guided)" if flag == "--beta-from-scale" else ""))
        return value
    return parse


def add_ssg_args(p, default_beta: str | None = "0.5", compare: bool = True, beta_default_text: str | None = None):
    """Add the SSG flags to an argparse parser (each also spelled with underscores, as upstream CLIs do).

    Sets `beta` (text), `beta_schedule`, `beta_from_scale`, `beta_last_scales`, `dse_mode`, `rescale`,
    `prior`, `cache`, and `compare` unless `compare=False` (evaluation samplers, which write one set of
    images). With `default_beta=None` the sampler fills `args.beta` itself when it is None (say how in
    `beta_default_text`).
    """
    from .dse import MODES, PRIORS
    from .guidance import CACHES, SCHEDULES

    g = p.add_argument_group("SSG (Scaled Spatial Guidance)")
    default_text = beta_default_text or f"default {default_beta}"
    g.add_argument("--beta", type=str, default=None if default_beta is None else str(default_beta),
                   help="guidance strength: one number (spread over the guided scales by --beta-schedule, see "
                        "--beta-from-scale/--beta-last-scales) or a comma-separated list with one value per scale "
                        "(scale 0 is never guided, so its value must be 0). 0 gives upstream's samples exactly. The "
                        f"paper publishes no value; {default_text}")
    g.add_argument("--beta-schedule", "--beta_schedule", dest="beta_schedule", choices=SCHEDULES, default="constant",
                   help="how one --beta number becomes per-scale values over the n guided scales (j = 0..n-1 "
                        "from the first guided one; every other scale gets 0): constant: beta; linear-decay: "
                        "beta*(n-j)/n, from beta down to beta/n; linear-increase: beta*(j+1)/n, up to beta at the "
                        "last scale. Over all K scales (n = K-1) that is beta*(K-k)/(K-1) and beta*k/(K-1) at scale k")
    window = g.add_mutually_exclusive_group()
    window.add_argument("--beta-from-scale", "--beta_from_scale", dest="beta_from_scale", metavar="K",
                        type=_scale_count("--beta-from-scale"), default=None,
                        help="guide only scales K..last (0-based; 1 = all, the default). Needs one --beta number")
    window.add_argument("--beta-last-scales", "--beta_last_scales", dest="beta_last_scales", metavar="N",
                        type=_scale_count("--beta-last-scales"), default=None,
                        help="guide only the last N scales (e.g. 1: the finest scale alone). Needs one --beta number")
    g.add_argument("--dse-mode", "--dse_mode", dest="dse_mode", choices=MODES, default="bilinear",
                   help="interpolation that builds the prior's new high-frequency band")
    g.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=True,
                   help="scale the pasted coarse DCT block by sqrt(h*w/(h_p*w_p)) so that the prior keeps the "
                        "coarse map's mean (off: literal paste)")
    g.add_argument("--prior", choices=PRIORS, default="dse",
                   help="dse: DCT-domain prior (the method); interp: the resized previous logits only (the "
                        "paper's ablation)")
    g.add_argument("--cache", choices=CACHES, default="raw",
                   help="which previous-scale logits build the prior: raw (post-CFG, before guidance) or guided")
    if compare:
        g.add_argument("--compare", action=argparse.BooleanOptionalAction, default=False,
                       help="also sample without SSG from the same seeds and show both side by side")
    return g


def _window_flag(args) -> tuple[str, int] | None:
    """(flag, value) of the guided-window flag the user gave, if any."""
    if getattr(args, "beta_from_scale", None) is not None:
        return "--beta-from-scale", args.beta_from_scale
    if getattr(args, "beta_last_scales", None) is not None:
        return "--beta-last-scales", args.beta_last_scales
    return None


def format_betas(betas: list[float]) -> str:
    """[0, 0, 0.3] with at most 4 significant digits (0.19999999999999998 -> 0.2)."""
    return "[" + ", ".join(f"{b:.4g}" for b in betas) + "]"


def make_ssg(args, num_scales: int | None, announce: bool = False):
    """(SSG hook or None, per-scale betas or None) from the flags of `add_ssg_args`.

    Checks the flags (and a beta list or guided window against `num_scales` when known). The hook is None
    when every beta is 0, so the sampler runs upstream's code path bit for bit. `announce=True` prints the
    per-scale betas (on rank 0 of a torchrun job only), so that every run states what it sampled.
    """
    import os

    from .guidance import SSG

    beta = parse_beta(args.beta)
    window = _window_flag(args)
    if window is not None and isinstance(beta, list):
        raise SSGError(f"{window[0]} needs one --beta number; a per-scale --beta list already says which scales "
                       f"are guided")
    from_scale = None if window is None else (window[1] if window[0] == "--beta-from-scale" else -window[1])
    ssg = SSG(beta=beta, schedule=args.beta_schedule, mode=args.dse_mode, rescale=args.rescale, prior=args.prior,
              cache=args.cache, from_scale=from_scale)
    if num_scales is None:
        return None, None
    try:
        betas = ssg.betas(num_scales)
    except SSGError as e:
        raise SSGError(f"{window[0]} {window[1]}: {e}" if window is not None else str(e)) from None
    if getattr(args, "compare", False) and not ssg.enabled:
        raise SSGError("--compare needs a non-zero --beta")
    if announce and os.environ.get("RANK", "0") == "0":
        how = "per-scale list" if isinstance(beta, list) else (
            f"{args.beta_schedule}" + ("" if window is None else f", {window[0]} {window[1]}"))
        print(f"SSG: beta per scale {format_betas(betas)} (--beta {args.beta}, {how})" if ssg.enabled
              else "SSG off: beta 0 at every scale (upstream's sampling)")
    return (ssg if ssg.enabled else None), betas


def ssg_settings(args, betas: list[float] | None) -> dict:
    """The SSG flags as they go into a manifest; `beta` is the resolved per-scale list. The guided-window flag
    appears only when given, so that manifests written before it existed still match on resume."""
    out = {"beta": betas, "beta_text": args.beta, "beta_schedule": args.beta_schedule, "dse_mode": args.dse_mode,
           "rescale": args.rescale, "prior": args.prior, "cache": args.cache}
    window = _window_flag(args)
    if window is not None:
        out[window[0].removeprefix("--").replace("-", "_")] = window[1]
    return out
