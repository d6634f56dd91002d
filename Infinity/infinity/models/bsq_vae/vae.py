"""Infinity's BSQ VAE: `AutoEncoder` and upstream's builder `vae_model`.

Official files (`infinity_vae_d32reg.pth`, `infinity_vae_d16.pth`,
`infinity_vae_d56_f8_14_patchify.pth`, ...) are dicts whose `"vae"` entry is the state dict;
upstream's `load_cnn` also accepts older unwrapped names (`X.weight` for `X.conv.weight` /
`X.norm.weight`) and silently skips what it cannot place. Here the same renaming is done,
then the load is strict: a file that does not fit raises one clear `SSGError`.
"""
from __future__ import annotations

import os
import re

import torch
import torch.nn as nn

from ssg_core.errors import SSGError
from ssg_core.hub import load_state_dict, load_strict
from .flux_vqgan import Decoder, Encoder
from .multiscale_bsq import MultiScaleBSQ


class AutoEncoder(nn.Module):
    """Encoder, decoder and multi-scale BSQ quantizer (`quantize` is an alias of `quantizer`, as upstream)."""

    def __init__(self, codebook_dim: int = 32, codebook_size: int | None = None, patch_size: int = 16,
                 encoder_ch_mult=(1, 2, 4, 4, 4), decoder_ch_mult=(1, 2, 4, 4, 4), base_ch: int = 128,
                 num_res_blocks: int = 2, new_quant: bool = True):
        super().__init__()
        n_up = len(decoder_ch_mult) - 1
        if 2 ** n_up != patch_size:
            raise SSGError(f"decoder_ch_mult {list(decoder_ch_mult)} gives stride {2 ** n_up}, not patch_size {patch_size}")
        self.codebook_dim = self.embed_dim = codebook_dim
        self.patch_size = patch_size
        self.encoder = Encoder(ch=base_ch, ch_mult=encoder_ch_mult, num_res_blocks=num_res_blocks, z_channels=codebook_dim)
        self.decoder = Decoder(ch=base_ch, ch_mult=decoder_ch_mult, num_res_blocks=num_res_blocks, z_channels=codebook_dim)
        self.quantizer = MultiScaleBSQ(dim=codebook_dim, codebook_size=codebook_size, new_quant=new_quant)
        self.quantize = self.quantizer

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Summed codes (B, d, h, w) -> image (B, 3, h*patch, w*patch) clamped to [-1, 1]."""
        return self.decoder(z).clamp_(-1, 1)


def _upstream_key_names(sd: dict[str, torch.Tensor], own_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename keys the way upstream's `load_cnn` places them: `X.weight` -> `X.conv.weight` / `X.norm.weight`."""
    out = {}
    for k, v in sd.items():
        if k not in own_keys:
            for pat, rep in ((r'\.(weight|bias)$', r'.conv.\1'), (r'\.(weight|bias)$', r'.norm.\1')):
                cand = re.sub(pat, rep, k)
                if cand in own_keys:
                    k = cand
                    break
        out[k] = v
    return out


def infer_vae_config(sd: dict[str, torch.Tensor]) -> dict:
    """codebook_dim, base_ch, ch_mult and patch_size read from a VAE state dict's decoder weights."""
    try:
        w_in = sd['decoder.conv_in.conv.weight']           # (ch * ch_mult[-1], d, 3, 3)
        w_out = sd['decoder.conv_out.conv.weight']         # (3, ch, 3, 3)
    except KeyError:
        raise SSGError("VAE state dict has no decoder.conv_in / decoder.conv_out weights: not an Infinity BSQ VAE") from None
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r'decoder\.up\.(\d+)\.', k))})
    base_ch = int(w_out.shape[1])
    ch_mult = [int(sd[f'decoder.up.{L}.block.0.conv1.conv.weight'].shape[0]) // base_ch for L in levels]
    enc_levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r'encoder\.down\.(\d+)\.', k))})
    enc_mult = [int(sd[f'encoder.down.{L}.block.0.conv1.conv.weight'].shape[0]) // base_ch for L in enc_levels] or ch_mult
    return dict(codebook_dim=int(w_in.shape[1]), base_ch=base_ch, decoder_ch_mult=ch_mult,
                encoder_ch_mult=enc_mult, patch_size=2 ** (len(levels) - 1))


def load_cnn(model: AutoEncoder, state_dict: dict[str, torch.Tensor], what: str = "VAE checkpoint") -> AutoEncoder:
    """Load a VAE state dict with upstream's key renaming, strictly."""
    sd = _upstream_key_names(state_dict, set(model.state_dict().keys()))
    load_strict(model, sd, what)
    return model


def vae_model(vqgan_ckpt, schedule_mode: str = 'dynamic', codebook_dim: int = 32, codebook_size: int | None = None,
              test_mode: bool = True, patch_size: int = 16, encoder_ch_mult=(1, 2, 4, 4, 4),
              decoder_ch_mult=(1, 2, 4, 4, 4), base_ch: int = 128) -> AutoEncoder:
    """Build the VAE as upstream (base_ch 128, 2 ResBlocks per level, GroupNorm, no attention) and load it.

    vqgan_ckpt: a path to an official file (its `"vae"` entry is used), a state dict, or `{}`
    for random weights. `base_ch` is an extension for tiny test models (upstream hard-codes 128).
    Returns the model in eval mode without gradients.
    """
    vae = AutoEncoder(codebook_dim=codebook_dim, codebook_size=codebook_size, patch_size=patch_size,
                      encoder_ch_mult=encoder_ch_mult, decoder_ch_mult=decoder_ch_mult, base_ch=base_ch)
    if isinstance(vqgan_ckpt, (str, os.PathLike)):
        load_cnn(vae, load_state_dict(vqgan_ckpt, key='vae'), what=f"VAE checkpoint {vqgan_ckpt}")
    elif vqgan_ckpt:
        load_cnn(vae, vqgan_ckpt)
    return vae.eval().requires_grad_(False)
