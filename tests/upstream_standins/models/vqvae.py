"""Stand-in VQVAE: a codebook and a decoder from the accumulated latent to pixels."""
import torch
import torch.nn.functional as F
from torch import nn


class VQVAE(nn.Module):
    def __init__(self, vocab_size=4096, z_channels=32, ch=160, v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)):
        super().__init__()
        self.vocab_size, self.Cvae, self.v_patch_nums = vocab_size, z_channels, tuple(v_patch_nums)
        self.embedding = nn.Embedding(vocab_size, z_channels)
        self.encoder = nn.Module()
        self.encoder.conv_in = nn.Conv2d(3, ch, 1)   # unused; its width is what a loader reads `ch` from
        self.decoder = nn.Conv2d(z_channels, 3, 1)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """(B, Cvae, P, P) -> (B, 3, 16P, 16P) in [-1, 1]."""
        return torch.tanh(F.interpolate(self.decoder(f_hat), scale_factor=16, mode="nearest"))
