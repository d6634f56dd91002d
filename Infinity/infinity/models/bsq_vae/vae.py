"""Infinity's BSQ VAE: `AutoEncoder` and upstream's builder `vae_model`.

Official files (`infinity_vae_d32reg.pth`, `infinity_vae_d16.pth`,
`infinity_vae_d56_f8_14_patchify.pth`, ...) are dicts whose `"vae"` entry is the state dict;
upstream's `load_cnn` also accepts older unwrapped names (`X.weight` for `X.conv.weight` /
`X.norm.weight`) and silently skips what it cannot place. Here the same renaming is done,
then the decoder (all that sampling runs) loads strictly: a file that does not fit raises one
clear `SSGError`; the encoder and the quantizer's mask buffer are optional (see `load_cnn`).
"""
from __future__ import annotations

import os
import re

import torch
import torch.nn as nn

from ssg_core.errors import SSGError
from ssg_core.hub import load_state_dict
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


# Modules whose weights live one level down (`Conv` -> `.conv`, `Normalize` -> `.norm`). Older files
# name them without that level (`decoder.conv_in.weight`); upstream's `load_cnn` then tries the
# wrapped name. Up/downsampling keep their `Conv` under the name `conv`, hence `upsample.conv`.
_CONV_WRAPPERS = ('conv_in', 'conv_out', 'conv1', 'conv2', 'nin_shortcut', 'upsample.conv', 'downsample.conv')
_NORM_WRAPPERS = ('norm1', 'norm2', 'norm_out')


def upstream_key_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys renamed to this module's names as upstream's `load_cnn` places them: `X.weight` ->
    `X.conv.weight` / `X.norm.weight` when X is a conv / norm wrapper. Names already in the new
    style are kept, so mixed ("partly wrapped") files and repeated calls are fine."""
    out = {}
    for k, v in sd.items():
        path, _, leaf = k.rpartition('.')
        if leaf in ('weight', 'bias'):
            for wrappers, inner in ((_CONV_WRAPPERS, 'conv'), (_NORM_WRAPPERS, 'norm')):
                if any(path == w or path.endswith('.' + w) for w in wrappers):
                    k = f'{path}.{inner}.{leaf}'
                    break
        out[k] = v
    return out


def infer_vae_config(sd: dict[str, torch.Tensor]) -> dict:
    """codebook_dim, base_ch, ch_mult and patch_size read from a VAE state dict's decoder weights.

    Either key style is accepted (renamed first, see `upstream_key_names`); a file without the
    weights needed here is a one-line `SSGError`.
    """
    sd = upstream_key_names(sd)
    try:
        w_in = sd['decoder.conv_in.conv.weight']           # (ch * ch_mult[-1], d, 3, 3)
        w_out = sd['decoder.conv_out.conv.weight']         # (3, ch, 3, 3)
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r'decoder\.up\.(\d+)\.', k))})
        base_ch = int(w_out.shape[1])
        ch_mult = [int(sd[f'decoder.up.{L}.block.0.conv1.conv.weight'].shape[0]) // base_ch for L in levels]
        enc_levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r'encoder\.down\.(\d+)\.', k))})
        enc_mult = [int(sd[f'encoder.down.{L}.block.0.conv1.conv.weight'].shape[0]) // base_ch
                    for L in enc_levels] or ch_mult
    except KeyError as e:
        raise SSGError(f"VAE state dict has no {e.args[0]!r}: not an Infinity BSQ VAE") from None
    if not levels:
        raise SSGError("VAE state dict has no decoder.up.* weights: not an Infinity BSQ VAE")
    return dict(codebook_dim=int(w_in.shape[1]), base_ch=base_ch, decoder_ch_mult=ch_mult,
                encoder_ch_mult=enc_mult, patch_size=2 ** (len(levels) - 1))


def load_cnn(model: AutoEncoder, state_dict: dict[str, torch.Tensor], what: str = "VAE checkpoint") -> AutoEncoder:
    """Load a VAE state dict with upstream's key renaming; strict for what sampling uses.

    Text-to-image runs only the decoder, so every `decoder.*` weight must be in the file with the
    model's shape, and a `decoder.*` key the model has no place for (another architecture) is an
    error. Optional, because sampling never reads them: the encoder, and the quantizer's bit mask
    (one buffer with two names, `quantizer.lfq.mask` and `quantize.lfq.mask`; it is 2^(d-1)..1
    anyway). They are loaded when present (shapes checked). Other keys are ignored, as upstream's
    `load_cnn` ignores what it cannot place.
    """
    sd = upstream_key_names(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k.startswith('decoder.') and k not in sd]
    unexpected = [k for k in sd if k.startswith('decoder.') and k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing decoder keys (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected decoder keys (e.g. {unexpected[:3]})"] if unexpected else []
        parts += [f"{len(wrong)} shape mismatches (e.g. {wrong[:2]})"] if wrong else []
        raise SSGError(f"{what} does not fit the model: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return model


def vae_model(vqgan_ckpt, schedule_mode: str = 'dynamic', codebook_dim: int = 32, codebook_size: int | None = None,
              test_mode: bool = True, patch_size: int = 16, encoder_ch_mult=(1, 2, 4, 4, 4),
              decoder_ch_mult=(1, 2, 4, 4, 4), base_ch: int = 128, *, trust_pickle: bool = False) -> AutoEncoder:
    """Build the VAE as upstream (base_ch 128, 2 ResBlocks per level, GroupNorm, no attention) and load it.

    vqgan_ckpt: a path to an official file (its `"vae"` entry is used), a state dict, or `{}`
    for random weights. `base_ch` is an extension for tiny test models (upstream hard-codes 128).
    `trust_pickle`: see `ssg_core.hub.load_state_dict` (off: a file that could run code is refused).
    Returns the model in eval mode without gradients.
    """
    vae = AutoEncoder(codebook_dim=codebook_dim, codebook_size=codebook_size, patch_size=patch_size,
                      encoder_ch_mult=encoder_ch_mult, decoder_ch_mult=decoder_ch_mult, base_ch=base_ch)
    if isinstance(vqgan_ckpt, (str, os.PathLike)):
        sd = load_state_dict(vqgan_ckpt, key='vae', trust_pickle=trust_pickle)
        load_cnn(vae, sd, what=f"VAE checkpoint {vqgan_ckpt}")
    elif vqgan_ckpt:
        load_cnn(vae, vqgan_ckpt)
    return vae.eval().requires_grad_(False)
