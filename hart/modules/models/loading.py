"""Reading upstream's `config.json` + weight folders with one-line errors.

Upstream's classes are `transformers.PreTrainedModel`s whose `from_pretrained` breaks under
transformers >= 5 (they never call `post_init`); ours are plain modules with a small
`from_pretrained` built on these helpers: config from JSON, eager construction, strict load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ssg_core.errors import SSGError

WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")


def read_config_dict(folder: str | os.PathLike, model_type: str) -> dict:
    """`folder/config.json` as a dict; checks its `model_type` (when present) is `model_type`."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SSGError(f"{path} not found: expected a HART checkpoint folder (llm/ or tokenizer/) with config.json")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SSGError(f"cannot read {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise SSGError(f"{path} does not hold a JSON object")
    found = cfg.get("model_type", model_type)
    if found != model_type:
        raise SSGError(f"{path} is a {found!r} config, expected {model_type!r}")
    return cfg


def find_weight_file(folder: str | os.PathLike, names: tuple[str, ...] = WEIGHT_FILES) -> Path:
    """The first of `names` present in `folder`."""
    for name in names:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise SSGError(f"no weight file in {folder} (looked for {', '.join(names)})")


def read_config(folder: str | os.PathLike, config_class):
    """`folder/config.json` as an instance of `config_class` (checked `model_type`, unknown keys are errors)."""
    cfg = read_config_dict(folder, config_class.model_type)
    try:
        config = config_class(**{k: v for k, v in cfg.items() if k != "model_type"})
    except TypeError as e:
        raise SSGError(f"{folder}/config.json: {e}") from None
    config._name_or_path = str(folder)
    return config
