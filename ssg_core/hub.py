"""Checkpoint files: where they come from, how they are fetched, how they are loaded.

Every model file the project can use is registered in `MODELS` (model name -> files),
so `scripts/download.py --model NAME` can fetch ahead on a machine with network and the
samplers can run later with `HF_HUB_OFFLINE=1`. Loading is safetensors or `weights_only=True`
(the released files are plain tensor dicts), then strict; failures become one-line `SSGError`s.
A checkpoint never runs code unless the caller passes `trust_pickle=True` (`--trust-pickle`).
"""
from __future__ import annotations

import _compat_pickle  # the stdlib's table of Python 2 -> 3 names, which pickle itself uses
import hashlib
import io
import os
import pickle
import pickletools
import re
import sys
import warnings
import zipfile
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


# ---------------------------------------------------------------- pickled checkpoints: weights, never code
# A `.pth`/`.bin` file is a pickle, and a pickle can name any Python function to call while it loads. torch's
# weights-only loader refuses every global outside a fixed set (tensors, storages, plain containers), so
# nothing in a refused file runs. The only ways past it are the inert stand-ins below and, for one run, the
# user's explicit `trust_pickle=True` (`--trust-pickle`).

class PickledArgs:
    """What a training script's pickled argument object becomes here: its attributes and nothing else.

    None of the original class's code exists in this stand-in, so loading one runs nothing of the file."""

    def __repr__(self) -> str:
        return f"PickledArgs({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _stand_in_class(full_name: str) -> type:
    """A `PickledArgs` subclass under the name a checkpoint uses for the original class ("module.Name"):
    torch's allow-list matches globals by `__module__` + `__qualname__`."""
    module, _, name = full_name.rpartition(".")
    return type(name, (PickledArgs,), {"__module__": module, "__qualname__": name,
                                       "__doc__": f"inert stand-in for {full_name} (see ssg_core.hub.PickledArgs)"})


def _no_attribute(obj, name, default=None):
    """Stand-in for `builtins.getattr`: looks nothing up, returns None."""
    return None


_no_attribute.__module__, _no_attribute.__qualname__, _no_attribute.__name__ = "builtins", "getattr", "getattr"

# Exactly the globals a training checkpoint of the upstream codebases holds besides tensors and plain
# containers, each mapped to an inert stand-in. Upstream's train.py (VAR at 78b9539, Infinity) stores
# `args.state_dict()`, a plain OrderedDict, which needs no entry at all; a checkpoint that pickles the argument
# object itself (`torch.save({..., "args": args})`) refers to its class, and, because the class is a `tap.Tap`
# whose pickled state lists its bound methods, to `builtins.getattr` once per method (checked with
# typed-argument-parser 1.12). The stand-ins keep the attributes, the methods become None.
TRAINING_GLOBALS: dict[str, object] = {
    "utils.arg_util.Args": _stand_in_class("utils.arg_util.Args"),                    # VAR
    "infinity.utils.arg_util.Args": _stand_in_class("infinity.utils.arg_util.Args"),  # Infinity
    "builtins.getattr": _no_attribute,
}


def _allow_list():
    """Context in which torch's weights-only loader also accepts `TRAINING_GLOBALS` (as their stand-ins).
    `safe_globals` builds allow-listed classes and maps Python 2 names (`__builtin__`, from torch.save's
    protocol 2) as the stand-ins need (torch >= 2.5; pyproject asks for >= 2.6, see the README's security notes)."""
    return torch.serialization.safe_globals(list(TRAINING_GLOBALS.values()))


