"""`Conv`: a thin wrapper whose `.conv` child gives the official VAE key names (`....conv.weight`)."""
from __future__ import annotations

import torch
import torch.nn as nn


class Conv(nn.Module):
    """2-D convolution stored under `.conv` (upstream also supports 3-D; the released image VAEs use 2-D)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 cnn_type: str = '2d'):
        super().__init__()
        if cnn_type != '2d':
            raise NotImplementedError("only cnn_type='2d' (the released image VAEs) is implemented")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
