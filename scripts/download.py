"""Fetch every file a model needs, ahead of time, and print where it went and its SHA-256.

    python scripts/download.py --list
    python scripts/download.py --model var-d16                   # into the Hugging Face cache
    python scripts/download.py --model var-d16 var-d36 --ckpt-dir /data/ckpt

Meant for clusters whose compute nodes have no network: run it on a login node, then
sample on the compute nodes with `HF_HUB_OFFLINE=1` (same HF cache, or the same
`--ckpt-dir`). The list of files per model is `ssg_core.hub.MODELS`; whole repositories
(`kind="snapshot"`, e.g. text encoders) go to the cache, or with `--ckpt-dir` to
`<ckpt-dir>/<repo name>/`.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from ssg_core.cli import ArgumentParser, main_guard
from ssg_core.errors import SSGError
from ssg_core.evaluation import check_output_path
from ssg_core.hub import MODELS, HubFile, offline, resolve_file, resolve_snapshot, sha256


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Download model checkpoints (Hugging Face) and print their SHA-256.")
    p.add_argument("--model", nargs="+", default=[], metavar="NAME",
                   help="model(s) to fetch, e.g. var-d16 (see --list)")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="put the files in this folder instead of the Hugging Face cache (whole repositories go to "
                        "<ckpt-dir>/<repo name>/); pass the same --ckpt-dir to the samplers")
    p.add_argument("--list", action="store_true", help="list the known models and their files, then exit")
    p.add_argument("--sha256", action=argparse.BooleanOptionalAction, default=True,
                   help="print each file's SHA-256 (reads every byte; --no-sha256 to skip on huge files)")
    return p


def describe(f: HubFile) -> str:
    if f.kind == "snapshot":
        pats = ", ".join(f.allow_patterns) if f.allow_patterns else "all files"
        return f"{f.repo_id} (repository: {pats})"
    return f"{f.repo_id}/{f.filename}"


def snapshot_dir(f: HubFile, ckpt_dir: Path | None) -> Path | None:
    """Where a whole repository goes under --ckpt-dir (its own folder, so it never mixes with single files)."""
    return None if ckpt_dir is None else ckpt_dir / f.repo_id.split("/")[-1]


def snapshot_files(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts)
    if patterns:
        files = [p for p in files if any(fnmatch.fnmatch(p.relative_to(folder).as_posix(), pat) for pat in patterns)]
    return files


def fetch(model: str, ckpt_dir: Path | None, with_hash: bool) -> list[Path]:
    """Fetch every file of `model`; print one line per file: path and SHA-256."""
    out: list[Path] = []
    for f in MODELS[model]:
        if f.kind == "snapshot":
            folder = resolve_snapshot(f.repo_id, list(f.allow_patterns) or None, snapshot_dir(f, ckpt_dir), model)
            files = snapshot_files(folder, f.allow_patterns)
            if not files:
                raise SSGError(f"{describe(f)}: nothing matching the patterns was downloaded into {folder}")
        elif f.kind == "file":
            files = [resolve_file(f.repo_id, f.filename, ckpt_dir, model)]
        else:
            raise SSGError(f"ssg_core.hub.MODELS[{model!r}]: unknown kind {f.kind!r}")
        for path in files:
            digest = sha256(path) if with_hash else "-"
            print(f"{model}  {path}  sha256 {digest}", flush=True)
        out.extend(files)
    return out


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, files in MODELS.items():
            print(name)
            for f in files:
                print(f"    {describe(f)}")
        return 0
    if not args.model:
        raise SSGError("give --model NAME (or --list to see the names)")
    unknown = [m for m in args.model if m not in MODELS]
    if unknown:
        raise SSGError(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    # a folder that cannot take downloads (read-only, full, not a folder) fails now, not after minutes of
    # downloading; offline, nothing is written (a read-only shared cache is fine then)
    if offline():
        pass
    elif args.ckpt_dir is not None:
        check_output_path(args.ckpt_dir, "--ckpt-dir", folder=True)
    else:
        from huggingface_hub import constants  # imported late: it reads HF_* variables at import
        check_output_path(constants.HF_HUB_CACHE, "the Hugging Face cache (HF_HUB_CACHE)", folder=True)
    total = sum(len(fetch(m, args.ckpt_dir, args.sha256)) for m in args.model)
    where = args.ckpt_dir if args.ckpt_dir is not None else "the Hugging Face cache"
    print(f"done: {total} file(s) in {where}; sample offline with HF_HUB_OFFLINE=1"
          + (f" and --ckpt-dir {args.ckpt_dir}" if args.ckpt_dir is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
