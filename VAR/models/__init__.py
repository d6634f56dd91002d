"""VAR models (FoundationVision/VAR layout): `build_vae_var` as upstream, plus `load_vae_var`.

    vae, var = build_vae_var(device="cuda", depth=16)                # random init, eval mode
    vae, var = load_vae_var("vae_ch160v4096z32.pth", "var_d16.pth", depth=16, device="cuda")
    img = var.autoregressive_infer_cfg(B=4, label_B=torch.tensor([1, 2, 3, 4]), g_seed=0,
                                       cfg=1.5, top_k=900, top_p=0.96, ssg=SSG(beta=0.5))

Unlike upstream's builder, these never touch global torch state: no process-wide patch of
`reset_parameters`, no default-dtype change, no draws from the global generator (models are
built on the `meta` device, materialised on `device` and initialised from a private, seeded
generator), and both models come back in eval mode (upstream returns VAR in train mode, where
DropPath would draw from the global generator during sampling).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ssg_core.errors import SSGError
from ssg_core.hub import load_state_dict, load_strict

from .var import VAR
from .vqvae import VQVAE

__all__ = ["VAR", "VQVAE", "build_vae_var", "load_vae_var", "official_config",
           "PATCH_NUMS_256", "PATCH_NUMS_512"]

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


# The released files are flat state dicts; upstream's train.py checkpoints nest the weights here.
TRAINING_NESTING = {"vae": ("trainer.vae_local",), "var": ("trainer.var_wo_ddp",)}


def official_config(depth: int) -> dict:
    """patch_nums and shared_aln of the released model of this depth (d16/20/24/30: 256 px, d36: 512 px)."""
    if depth == 36:
        return dict(patch_nums=PATCH_NUMS_512, shared_aln=True)
    return dict(patch_nums=PATCH_NUMS_256, shared_aln=False)


def _check_config(patch_nums, V, Cvae, ch, share_quant_resi, num_classes, depth) -> tuple[int, ...]:
    def positive_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    try:
        pns = tuple(patch_nums)
    except TypeError:
        raise SSGError(f"patch_nums must be a sequence of ints, got {patch_nums!r}") from None
    if len(pns) < 2 or not all(positive_int(p) for p in pns):
        raise SSGError(f"patch_nums must hold at least 2 positive ints (one per scale), got {patch_nums!r}")
    if max(pns) != pns[-1]:
        raise SSGError(f"the last entry of patch_nums must be the largest (the latent size), got {patch_nums!r}")
    for name, value in (("depth", depth), ("V", V), ("Cvae", Cvae), ("ch", ch), ("num_classes", num_classes)):
        if not positive_int(value):
            raise SSGError(f"{name} must be a positive int, got {value!r}")
    if ch % 32:
        raise SSGError(f"ch must be a multiple of 32 (the VQVAE's GroupNorm has 32 groups), got {ch}")
    if not isinstance(share_quant_resi, int) or share_quant_resi < 0:
        raise SSGError(f"share_quant_resi must be an int >= 0, got {share_quant_resi!r}")
    return pns


def _build_on_meta(patch_nums, V, Cvae, ch, share_quant_resi, num_classes, depth, shared_aln, attn_l2_norm,
                   flash_if_available, fused_if_available) -> tuple[VQVAE, VAR]:
    with torch.device("meta"):  # no allocation, no initialisation, no random draws
        vae = VQVAE(vocab_size=V, z_channels=Cvae, ch=ch, test_mode=True, share_quant_resi=share_quant_resi,
                    v_patch_nums=patch_nums)
        var = VAR(vae_local=vae, num_classes=num_classes, depth=depth, embed_dim=depth * 64, num_heads=depth,
                  drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1 * depth / 24, norm_eps=1e-6,
                  shared_aln=shared_aln, cond_drop_rate=0.1, attn_l2_norm=attn_l2_norm, patch_nums=patch_nums,
                  flash_if_available=flash_if_available, fused_if_available=fused_if_available)
    return vae, var


def _materialise(vae: VQVAE, var: VAR, device) -> None:
    vae.to_empty(device=device)
    var.to_empty(device=device)
    var.reset_buffers()
    vae.quantize.ema_vocab_hit_SV.zero_()


def build_vae_var(device, patch_nums: Sequence[int] = PATCH_NUMS_256,
                  V: int = 4096, Cvae: int = 32, ch: int = 160, share_quant_resi: int = 4,
                  num_classes: int = 1000, depth: int = 16, shared_aln: bool = False, attn_l2_norm: bool = True,
                  flash_if_available: bool = True, fused_if_available: bool = True,
                  init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                  init_std: float = -1, *, seed: int = 0) -> tuple[VQVAE, VAR]:
    """Upstream's builder: VQVAE + VAR (width 64*depth, depth heads), randomly initialised, eval mode.

    `device="meta"` builds shapes only (no memory). Initial weights come from a private generator
    seeded with `seed`: the VAR as upstream's `init_weights`, the VQVAE with `VQVAE.init_weights`.
    """
    pns = _check_config(patch_nums, V, Cvae, ch, share_quant_resi, num_classes, depth)
    vae, var = _build_on_meta(pns, V, Cvae, ch, share_quant_resi, num_classes, depth, shared_aln, attn_l2_norm,
                              flash_if_available, fused_if_available)
    device = torch.device(device)
    if device.type != "meta":
        _materialise(vae, var, device)
        gen = torch.Generator(device=device).manual_seed(seed)
        vae.init_weights(generator=gen)
        var.init_weights(init_adaln=init_adaln, init_adaln_gamma=init_adaln_gamma, init_head=init_head,
                         init_std=init_std, generator=gen)
    return vae.eval(), var.eval()


def load_vae_var(vae_path: str | os.PathLike, var_path: str | os.PathLike, depth: int = 16,
                 patch_nums: Sequence[int] | None = None, device="cpu", shared_aln: bool | None = None,
                 *, trust_pickle: bool = False, **build_kwargs) -> tuple[VQVAE, VAR]:
    """Build the models for `depth` and load both checkpoint files strictly; eval mode.

    patch_nums / shared_aln default to the released model of that depth (`official_config`).
    `build_kwargs` go to `build_vae_var` (e.g. V, Cvae, ch, num_classes for small models).
    `trust_pickle`: see `ssg_core.hub.load_state_dict` (off: a file that could run code is refused).
    Raises `SSGError` (one line) for a missing, unreadable or mismatched file.
    """
    official = official_config(depth)
    patch_nums = official["patch_nums"] if patch_nums is None else patch_nums
    shared_aln = official["shared_aln"] if shared_aln is None else shared_aln
    kw = dict(V=4096, Cvae=32, ch=160, share_quant_resi=4, num_classes=1000, attn_l2_norm=True,
              flash_if_available=False, fused_if_available=False)
    unknown = set(build_kwargs) - set(kw)
    if unknown:
        raise SSGError(f"load_vae_var got unknown arguments {sorted(unknown)}")
    kw.update(build_kwargs)
    pns = _check_config(patch_nums, kw["V"], kw["Cvae"], kw["ch"], kw["share_quant_resi"], kw["num_classes"], depth)
    vae_sd = load_state_dict(vae_path, nested=TRAINING_NESTING["vae"], trust_pickle=trust_pickle)
    var_sd = load_state_dict(var_path, nested=TRAINING_NESTING["var"], trust_pickle=trust_pickle)
    vae, var = _build_on_meta(pns, depth=depth, shared_aln=shared_aln, **kw)
    _materialise(vae, var, torch.device(device))
    key = "quantize.ema_vocab_hit_SV"  # usage statistics of another scale count: keep ours (as upstream)
    if key in vae_sd and vae_sd[key].ndim == 2 and vae_sd[key].shape[0] != len(pns):
        vae_sd = {**vae_sd, key: vae.quantize.ema_vocab_hit_SV}
    load_strict(vae, vae_sd, f"VAE checkpoint {vae_path}")
    load_strict(var, var_sd, f"VAR checkpoint {var_path} (depth {depth}, {len(pns)} scales, shared_aln={shared_aln})")
    return vae.eval(), var.eval()
