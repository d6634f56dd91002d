"""Infinity's architecture, schedules and sampling paths beyond the golden case.

Released shapes are checked on the meta device (no memory): the state-dict element counts must
equal the sizes of the official files (spec: 2B 2,204,697,152; 8B 8,376,082,128; 125M 125,168,000).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from Infinity.infinity.models.basic import Rope2DTable
from Infinity.infinity.models.bsq_vae.vae import AutoEncoder, infer_vae_config, vae_model
from Infinity.infinity.models.infinity import Infinity
from Infinity.infinity.utils.dynamic_resolution import (dynamic_resolution_h_w, get_scale_schedule,
                                                       h_div_w_templates, template_last_grid)
from Infinity.tools.run_infinity import MODEL_ARCHS, PRESETS
from ssg_core import SSG
from ssg_core.hub import MODELS


def _meta_infinity(model_type: str, d: int, patchify: int = 0) -> Infinity:
    with torch.device('meta'):
        return Infinity(SimpleNamespace(codebook_dim=d), text_channels=2048, text_maxlen=512, shared_aln=True,
                        fused_norm=True, pad_to_multiplier=128, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                        rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, apply_spatial_patchify=patchify,
                        inference_mode=True, mlp_ratio=4, drop_path_rate=0.1, **MODEL_ARCHS[model_type])


@pytest.mark.parametrize("model_type,d,patchify,n_params", [
    ('infinity_2b', 32, 0, 2_204_697_152), ('infinity_8b', 14, 1, 8_376_082_128), ('infinity_layer12', 16, 0, 125_168_000)])
def test_released_transformers_have_the_official_sizes(model_type, d, patchify, n_params):
    m = _meta_infinity(model_type, d, patchify)
    sd = m.state_dict()
    assert sum(v.numel() for v in sd.values()) == n_params      # file size / 4: parameters + zero_k_bias buffers
    C, V = MODEL_ARCHS[model_type]['embed_dim'], 2 * d * (4 if patchify else 1)
    assert sd['head.weight'].shape == (V, C) and sd['cfg_uncond'].shape == (512, 2048)
    assert sd['text_proj_for_sos.ca.mat_q'].shape == (1, 16, C // 16)
    last_chunk = MODEL_ARCHS[model_type]['block_chunks'] - 1
    per_chunk = MODEL_ARCHS[model_type]['depth'] // (last_chunk + 1)
    assert f'block_chunks.{last_chunk}.module.{per_chunk - 1}.sa.scale_mul_1H11' in sd
    assert 'block_chunks.0.module.0.sa.zero_k_bias' in sd and 'block_chunks.0.module.0.ca_norm.bias' in sd


def test_released_vaes_have_the_official_decoder_sizes():
    with torch.device('meta'):
        f16 = AutoEncoder(codebook_dim=32, patch_size=16)
        f8 = AutoEncoder(codebook_dim=14, patch_size=8, encoder_ch_mult=[1, 2, 4, 4], decoder_ch_mult=[1, 2, 4, 4])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(f16.decoder) / 1e6, 2) == 65.09 and round(count(f16.encoder) / 1e6, 1) == 45.0
    assert round(count(f8.decoder) / 1e6, 2) == 48.48
    assert infer_vae_config(f16.state_dict()) == dict(codebook_dim=32, base_ch=128, decoder_ch_mult=[1, 2, 4, 4, 4],
                                                      encoder_ch_mult=[1, 2, 4, 4, 4], patch_size=16)
    assert set(f16.state_dict()) >= {'quantizer.lfq.mask', 'quantize.lfq.mask', 'decoder.up.4.upsample.conv.conv.weight'}


def test_schedules_for_every_aspect_ratio():
    assert list(h_div_w_templates) == [1.0, 1.25, 0.8, 1.333, 0.75, 1.5, 0.666, 1.75, 0.571, 2.0, 0.5, 2.5, 0.4,
                                       3.0, 0.333]
    one = get_scale_schedule(1.0, '1M')
    assert sum(h * w for _, h, w in one) == 10521 and one[-1] == (1, 64, 64)
    assert all(type(v) is int for s in one for v in s)
    assert dynamic_resolution_h_w[1.25]['1M']['pixel'] == (1120, 896)
    assert dynamic_resolution_h_w[0.333]['1M']['pixel'] == (592, 1776)
    assert get_scale_schedule(1.25, '1M')[:5] == [(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 5, 4), (1, 10, 8)]
    assert [len(get_scale_schedule(0.75, pn)) for pn in ('0.06M', '0.25M', '0.60M', '1M')] == [7, 10, 12, 13]
    for ratio in h_div_w_templates:     # every (template, pn) has its RoPE grid: the 1M list's last entry
        for pn in ('0.06M', '1M'):
            assert template_last_grid(get_scale_schedule(float(ratio), pn)) == \
                tuple(dynamic_resolution_h_w[float(ratio)]['1M']['scales'][-1][1:])


def test_rope_positions_round_half_to_even():
    table = Rope2DTable(16)
    sched = get_scale_schedule(1.0, '0.06M')
    t = table.get(sched, torch.device('cpu'))                      # (2, 521, 8)
    assert t.shape == (2, 521, 8)
    # scale (6, 6) starts after 1+4+16 tokens; its rows sit at [0, 11, 21, 32, 43, 53] of 64 (golden README)
    grid = table.grid
    for i, r in enumerate([0, 11, 21, 32, 43, 53]):
        torch.testing.assert_close(t[:, 21 + 6 * i], grid[:, r, 0], rtol=0, atol=0)
    # 1.25 at w=16: 56/16 = 3.5 per column; column 1 -> round(3.5) = 4, column 3 -> round(10.5) = 10
    s125 = get_scale_schedule(1.25, '1M')
    t125 = table.get(s125, torch.device('cpu'))
    k = [i for i, (_, h, w) in enumerate(s125) if w == 16][0]
    off = sum(h * w for _, h, w in s125[:k])
    torch.testing.assert_close(t125[:, off + 1], grid[:, 0, 4], rtol=0, atol=0)
    torch.testing.assert_close(t125[:, off + 3], grid[:, 0, 10], rtol=0, atol=0)


def test_registry_matches_the_published_files():
    files = {m: {(f.repo_id, f.filename) for f in MODELS[m]} for m in ('infinity-2b', 'infinity-8b', 'infinity-125m')}
    for p in PRESETS.values():
        assert ('FoundationVision/Infinity', p.model_file) in files[p.hub]
        assert ('FoundationVision/Infinity', p.vae_file) in files[p.hub]
        assert ('google/flan-t5-xl', '') in files[p.hub]


@pytest.fixture(scope="module")
def tiny_patchify():
    torch.manual_seed(0)
    vae = vae_model({}, 'dynamic', 8, 2 ** 8, patch_size=8, encoder_ch_mult=[1, 1, 1, 1],
                    decoder_ch_mult=[1, 1, 1, 1], base_ch=32)
    model = Infinity(vae, text_channels=128, text_maxlen=512, shared_aln=True, fused_norm=True, block_chunks=2,
                     depth=2, embed_dim=64, num_heads=4, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, apply_spatial_patchify=1).eval()
    g = torch.Generator().manual_seed(1)
    label = (torch.randn(9, 128, generator=g), [4, 5], torch.tensor([0, 4, 9], dtype=torch.int32), 5)
    return model, vae, label


def _sample(model, vae, label, sched, seed, **kw):
    cap: dict = {}
    kw = {'cfg_list': [3.0] * len(sched), 'tau_list': [1.0] * len(sched), 'cfg_insertion_layer': [0], **kw}
    _, idx, _ = model.autoregressive_infer_cfg(vae=vae, scale_schedule=sched, label_B_or_BLT=label, B=2, g_seed=seed,
                                               top_k=900, top_p=0.97, returns_vemb=1, vae_type=8, capture=cap, **kw)
    return cap, idx


def test_patchify_bits_live_on_the_vae_grid_and_teacher_forcing_replays(tiny_patchify):
    model, vae, label = tiny_patchify
    sched = get_scale_schedule(0.75, '0.06M')                       # non-square; only 5 of 7 scales are run
    cap, idx = _sample(model, vae, label, sched, seed=0, ssg=SSG(beta=0.5), trunk_scale=5)
    assert len(cap['bits']) == 5
    for (_, h, w), bits, logits in zip(sched, cap['bits'], cap['logits']):
        assert bits.shape == (2, 2 * h, 2 * w, 8) and logits.shape == (2, h * w, 2 * 4 * 8)
    # feeding the run its own bits (another seed) reproduces its logits exactly: the pixel-(un)shuffle round trip
    # and the next-scale input are consistent
    cap2, _ = _sample(model, vae, label, sched, seed=123, ssg=SSG(beta=0.5), gt_leak=5, gt_ls_Bl=idx, trunk_scale=5)
    for a, b in zip(cap['logits'], cap2['logits']):
        assert torch.equal(a, b)


def test_cfg_one_negative_prompt_and_hidden_state_cfg_paths(tiny_patchify):
    model, vae, label = tiny_patchify
    sched = get_scale_schedule(1.0, '0.06M')
    plain, _ = _sample(model, vae, label, sched, seed=0, trunk_scale=4)
    no_cfg, _ = _sample(model, vae, label, sched, seed=0, cfg_list=[1.0] * 7, trunk_scale=4)
    neg, _ = _sample(model, vae, label, sched, seed=0, negative_label_B_or_BLT=label, trunk_scale=4)
    assert not torch.equal(plain['logits'][0], no_cfg['logits'][0])
    # a negative prompt equal to the prompt: cond and uncond agree, so CFG returns the cfg=1 logits
    torch.testing.assert_close(neg['logits'][0], no_cfg['logits'][0], rtol=1e-4, atol=1e-4)  # 6e-7 measured
    hid: dict = {}
    model.autoregressive_infer_cfg(vae=vae, scale_schedule=sched, label_B_or_BLT=label, B=2, g_seed=0,
                                   cfg_list=[3.0] * 7, tau_list=[1.0] * 7, top_k=900, top_p=0.97,
                                   cfg_insertion_layer=[-1], vae_type=8, capture=hid, trunk_scale=4)
    assert len(hid['bits']) == 4 and not torch.equal(hid['logits'][0], plain['logits'][0])


def test_masked_varlen_attention_equals_the_segment_loop():
    from Infinity.infinity.models.basic import flash_attn_varlen_kvpacked_func as varlen
    g = torch.Generator().manual_seed(0)
    lens, Lq, H, c = [3, 9, 1], 5, 4, 8
    q = torch.randn(len(lens) * Lq, H, c, generator=g)
    kv = torch.randn(sum(lens), 2, H, c, generator=g)
    cu_k = torch.tensor([0, 3, 12, 13], dtype=torch.int32)
    cu_q = torch.arange(0, Lq * 4, Lq, dtype=torch.int32)
    seg = varlen(q, kv, cu_q, cu_k, Lq, 9, softmax_scale=c ** -0.5, impl='segments')
    masked = varlen(q, kv, cu_q, cu_k, Lq, 9, softmax_scale=c ** -0.5, impl='masked')
    torch.testing.assert_close(masked, seg, rtol=1e-5, atol=1e-6)  # two float32 orders: 1.2e-7 measured
    # segment 0 attends to its own 3 keys only
    ref = torch.softmax(torch.einsum('qhc,khc->hqk', q[:Lq], kv[:3, 0]) * c ** -0.5, -1)
    torch.testing.assert_close(seg[:Lq], torch.einsum('hqk,khc->qhc', ref, kv[:3, 1]), rtol=1e-5, atol=1e-6)  # 2.4e-7


def _upstream_bf16_self_attention(sa, x, table, start):
    """Upstream's dtype flow: head scale, q and k rounded to qkv's dtype, then RoPE in that dtype."""
    B, L, C = x.shape
    H, hd = sa.num_heads, sa.head_dim
    qkv = torch.nn.functional.linear(x, sa.mat_qkv.weight, torch.cat((sa.q_bias, sa.zero_k_bias, sa.v_bias)))
    q, k, v = qkv.view(B, L, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
    scale_mul = sa.scale_mul_1H11.clamp_max(sa.max_scale_mul).exp().to(qkv.dtype)
    q = torch.nn.functional.normalize(q, dim=-1, eps=1e-12).mul(scale_mul).to(qkv.dtype)
    k = torch.nn.functional.normalize(k, dim=-1, eps=1e-12).to(qkv.dtype)
    cos, sin = table[:, start:start + L].to(qkv.dtype)

    def rotate(t):
        t = t.reshape(*t.shape[:-1], -1, 2)
        return torch.stack([cos * t[..., 0] - sin * t[..., 1], sin * t[..., 0] + cos * t[..., 1]], -1).flatten(-2)
    with torch.autocast('cpu', enabled=False):
        q, k = rotate(q), rotate(k)
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
    return sa.proj(o.transpose(1, 2).reshape(B, L, C)), k


@pytest.mark.parametrize("case", ["bf16 blocks", "fp32 blocks under bf16 autocast (--bf16 0)"])
def test_self_attention_rounds_q_k_and_head_scale_to_bf16_before_rope(case):
    from Infinity.infinity.models.basic import SelfAttention
    torch.manual_seed(0)
    sa = SelfAttention(embed_dim=64, num_heads=4)
    with torch.no_grad():
        sa.q_bias.normal_()
        sa.v_bias.normal_()
        sa.scale_mul_1H11.copy_(torch.tensor([1.3, 2.2, 3.7, 5.1]).view(1, 4, 1, 1))   # one above ln 100
    x = torch.randn(2, 4, 64)
    if case == "bf16 blocks":
        sa, x, ctx = sa.bfloat16(), x.bfloat16(), torch.autocast('cpu', enabled=False)
    else:
        ctx = torch.autocast('cpu', dtype=torch.bfloat16)     # qkv comes out bf16, exp(scale) float32
    table = Rope2DTable(16).get(get_scale_schedule(1.0, '0.06M'), torch.device('cpu'))
    sa.kv_caching(True)
    with torch.no_grad(), ctx:
        out = sa(x, table, 1)                                  # scale (2, 2): RoPE rows 1..4
        ref, k_ref = _upstream_bf16_self_attention(sa, x, table, 1)
    assert sa.cached_k.dtype == torch.bfloat16
    assert torch.equal(sa.cached_k, k_ref) and torch.equal(out, ref)


def test_cfg_insertion_layer_values_upstream_refuses():
    from Infinity.infinity.models.infinity import check_cfg_insertion_layer
    from ssg_core.errors import SSGError
    check_cfg_insertion_layer([0, 1, -1, -31], depth=32)
    for bad in ([2], [-32], [0, -40]):
        with pytest.raises(SSGError, match="is not valid"):
            check_cfg_insertion_layer(bad, depth=32)
    check_cfg_insertion_layer([-40], depth=None)              # depth unknown yet: only n > 1 is checked


def test_cfg_insertion_layer_is_checked_by_the_sampler(tiny_patchify):
    model, vae, label = tiny_patchify
    sched = get_scale_schedule(1.0, '0.06M')
    for bad in ([2], [-2]):                                   # the model has 2 blocks
        with pytest.raises(ValueError, match="is not valid"):
            _sample(model, vae, label, sched, seed=0, cfg_insertion_layer=bad, trunk_scale=1)


def test_cfg_uncond_init_is_upstreams_and_leaves_the_global_rng_alone():
    from Infinity.infinity.models.infinity import default_cfg_uncond
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    with torch.device('meta'):
        m = Infinity(SimpleNamespace(codebook_dim=8), text_channels=128, text_maxlen=16, shared_aln=True,
                     fused_norm=True, block_chunks=2, depth=2, embed_dim=64, num_heads=4,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2)
    assert m.cfg_uncond.is_meta and torch.equal(torch.random.get_rng_state(), before)
    rows = default_cfg_uncond(16, 128)
    assert torch.equal(rows, default_cfg_uncond(16, 128))      # (the rows depend on text_maxlen: not a prefix)
    assert rows.abs().max() <= 2 / 128 ** 0.5 and rows.std() * 128 ** 0.5 > 0.8   # N(0, 1.2) cut at +-2, / sqrt(Ct5)
