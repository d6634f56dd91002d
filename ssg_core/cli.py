"""Small helpers shared by the command-line entry points."""
from __future__ import annotations

import functools
import sys
from typing import Callable

from .errors import SSGError


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
