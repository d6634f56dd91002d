"""Stand-in for upstream's BSQ VAE builder: `vae_model(...)` returns a decoder from bit codes to pixels."""
import torch
import torch.nn.functional as F
from torch import nn


class AutoEncoder(nn.Module):
    def __init__(self, codebook_dim: int, patch_size: int = 16):
        super().__init__()
        self.codebook_dim, self.patch_size = codebook_dim, patch_size
        self.decoder = nn.Conv2d(codebook_dim, 3, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) codes -> (B, 3, 16h, 16w) in [-1, 1]."""
        return torch.tanh(F.interpolate(self.decoder(z), scale_factor=self.patch_size, mode="nearest"))


def vae_model(vqgan_ckpt, schedule_mode, codebook_dim, codebook_size, test_mode=True, patch_size=16,
              encoder_ch_mult=(1, 2, 4, 4, 4), decoder_ch_mult=(1, 2, 4, 4, 4)):
    vae = AutoEncoder(codebook_dim, patch_size)
    if vqgan_ckpt:
        vae.load_state_dict(torch.load(vqgan_ckpt, map_location="cpu", weights_only=True)["vae"], strict=True)
    return vae
