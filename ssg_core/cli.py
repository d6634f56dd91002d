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
def add_ssg_args(p, default_beta: str = "0.5", compare: bool = True):
    """Add the SSG flags to an argparse parser (each also spelled with underscores, as upstream CLIs do).

    Sets `beta` (text), `beta_schedule`, `dse_mode`, `rescale`, `prior`, `cache`, and `compare`
    unless `compare=False` (evaluation samplers, which write one set of images).
    """
    import argparse

    from .dse import MODES, PRIORS
    from .guidance import CACHES, SCHEDULES

    g = p.add_argument_group("SSG (Scaled Spatial Guidance)")
    g.add_argument("--beta", type=str, default=str(default_beta),
                   help="guidance strength: one number (spread over the scales k >= 1 by --beta-schedule) or a "
                        "comma-separated list with one value per scale (scale 0 is never guided, so its value must "
                        f"be 0). 0 gives upstream's samples exactly. The paper publishes no value; default {default_beta}")
    g.add_argument("--beta-schedule", "--beta_schedule", dest="beta_schedule", choices=SCHEDULES, default="constant",
                   help="how one --beta number becomes per-scale values for K scales (beta_0 = 0 always): constant: "
                        "beta_k = beta; linear-decay: beta_k = beta*(K-k)/(K-1), from beta at scale 1 down to "
                        "beta/(K-1); linear-increase: beta_k = beta*k/(K-1), up to beta at the last scale")
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


def make_ssg(args, num_scales: int | None):
    """(SSG hook or None, per-scale betas or None) from the flags of `add_ssg_args`.

    Checks the flags (and a beta list against `num_scales` when known). The hook is None
    when every beta is 0, so the sampler runs upstream's code path bit for bit.
    """
    from .guidance import SSG

    ssg = SSG(beta=parse_beta(args.beta), schedule=args.beta_schedule, mode=args.dse_mode, rescale=args.rescale,
              prior=args.prior, cache=args.cache)
    if num_scales is None:
        return None, None
    betas = ssg.betas(num_scales)
    if getattr(args, "compare", False) and not ssg.enabled:
        raise SSGError("--compare needs a non-zero --beta")
    return (ssg if ssg.enabled else None), betas


def ssg_settings(args, betas: list[float] | None) -> dict:
    """The SSG flags as they go into a manifest."""
    return {"beta": betas, "beta_text": args.beta, "beta_schedule": args.beta_schedule, "dse_mode": args.dse_mode,
            "rescale": args.rescale, "prior": args.prior, "cache": args.cache}
