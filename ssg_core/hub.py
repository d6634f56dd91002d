"""Checkpoint files: where they come from, how they are fetched, how they are loaded.

Every model file the project can use is registered in `MODELS` (model name -> files),
so `scripts/download.py --model NAME` can fetch ahead on a machine with network and the
samplers can run later with `HF_HUB_OFFLINE=1`. Loading is safetensors or `weights_only=True`
(the released files are plain tensor dicts), then strict; failures become one-line `SSGError`s.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SSGError


@dataclass(frozen=True)
class HubFile:
    repo_id: str
    filename: str                 # path inside the Hugging Face repo
    repo_type: str = "model"
    kind: str = "file"            # "file" (one file) or "snapshot" (a whole repo / folder pattern)
    allow_patterns: tuple[str, ...] = ()


# model name -> files it needs. The model packages add their own entries here.
MODELS: dict[str, list[HubFile]] = {
    **{
        f"var-d{d}": [HubFile("FoundationVision/var", "vae_ch160v4096z32.pth"),
                      HubFile("FoundationVision/var", f"var_d{d}.pth")]
        for d in (16, 20, 24, 30, 36)
    },
    # Infinity: transformer + BSQ VAE from FoundationVision/Infinity, text encoder google/flan-t5-xl
    "infinity-2b": [HubFile("FoundationVision/Infinity", "infinity_2b_reg.pth"),
                    HubFile("FoundationVision/Infinity", "infinity_vae_d32reg.pth"),
                    HubFile("google/flan-t5-xl", "", kind="snapshot",
                            allow_patterns=("*.json", "*.model", "*.safetensors", "*.safetensors.index.json"))],
    "infinity-8b": [HubFile("FoundationVision/Infinity", "infinity_8b_weights", kind="snapshot",
                            allow_patterns=("infinity_8b_weights/*",)),
                    HubFile("FoundationVision/Infinity", "infinity_vae_d56_f8_14_patchify.pth"),
                    HubFile("google/flan-t5-xl", "", kind="snapshot",
                            allow_patterns=("*.json", "*.model", "*.safetensors", "*.safetensors.index.json"))],
    "infinity-125m": [HubFile("FoundationVision/Infinity", "infinity_125M_256x256.pth"),
                      HubFile("FoundationVision/Infinity", "infinity_vae_d16.pth"),
                      HubFile("google/flan-t5-xl", "", kind="snapshot",
                              allow_patterns=("*.json", "*.model", "*.safetensors", "*.safetensors.index.json"))],
    # HART: transformer config + EMA weights (llm/; upstream samples with the EMA file, the non-EMA
    # llm/pytorch_model.bin is only for --no-use_ema), hybrid tokenizer (tokenizer/), and the text
    # encoder mit-han-lab/Qwen2-VL-1.5B-Instruct (a plain Qwen2 LLM: config, tokenizer files, weights)
    "hart-0.7b": [HubFile("mit-han-lab/hart-0.7b-1024px", "", kind="snapshot",
                          allow_patterns=("llm/config.json", "llm/ema_model.bin", "tokenizer/*")),
                  HubFile("mit-han-lab/Qwen2-VL-1.5B-Instruct", "", kind="snapshot",
                          allow_patterns=("*.json", "*.txt", "*.safetensors", "*.bin"))],
}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _fetch_hint(model: str | None, ckpt_dir: str | os.PathLike | None) -> str:
    """The download command that puts the file where this lookup searched (same --ckpt-dir)."""
    cmd = f"python scripts/download.py --model {model}" if model else "python scripts/download.py"
    return f"`{cmd}" + (f" --ckpt-dir {ckpt_dir}`" if ckpt_dir is not None else "`")


def _why(e: Exception) -> str:
    return "HF_HUB_OFFLINE is set" if offline() else _first_line(e)


def resolve_file(repo_id: str, filename: str, ckpt_dir: str | os.PathLike | None = None,
                 model: str | None = None) -> Path:
    """Local path of `filename` from `repo_id`.

    With `ckpt_dir`, the file is looked up there first (as `ckpt_dir/filename` or by its
    base name) and downloaded into it when missing and the network is allowed. Without,
    the Hugging Face cache is used. A file that cannot be had raises a one-line
    `SSGError` naming the file and the command that fetches it.
    """
    if ckpt_dir is not None:
        for cand in (Path(ckpt_dir) / filename, Path(ckpt_dir) / Path(filename).name):
            if cand.is_file():
                return cand
    from huggingface_hub import hf_hub_download  # imported late: it reads HF_* variables at import
    try:
        path = hf_hub_download(repo_id=repo_id, filename=filename,
                               local_dir=str(ckpt_dir) if ckpt_dir is not None else None)
    except Exception as e:  # offline, no network, missing repo/file, auth: all the same to a user
        where = f"in {ckpt_dir}" if ckpt_dir is not None else "in the Hugging Face cache"
        raise SSGError(f"checkpoint file {filename!r} (repo {repo_id}) not found {where} and could not be "
                       f"downloaded ({_why(e)}); fetch it with {_fetch_hint(model, ckpt_dir)} on a machine with "
                       f"network") from None
    return Path(path)


def resolve_snapshot(repo_id: str, allow_patterns: list[str] | None = None,
                     ckpt_dir: str | os.PathLike | None = None, model: str | None = None) -> Path:
    """Local folder with (part of) a whole Hugging Face repo, e.g. a text encoder."""
    if ckpt_dir is not None and Path(ckpt_dir).is_dir() and any(Path(ckpt_dir).iterdir()):
        return Path(ckpt_dir)
    from huggingface_hub import snapshot_download
    try:
        path = snapshot_download(repo_id=repo_id, allow_patterns=allow_patterns,
                                 local_dir=str(ckpt_dir) if ckpt_dir is not None else None)
    except Exception as e:
        # snapshots live in <--ckpt-dir>/<repo name> (scripts/download.py and every sampler agree on this)
        hint = _fetch_hint(model, Path(ckpt_dir).parent if ckpt_dir is not None else None)
        raise SSGError(f"repo {repo_id} not available locally and could not be downloaded ({_why(e)}); "
                       f"fetch it with {hint} on a machine with network") from None
    return Path(path)


def sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's error texts carry terminal bold codes


def _first_line(e: Exception) -> str:
    """The informative line of an exception's text: for torch's weights-only refusals, the unpickler's own
    reason (the text opens with boilerplate), else the first line."""
    text = _ANSI.sub("", str(e)).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


_NOTED: set[Path] = set()


def _torch_load(path: Path, device: str):
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as e:
        if "Unsupported global" not in str(e):
            raise
    # A well-formed pickle that also holds Python objects (a training checkpoint's `args`, say). The released
    # files never do, so this is a file the user chose; load it in full, as upstream's own torch.load would.
    if path.resolve() not in _NOTED:  # once per file, though the CLIs read shapes first, then weights
        _NOTED.add(path.resolve())
        print(f"note: {path} holds pickled Python objects besides tensors; loading it with weights_only=False "
              f"(use only files you trust)", file=sys.stderr)
    return torch.load(str(path), map_location=device, weights_only=False)


def load_state_dict(path: str | os.PathLike, key: str | None = None, nested: tuple[str, ...] = (),
                    device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a checkpoint as a flat name -> tensor dict on CPU (or on "meta": shapes only, no tensor data read).

    `.safetensors` through safetensors, everything else with `torch.load(weights_only=True)`
    (falling back to a full load, with a note, for a pickle that holds Python objects).
    `key` selects an entry of a wrapped checkpoint (e.g. Infinity's VAE files keep it under "vae").
    `nested` lists dotted paths tried, in order, when the file is not a flat dict of tensors
    (e.g. "trainer.var_wo_ddp" for VAR's training checkpoints).
    """
    path = Path(path)
    if not path.is_file():
        raise SSGError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors" and device == "meta":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                sd = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device=device)
        else:
            sd = _torch_load(path, device)
    except Exception as e:
        raise SSGError(f"cannot read checkpoint {path} ({_first_line(e)}); "
                       f"the file is truncated, corrupt or not a weights file: delete it and download it again") from None
    if key is not None:
        if not isinstance(sd, dict) or key not in sd:
            raise SSGError(f"checkpoint {path} has no entry {key!r}")
        sd = sd[key]
    if not _is_flat(sd):
        for dotted in nested:
            inner = sd
            for part in dotted.split("."):
                inner = inner.get(part) if isinstance(inner, dict) else None
            if _is_flat(inner):
                return inner
        raise SSGError(f"checkpoint {path} is not a flat state dict of tensors"
                       + (f" and has none under {', '.join(nested)}" if nested else ""))
    return sd