def _pickle_globals(path: Path) -> list[str]:
    """Every global ("module.name") the file's pickle(s) refer to, in file order, read with `pickletools`:
    the opcodes are decoded, nothing is executed. Handles torch's zip format (data.pkl), the legacy format
    (several pickles in a row) and a plain pickle; stops quietly where the bytes stop being a pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                pkl = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                streams = [io.BytesIO(z.read(pkl[0]))] if pkl else []
        else:
            streams = [open(path, "rb")]
    except (OSError, zipfile.BadZipFile):
        return []
    found: list[str] = []

    def add(module: str, name: str) -> None:  # Python 2 names (__builtin__) as pickle and torch map them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        full = f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"
        if full not in found:
            found.append(full)

    for f in streams:
        with f:
            for _ in range(5):  # the legacy format is 5 pickles, then raw tensor bytes (never parsed)
                strings: list = []     # values of the latest pushes (strings, else None), for STACK_GLOBAL
                memo: dict = {}
                try:
                    for op, arg, _ in pickletools.genops(f):
                        if op.name == "GLOBAL":
                            add(*arg.split(" ", 1))
                        elif op.name == "STACK_GLOBAL" and len(strings) >= 2 and None not in strings[-2:]:
                            add(strings[-2], strings[-1])
                        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                            memo[arg] = strings[-1] if strings else None
                        elif op.name == "MEMOIZE":
                            memo[len(memo)] = strings[-1] if strings else None
                        if op.name in ("BINGET", "LONG_BINGET", "GET"):
                            strings.append(memo.get(arg))
                        elif "UNICODE" in op.name or op.name.endswith("STRING"):
                            strings.append(arg if isinstance(arg, str) else None)
                        elif op.name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT", "FRAME", "PROTO"):
                            strings.append(None)  # any other value: the next STACK_GLOBAL's names are not plain
                except Exception:  # not (or no longer) a pickle: raw bytes, truncation, garbage
                    break
    return found


def unsafe_globals(path: str | os.PathLike) -> list[str]:
    """The globals in a pickled checkpoint that torch's weights-only loader refuses (outside torch's own
    allow-list and `TRAINING_GLOBALS`), in file order. Reads the file; executes nothing of it."""
    path = Path(path)
    found = _pickle_globals(path)
    try:  # torch's own verdict, for zip checkpoints (torch >= 2.6)
        with _allow_list():
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # a legacy-format file or a plain pickle: the same test by hand
        from torch import _weights_only_unpickler as wou  # torch's default allow-list (private; guarded)
        allowed = set(getattr(wou, "_get_allowed_globals", dict)()) | set(TRAINING_GLOBALS)
        unsafe = {n for n in found if n not in allowed}
    return [n for n in found if n in unsafe] + sorted(unsafe.difference(found))


_NOTED: set[Path] = set()


def _refusal(path: Path, e: Exception) -> SSGError:
    """The one-line error for a file the weights-only loader refused: what it refers to, and the way out."""
    how = "if you trust the file and its source, rerun with --trust-pickle (Python: trust_pickle=True)"
    bad = unsafe_globals(path)
    if bad:
        return SSGError(f"checkpoint {path} refers to the Python global {bad[0]!r}, which could run code when "
                        f"loaded, so it was not loaded and nothing in it ran; {how}")
    return SSGError(f"checkpoint {path} is corrupt or holds Python objects that torch's weights-only loader "
                    f"refuses ({_first_line(e)}); nothing in it ran; {how}")


def _torch_load(path: Path, device: str, trust_pickle: bool):
    try:
        with _allow_list(), warnings.catch_warnings():
            # a plain pickle of protocol >= 4 makes torch warn before it refuses the file: our error says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only loader's refusal
        if not trust_pickle:
            raise _refusal(path, e) from None
    # The user vouched for this file for this run: load it in full, which may run code from it.
    if path.resolve() not in _NOTED:  # once per file, though the CLIs read shapes first, then weights
        _NOTED.add(path.resolve())
        print(f"note: {path} holds Python objects besides tensors; loading it with weights_only=False as "
              f"--trust-pickle asks (this can run code from the file)", file=sys.stderr)
    return torch.load(str(path), map_location=device, weights_only=False)


def load_state_dict(path: str | os.PathLike, key: str | None = None, nested: tuple[str, ...] = (),
                    device: str = "cpu", *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint as a flat name -> tensor dict on CPU (or on "meta": shapes only, no tensor data read).

    `.safetensors` through safetensors, everything else with `torch.load(weights_only=True)`, which also
    accepts a training checkpoint's pickled argument object as inert data (`TRAINING_GLOBALS`). A file that
    loader refuses (it refers to other Python code) raises a one-line `SSGError` naming the first such
    global; nothing of it has run. `trust_pickle=True` loads such a file in full instead (`weights_only=False`,
    which can run code from the file: only for files from a source you trust).
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
            sd = _torch_load(path, device, trust_pickle)
    except SSGError:
        raise
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
