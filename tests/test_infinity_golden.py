"""Infinity reproduces upstream's own outputs on the golden tiny checkpoints (bits exact).

Golden data: ../shared/golden/infinity (README there). Both checkpoint files are loaded with
the official loaders (`load_infinity`'s state dict path, `vae_model`), strictly.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from Infinity.infinity.models.bsq_vae.vae import vae_model
from Infinity.infinity.models.infinity import Infinity
import Infinity.infinity.models.infinity as infinity_module
from ssg_core import SSG, dse, ssg_guide
from ssg_core.margins import is_exponential_race, spy_sampler


def _build(gdir):
    vae = vae_model(str(gdir / "infinity_vae_tiny.pth"), 'dynamic', 32, 2 ** 32, patch_size=16,
                    encoder_ch_mult=[1, 2, 1, 1, 1], decoder_ch_mult=[1, 2, 1, 1, 1], base_ch=32)
    # the keyword set of upstream tools/run_infinity.py: load_infinity, with the tiny widths of case.json
    model = Infinity(vae, text_channels=2048, text_maxlen=512, shared_aln=True, raw_scale_schedule=None,
                     checkpointing='full-block', customized_flash_attn=False, fused_norm=True, pad_to_multiplier=128,
                     use_flex_attn=False, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, pn='0.06M', apply_spatial_patchify=0,
                     inference_mode=True, train_h_div_w_list=[1.0], depth=2, embed_dim=64, num_heads=4,
                     drop_path_rate=0.1, mlp_ratio=4, block_chunks=2).eval().requires_grad_(False)
    model.load_state_dict(torch.load(str(gdir / "infinity_tiny.pth"), weights_only=True), strict=True)
    return model, vae


@pytest.fixture(scope="module")
def golden(golden_dir):
    gdir = golden_dir / "infinity"
    model, vae = _build(gdir)
    return gdir, model, vae


def _run(model, vae, z, ssg=None):
    label = (torch.from_numpy(z['kv_compact']), z['lens'].tolist(), torch.from_numpy(z['cu_seqlens_k']),
             int(z['max_seqlen_k']))
    sched = [tuple(int(v) for v in s) for s in z['scale_schedule']]
    cap: dict = {}
    with spy_sampler(infinity_module, "sample_with_top_k_top_p_also_inplace_modifying_logits_") as cap['draws']:
        _, idx_list, img = model.autoregressive_infer_cfg(
            vae=vae, scale_schedule=sched, label_B_or_BLT=label, B=len(z['lens']), g_seed=1,
            cfg_list=z['cfg_list'].tolist(), tau_list=z['tau_list'].tolist(), top_k=900, top_p=0.97, returns_vemb=1,
            cfg_insertion_layer=[0], vae_type=32, ret_img=True, ssg=ssg, capture=cap)
    return cap, idx_list, img


def _check_outputs(cap, idx_list, img, z):
    n = len(z['scale_schedule'])
    for k in range(n):
        np.testing.assert_array_equal(cap['bits'][k].numpy(), z[f'bits_{k}'], err_msg=f"bits of scale {k}")
        np.testing.assert_array_equal(idx_list[k][:, 0].numpy(), z[f'bits_{k}'])
        # diagnostic: a rounding step can flip a bfloat16 rounding in a cross-attention (golden README: 1e-2)
        np.testing.assert_allclose(cap['logits'][k].numpy(), z[f'logits_{k}'], rtol=0, atol=1e-2)
    # follows from the bits; the trilinear upsampling sums round differently with other kernels (2.4e-7 seen)
    np.testing.assert_allclose(cap['summed_codes'].numpy(), z['summed_codes'], rtol=0, atol=1e-5)
    np.testing.assert_allclose(cap['image_float'].numpy(), z['image_float'], rtol=0, atol=1e-3)  # golden README
    diff = np.abs(img.numpy().astype(np.int64) - z['image_bgr'].astype(np.int64))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01  # golden README: +-1 on at most 1 % of the values
    rgb = img.flip(-1).numpy()
    assert (np.abs(rgb.astype(np.int64) - z['image_rgb'].astype(np.int64)) > 0).mean() <= 0.01
    # each bit is torch.multinomial's exponential race (what scripts/golden_margins.py measures); unlike VAR's and
    # HART's, Infinity's smallest margins are not far above other CPUs' logit changes (docs/reproducibility.md)
    assert all(is_exponential_race(d) for d in cap['draws'])


def test_checkpoints_load_strictly_with_every_key(golden):
    gdir, model, vae = golden
    sd = torch.load(str(gdir / "infinity_tiny.pth"), weights_only=True)
    assert set(sd) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == 1626440          # case.json n_params
    assert sum(p.numel() for p in vae.parameters()) == 957219
    vsd = torch.load(str(gdir / "infinity_vae_tiny.pth"), weights_only=True)["vae"]
    assert set(vsd) == set(vae.state_dict())
    assert torch.equal(vae.state_dict()['decoder.conv_out.conv.weight'], vsd['decoder.conv_out.conv.weight'])


def test_plain_sampling_matches_upstream(golden):
    gdir, model, vae = golden
    z = np.load(gdir / "expected.npz")
    cap, idx_list, img = _run(model, vae, z)
    _check_outputs(cap, idx_list, img, z)


def test_ssg_sampling_matches_reference(golden):
    gdir, model, vae = golden
    z = np.load(gdir / "expected_ssg.npz")
    betas = [float(b) for b in z['beta_list']]
    cap, idx_list, img = _run(model, vae, z, ssg=SSG(beta=betas))
    _check_outputs(cap, idx_list, img, z)
    sched = [tuple(int(v) for v in s) for s in z['scale_schedule']]
    torch.testing.assert_close(cap['guided_logits'][0], cap['logits'][0], rtol=0, atol=0)   # scale 0 unguided
    for k in range(1, len(sched)):
        (_, hp, wp), (_, h, w) = sched[k - 1], sched[k]
        # the hook sees (B, h*w, 2d) with channel 2j+c = "bit j is c": no layout transform needed
        # upstream's own logits in: only DSE's float32 rounding counts (golden README: float32 matrices vs
        # float64 transforms differ by up to 4.1e-6)
        prior = dse(torch.from_numpy(z[f'logits_{k - 1}']), (h, w), prev_size=(hp, wp))
        np.testing.assert_allclose(prior.numpy(), z[f'prior_{k}'], rtol=0, atol=2e-5)
        # guided = 1.5 l - 0.5 prior, with the logits (and so the prior) within the golden README's 1e-2
        np.testing.assert_allclose(cap['guided_logits'][k].numpy(), z[f'guided_logits_{k}'], rtol=0, atol=2e-2)
        own_prior = dse(cap['logits'][k - 1], (h, w), prev_size=(hp, wp))  # same code, same input: exact
        torch.testing.assert_close(cap['guided_logits'][k], ssg_guide(cap['logits'][k], own_prior, betas[k]),
                                   rtol=0, atol=0)


def test_beta_zero_is_bitwise_the_plain_run(golden):
    gdir, model, vae = golden
    z = np.load(gdir / "expected.npz")
    cap, _, img = _run(model, vae, z, ssg=SSG(beta=0.0))
    for k in range(len(z['scale_schedule'])):
        assert torch.equal(cap['guided_logits'][k], cap['logits'][k])
        np.testing.assert_array_equal(cap['bits'][k].numpy(), z[f'bits_{k}'])
