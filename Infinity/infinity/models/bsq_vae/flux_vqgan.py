"""Convolutional encoder and decoder of Infinity's BSQ VAE (no attention, GroupNorm, swish).

Key names follow upstream: `{encoder,decoder}.conv_in.conv`, `.mid.block_{1,2}`,
`encoder.down.{i}.block.{j}` / `.downsample.conv.conv`, `decoder.up.{i}.block.{j}` /
`.upsample.conv.conv`, `.norm_out.norm`, `.conv_out.conv`; ResBlocks hold `norm1.norm`,
`conv1.conv`, `norm2.norm`, `conv2.conv` and `nin_shortcut.conv` when the width changes.
Only the decoder is needed for text-to-image; the encoder exists so that the official
files load strictly (its forward follows the same conventions but is not pinned by tests).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import Conv


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Normalize(nn.Module):
    """GroupNorm(32 groups, eps 1e-6, affine) stored under `.norm`."""

    def __init__(self, in_channels: int, norm_type: str = 'group'):
        super().__init__()
        if norm_type != 'group':
            raise NotImplementedError("only norm_type='group' is implemented")
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = Conv(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = Conv(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = Conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 convolution."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = Conv(in_channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class Downsample(nn.Module):
    """Pad (0, 1, 0, 1), then a 3x3 convolution with stride 2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = Conv(in_channels, in_channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode='constant', value=0))


class _Mid(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch)
        self.block_2 = ResnetBlock(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, z_channels, H/2^(n-1), W/2^(n-1)) for n = len(ch_mult)."""

    def __init__(self, ch: int = 128, ch_mult=(1, 2, 4, 4, 4), num_res_blocks: int = 2, z_channels: int = 32,
                 in_channels: int = 3):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = Conv(in_channels, ch, 3, padding=1)
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            down = nn.Module()
            down.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                down.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = _Mid(block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i_level, down in enumerate(self.down):
            for block in down.block:
                h = block(h)
            if i_level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h*2^(n-1), w*2^(n-1)) for n = len(ch_mult)."""

    def __init__(self, ch: int = 128, ch_mult=(1, 2, 4, 4, 4), num_res_blocks: int = 2, z_channels: int = 32,
                 out_ch: int = 3):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        self.conv_in = Conv(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            up = nn.Module()
            up.block = nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if i_level != 0:
                up.upsample = Upsample(block_in)
            self.up.insert(0, up)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i_level in reversed(range(self.num_resolutions)):
            for block in self.up[i_level].block:
                h = block(h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
