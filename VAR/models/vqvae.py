"""VAR's multi-scale VQVAE: encoder, decoder, `VectorQuantizer2`, and the two quant convs.

Same class name, constructor signature and state-dict keys (324 for the release) as upstream's
`models/vqvae.py`, so `vae_ch160v4096z32.pth` loads with `strict=True`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .basic_vae import Decoder, Encoder
from .quant import VectorQuantizer2

__all__ = ["VQVAE"]


class VQVAE(nn.Module):
    """Multi-scale VQVAE; images are (B, 3, 16P, 16P) in [-1, 1], latents (B, z_channels, P, P)."""

    def __init__(self, vocab_size: int = 4096, z_channels: int = 32, ch: int = 128, dropout: float = 0.0,
                 beta: float = 0.25, using_znorm: bool = False, quant_conv_ks: int = 3, quant_resi: float = 0.5,
                 share_quant_resi: int = 4, default_qresi_counts: int = 0,
                 v_patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), test_mode: bool = True):
        super().__init__()
        self.test_mode = test_mode
        self.V, self.Cvae = vocab_size, z_channels
        # the LDM vq-f16 configuration
        ddconfig = dict(dropout=dropout, ch=ch, z_channels=z_channels, in_channels=3, ch_mult=(1, 1, 2, 2, 4),
                        num_res_blocks=2, using_sa=True, using_mid_sa=True)
        self.encoder = Encoder(double_z=False, **ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.vocab_size = vocab_size
        self.downsample = 2 ** (len(ddconfig["ch_mult"]) - 1)
        self.quantize = VectorQuantizer2(
            vocab_size=vocab_size, Cvae=self.Cvae, using_znorm=using_znorm, beta=beta,
            default_qresi_counts=default_qresi_counts, v_patch_nums=v_patch_nums, quant_resi=quant_resi,
            share_quant_resi=share_quant_resi,
        )
        self.quant_conv = nn.Conv2d(self.Cvae, self.Cvae, quant_conv_ks, stride=1, padding=quant_conv_ks // 2)
        self.post_quant_conv = nn.Conv2d(self.Cvae, self.Cvae, quant_conv_ks, stride=1, padding=quant_conv_ks // 2)
        if self.test_mode:
            self.eval()
            for p in self.parameters():
                p.requires_grad_(False)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Accumulated latent (B, Cvae, P, P) -> image (B, 3, 16P, 16P) clamped to [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    def img_to_idxBl(self, inp_img_no_grad: torch.Tensor,
                     v_patch_nums: Sequence[int | tuple[int, int]] | None = None) -> list[torch.Tensor]:
        """Image (B, 3, H, W) in [-1, 1] -> per-scale token indices [(B, p_k * p_k)] int64."""
        f = self.quant_conv(self.encoder(inp_img_no_grad))
        return self.quantize.f_to_idxBl_or_fhat(f, to_fhat=False, v_patch_nums=v_patch_nums)

    def idxBl_to_img(self, ms_idx_Bl: list[torch.Tensor], same_shape: bool,
                     last_one: bool = False) -> list[torch.Tensor] | torch.Tensor:
        """Per-scale token indices [(B, l_k)] -> decoded image(s) in [-1, 1]."""
        B = ms_idx_Bl[0].shape[0]
        ms_h_BChw = []
        for idx_Bl in ms_idx_Bl:
            pn = round(idx_Bl.shape[1] ** 0.5)
            ms_h_BChw.append(self.quantize.embedding(idx_Bl).transpose(1, 2).view(B, self.Cvae, pn, pn))
        return self.embed_to_img(ms_h_BChw=ms_h_BChw, all_to_max_scale=same_shape, last_one=last_one)

    def embed_to_img(self, ms_h_BChw: list[torch.Tensor], all_to_max_scale: bool,
                     last_one: bool = False) -> list[torch.Tensor] | torch.Tensor:
        if last_one:
            return self.fhat_to_img(self.quantize.embed_to_fhat(ms_h_BChw, all_to_max_scale=all_to_max_scale, last_one=True))
        return [self.fhat_to_img(f_hat) for f_hat in
                self.quantize.embed_to_fhat(ms_h_BChw, all_to_max_scale=all_to_max_scale, last_one=False)]

    def img_to_reconstructed_img(self, x: torch.Tensor, v_patch_nums=None,
                                 last_one: bool = False) -> list[torch.Tensor] | torch.Tensor:
        f = self.quant_conv(self.encoder(x))
        ls_f_hat = self.quantize.f_to_idxBl_or_fhat(f, to_fhat=True, v_patch_nums=v_patch_nums)
        if last_one:
            return self.fhat_to_img(ls_f_hat[-1])
        return [self.fhat_to_img(f_hat) for f_hat in ls_f_hat]

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """A sane random initialisation (upstream has none: its builder leaves the VAE uninitialised
        because the release file is always loaded). Convs ~ N(0, 1/fan_in), biases 0, GroupNorm
        (1, 0), codebook ~ N(0, 1), usage statistics 0. Draws from `generator`."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, fan_in ** -0.5, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.GroupNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        self.quantize.embedding.weight.normal_(0.0, 1.0, generator=generator)
        self.quantize.ema_vocab_hit_SV.zero_()

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):
        # as upstream: usage statistics recorded for another number of scales are replaced by ours
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape[0] != self.quantize.ema_vocab_hit_SV.shape[0]:
            state_dict = {**state_dict, key: self.quantize.ema_vocab_hit_SV}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