def _is_flat(sd) -> bool:
    return isinstance(sd, dict) and bool(sd) and all(isinstance(v, torch.Tensor) for v in sd.values())


def load_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)` with a one-line error naming the first problems."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:2]})")
        raise SSGError(f"{what} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)


def missing_files(model: str, ckpt_dir: str | os.PathLike | None = None) -> list[str]:
    """The files of `model` (a `MODELS` name) that are not on this machine; never downloads anything.

    Looks where the samplers look: with `ckpt_dir`, a single file as `ckpt_dir/<filename>` or by its base
    name, a whole repository as a non-empty `ckpt_dir/<repo name>/` (where scripts/download.py puts it);
    without, the Hugging Face cache (a repository counts when its cached snapshot holds every pattern named
    without wildcards and at least one matching file). Returns one description per missing item.
    """
    import fnmatch

    from huggingface_hub import snapshot_download, try_to_load_from_cache
    missing = []
    for f in MODELS[model]:
        name = f"{f.repo_id}/{f.filename}" if f.kind == "file" else f"{f.repo_id} (repository)"
        if f.kind == "file" and ckpt_dir is not None:
            found = any(c.is_file() for c in (Path(ckpt_dir) / f.filename, Path(ckpt_dir) / Path(f.filename).name))
        elif f.kind == "file":
            found = isinstance(try_to_load_from_cache(f.repo_id, f.filename, repo_type=f.repo_type), str)
        elif ckpt_dir is not None:
            folder = Path(ckpt_dir) / f.repo_id.split("/")[-1]
            found = folder.is_dir() and any(folder.iterdir())
        else:
            try:
                folder = Path(snapshot_download(f.repo_id, repo_type=f.repo_type, local_files_only=True))
            except Exception:  # not cached (huggingface_hub raises LocalEntryNotFoundError, or an OSError)
                folder = None
            files = ([p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
                     if folder is not None else [])
            pats = f.allow_patterns or ("*",)
            found = (any(fnmatch.fnmatch(p, pat) for p in files for pat in pats)
                     and all(p in files for p in pats if not any(ch in p for ch in "*?[")))
        if not found:
            missing.append(name)
    return missing
