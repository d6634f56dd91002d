"""`HARTAutoEncoderWithDisc`: the class the released `tokenizer/` folder was saved from.

Its weights carry the autoencoder under `vae.` and a PatchGAN discriminator under `disc.`. Upstream
loads this file non-strictly; here every weight that sampling reads (codebook, phi convs,
`post_quant_conv`, decoder) must fit exactly, and only the keys listed in `UNUSED_BY_SAMPLING` may
be missing, extra or of another shape.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from ssg_core.hub import load_state_dict, load_strict

from hart.modules.models.loading import find_weight_file, read_config

from .configuration import HARTAutoEncoderWithDiscConfig
from .hart_autoencoder import HARTAutoEncoder

__all__ = ["HARTAutoEncoderWithDisc", "UNUSED_BY_SAMPLING"]

# Key prefixes of the tokenizer file that sampling never reads: the discriminator (not built here),
# the encoder side (image -> tokens: training and reconstruction only), the codebook-usage statistic
# (sized by the tokenizer's own v_patch_nums), and the discrete-only second decoder of
# `double_decoder` configs (not built: sampling decodes with `decoder`).
UNUSED_BY_SAMPLING = ("disc.", "vae.encoder.", "vae.quant_conv.", "vae.quantize.ema_vocab_hit_SV",
                      "vae.decoder2.", "vae.post_quant_conv2.")


class HARTAutoEncoderWithDisc(nn.Module):
    config_class = HARTAutoEncoderWithDiscConfig

    def __init__(self, config: HARTAutoEncoderWithDiscConfig):
        super().__init__()
        self.config = config
        self.vae = HARTAutoEncoder(config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, trust_pickle: bool = False) -> "HARTAutoEncoderWithDisc":
        """Build from `path/config.json` and load `path/{pytorch_model.bin|model.safetensors}`; eval mode.
        `trust_pickle`: see `ssg_core.hub.load_state_dict` (off: a file that could run code is refused)."""
        config = read_config(path, cls.config_class)
        model = cls(config)
        wfile = find_weight_file(path)
        sd = load_state_dict(wfile, trust_pickle=trust_pickle)
        load_strict(model, _fill_unused(model, sd), f"tokenizer weights {wfile}")
        return model.eval().requires_grad_(False)


def _fill_unused(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` with the `UNUSED_BY_SAMPLING` keys made to fit `model`: the file's tensor where its shape fits,
    else the module's own (initial) tensor; the file's other unused keys are dropped. Every other key is
    left as it is, so the strict load that follows still fails on a missing, extra or misshapen one."""
    out = {k: v for k, v in sd.items() if not k.startswith(UNUSED_BY_SAMPLING)}
    for k, own in model.state_dict().items():
        if k.startswith(UNUSED_BY_SAMPLING):
            out[k] = sd[k] if k in sd and sd[k].shape == own.shape else own
    return out
