"""HART's hybrid tokenizer: CNN encoder/decoder around a multi-scale VQ codebook (`HARTAutoEncoder`).

Inference uses the codebook, the phi refiners, `post_quant_conv` and the decoder (never `decoder2`):
`image = clamp(decoder(post_quant_conv(f_hat)), -1, 1)` with f_hat (B, Cvae, h, w) the sum of the
discrete contributions of every scale plus the last scale's continuous residual.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from ssg_core.errors import SSGError

from hart.modules.networks.basic_vae import Decoder, Encoder

from .configuration import HARTAutoEncoderConfig
from .quantize.hart_hybrid_quantize import HARTHybridQuantizer
from .quantize.var_quantize_multiple_res import VectorQuantizer2

__all__ = ["HARTAutoEncoder"]


class HARTAutoEncoder(nn.Module):
    config_class = HARTAutoEncoderConfig

    def __init__(self, config: HARTAutoEncoderConfig):
        super().__init__()
        if config.double_decoder and config.quantizer_type != "var_hybrid":  # upstream asserts the same
            raise SSGError("tokenizer config: double_decoder=true needs quantizer_type 'var_hybrid'")
        if config.ch % 32 or any((config.ch * m) % 32 for m in config.ch_mult):
            raise SSGError(f"tokenizer config: ch={config.ch} times every ch_mult {config.ch_mult} must be a multiple "
                           f"of 32 (GroupNorm with 32 groups)")
        self.config = config
        self.V, self.Cvae = config.vocab_size, config.z_channels
        ddconfig = dict(dropout=config.dropout, ch=config.ch, z_channels=config.z_channels, in_channels=3,
                        ch_mult=config.ch_mult, num_res_blocks=2, using_sa=True, using_mid_sa=True)
        self.downsample = 2 ** (len(config.ch_mult) - 1)
        self.encoder = Encoder(double_z=False, **ddconfig)
        self.decoder = Decoder(**ddconfig)
        quantizer = HARTHybridQuantizer if config.quantizer_type == "var_hybrid" else VectorQuantizer2
        if config.quantizer_type not in ("var_hybrid", "var"):
            raise SSGError(f"tokenizer config: unsupported quantizer_type {config.quantizer_type!r} "
                           f"(expected 'var_hybrid')")
        self.quantize = quantizer(vocab_size=self.V, Cvae=self.Cvae, using_znorm=config.using_znorm,
                                  beta=config.beta, default_qresi_counts=config.default_qresi_counts,
                                  v_patch_nums=config.v_patch_nums, quant_resi=config.quant_resi,
                                  share_quant_resi=config.share_quant_resi)
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(self.Cvae, self.Cvae, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(self.Cvae, self.Cvae, ks, stride=1, padding=ks // 2)
        # double_decoder: upstream also builds `decoder2` / `post_quant_conv2`, a discrete-only decoder used in
        # training; sampling always decodes with `decoder`, so they are not built and the loader skips their keys
        self.double_decoder = config.double_decoder

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """(B, Cvae, h, w) -> (B, 3, h*ds, w*ds) in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "HARTAutoEncoder":
        from .hart_autoencoder_with_disc import HARTAutoEncoderWithDisc
        return HARTAutoEncoderWithDisc.from_pretrained(path).vae
