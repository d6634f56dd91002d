"""Stand-in for FoundationVision/VAR's `models` package: `build_vae_var` and the two classes."""
from .var import VAR
from .vqvae import VQVAE


def build_vae_var(device, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), V=4096, Cvae=32, ch=160,
                  share_quant_resi=4, num_classes=1000, depth=16, shared_aln=False, attn_l2_norm=True,
                  flash_if_available=True, fused_if_available=True, init_adaln=0.5, init_adaln_gamma=1e-5,
                  init_head=0.02, init_std=-1):
    """Upstream's builder signature; random weights from the global generator (as upstream)."""
    vae = VQVAE(vocab_size=V, z_channels=Cvae, ch=ch, v_patch_nums=patch_nums).to(device)
    var = VAR(vae, num_classes=num_classes, depth=depth, patch_nums=patch_nums).to(device)
    return vae, var
