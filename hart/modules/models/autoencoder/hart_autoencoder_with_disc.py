"""`HARTAutoEncoderWithDisc`: the class the released `tokenizer/` folder was saved from.

Its weights carry the autoencoder under `vae.` and a PatchGAN discriminator under `disc.`. The
discriminator is training-only, so it is not built here: `disc.*` keys are accepted and skipped
(present or absent); every `vae.*` key must fit exactly.
"""
from __future__ import annotations

import os

import torch.nn as nn

from ssg_core.hub import load_state_dict, load_strict

from hart.modules.models.loading import find_weight_file, read_config

from .configuration import HARTAutoEncoderWithDiscConfig
from .hart_autoencoder import HARTAutoEncoder

__all__ = ["HARTAutoEncoderWithDisc"]


class HARTAutoEncoderWithDisc(nn.Module):
    config_class = HARTAutoEncoderWithDiscConfig

    def __init__(self, config: HARTAutoEncoderWithDiscConfig):
        super().__init__()
        self.config = config
        self.vae = HARTAutoEncoder(config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "HARTAutoEncoderWithDisc":
        """Build from `path/config.json` and load `path/{pytorch_model.bin|model.safetensors}`; eval mode."""
        config = read_config(path, cls.config_class)
        model = cls(config)
        wfile = find_weight_file(path)
        sd = {k: v for k, v in load_state_dict(wfile).items() if not k.startswith("disc.")}
        load_strict(model, sd, f"tokenizer weights {wfile}")
        return model.eval().requires_grad_(False)
