"""VAR model classes: official key sets and shapes, builder hygiene, API contracts, bad input.

Shapes of the released models are checked on the `meta` device (no memory); behaviour is
checked on tiny CPU models with a short scale schedule.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import VAR.models as models
from ssg_core import SSG
from ssg_core.errors import SSGError
from VAR.models.quant import PhiPartiallyShared

TINY = dict(patch_nums=(1, 2, 3, 4), V=64, Cvae=8, ch=32, num_classes=10, depth=2)


@pytest.fixture(scope="module")
def tiny():
    return models.build_vae_var("cpu", **TINY, seed=3)


def _sample(var, B, labels, g_seed, **kw):
    with torch.inference_mode():
        return var.autoregressive_infer_cfg(B, labels, g_seed=g_seed, cfg=1.5, top_k=20, top_p=0.9,
                                            return_tokens=True, **kw)


# ---------------------------------------------------------------- official configurations (meta)
@pytest.mark.parametrize("depth, keys, params", [(16, 220, 310_283_520), (20, 272, 600_917_136),
                                                  (24, 324, 1_033_399_360), (30, 402, 2_010_020_356),
                                                  (36, 446, 2_353_893_904)])
def test_official_var_key_counts_and_parameters(depth, keys, params):
    _, var = models.build_vae_var("meta", depth=depth, **models.official_config(depth))
    assert len(var.state_dict()) == keys
    assert sum(p.numel() for p in var.parameters()) == params


def test_official_d16_keys_and_shapes():
    vae, var = models.build_vae_var("meta", depth=16)
    C, L, H = 1024, 680, 16
    shapes = {k: tuple(v.shape) for k, v in var.state_dict().items()}
    assert list(shapes)[:8] == ["pos_start", "pos_1LC", "lvl_1L", "attn_bias_for_masking", "word_embed.weight",
                                "word_embed.bias", "class_emb.weight", "lvl_embed.weight"]
    expected_global = {"pos_start": (1, 1, C), "pos_1LC": (1, L, C), "lvl_1L": (1, L),
                       "attn_bias_for_masking": (1, 1, L, L), "word_embed.weight": (C, 32), "word_embed.bias": (C,),
                       "class_emb.weight": (1001, C), "lvl_embed.weight": (10, C),
                       "head_nm.ada_lin.1.weight": (2 * C, C), "head_nm.ada_lin.1.bias": (2 * C,),
                       "head.weight": (4096, C), "head.bias": (4096,)}
    block = {"attn.scale_mul_1H11": (1, H, 1, 1), "attn.q_bias": (C,), "attn.v_bias": (C,), "attn.zero_k_bias": (C,),
             "attn.mat_qkv.weight": (3 * C, C), "attn.proj.weight": (C, C), "attn.proj.bias": (C,),
             "ffn.fc1.weight": (4 * C, C), "ffn.fc1.bias": (4 * C,), "ffn.fc2.weight": (C, 4 * C), "ffn.fc2.bias": (C,),
             "ada_lin.1.weight": (6 * C, C), "ada_lin.1.bias": (6 * C,)}
    expected = dict(expected_global)
    for i in range(16):
        expected.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    assert shapes == expected
    assert [k[len("blocks.0."):] for k in shapes if k.startswith("blocks.0.")] == list(block)  # stored order
    assert var.state_dict()["lvl_1L"].dtype == torch.int64
    # the VQVAE of the release
    vshapes = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert len(vshapes) == 324 and sum(p.numel() for p in vae.parameters()) == 108_948_355
    assert sum(1 for k in vshapes if k.startswith("encoder.")) == 132
    assert sum(1 for k in vshapes if k.startswith("decoder.")) == 178
    assert sum(p.numel() for p in vae.encoder.parameters()) == 44_107_872
    assert sum(p.numel() for p in vae.decoder.parameters()) == 64_653_923
    assert sum(p.numel() for p in vae.quantize.parameters()) == 168_064
    assert vshapes["quantize.ema_vocab_hit_SV"] == (10, 4096)
    assert vshapes["quantize.embedding.weight"] == (4096, 32)
    assert vshapes["decoder.up.4.attn.2.qkv.weight"] == (1920, 640, 1, 1)
    assert vshapes["decoder.up.3.block.0.nin_shortcut.weight"] == (320, 640, 1, 1)
    assert vshapes["decoder.up.1.upsample.conv.weight"] == (160, 160, 3, 3)
    assert "decoder.up.0.upsample.conv.weight" not in vshapes
    assert vshapes["post_quant_conv.weight"] == (32, 32, 3, 3)


def test_d36_shared_adaln_keys():
    _, var = models.build_vae_var("meta", depth=36, patch_nums=models.PATCH_NUMS_512, shared_aln=True)
    sd = var.state_dict()
    C = 2304
    assert tuple(sd["pos_1LC"].shape) == (1, 2240, C)
    assert tuple(sd["shared_ada_lin.1.weight"].shape) == (6 * C, C)
    assert list(k for k in sd if k.startswith("blocks.0."))[0] == "blocks.0.ada_gss"
    assert tuple(sd["blocks.0.ada_gss"].shape) == (1, 1, 6, C)
    assert not any(".ada_lin." in k for k in sd if k.startswith("blocks."))


def test_phi_index_per_scale_for_ten_scales():
    phi = PhiPartiallyShared(nn.ModuleList([nn.Identity() for _ in range(4)]))
    picks = [next(i for i, m in enumerate(phi.qresi_ls) if m is phi[k / 9]) for k in range(10)]
    assert picks == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


# ---------------------------------------------------------------- builder hygiene
def test_building_leaves_global_torch_state_alone():
    rng_before = torch.get_rng_state()
    dtype_before = torch.get_default_dtype()
    resets = {cls: cls.reset_parameters for cls in (nn.Linear, nn.LayerNorm, nn.Conv2d, nn.BatchNorm2d)}
    vae, var = models.build_vae_var("cpu", **TINY)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_default_dtype() == dtype_before
    assert all(cls.reset_parameters is fn for cls, fn in resets.items())
    assert not any(m.training for m in (*vae.modules(), *var.modules()))
    assert all(torch.isfinite(p).all() for p in (*vae.parameters(), *var.parameters()))
    # seeded: the same seed builds the same weights
    _, var2 = models.build_vae_var("cpu", **TINY)
    assert all(torch.equal(a, b) for a, b in zip(var.state_dict().values(), var2.state_dict().values()))


def test_sampling_with_a_seed_leaves_the_global_generator_alone(tiny):
    _, var = tiny
    before = torch.get_rng_state()
    img1, tok1 = _sample(var, 2, torch.tensor([1, 2]), 7)
    assert torch.equal(torch.get_rng_state(), before)
    img2, tok2 = _sample(var, 2, torch.tensor([1, 2]), 7)
    assert all(torch.equal(a, b) for a, b in zip(tok1, tok2)) and torch.equal(img1, img2)
    assert tuple(img1.shape) == (2, 3, 64, 64) and 0 <= float(img1.min()) and float(img1.max()) <= 1
    assert [tuple(t.shape) for t in tok1] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    assert all(int(t.min()) >= 0 and int(t.max()) < 64 for t in tok1)


# ---------------------------------------------------------------- per-image seeds
def test_per_image_seeds_do_not_depend_on_the_batch(tiny):
    _, var = tiny
    seeds, labels = [11, 12, 13], torch.tensor([4, 5, 6])
    img, tok = _sample(var, 3, labels, seeds)
    for b in (2, 0):
        img_b, tok_b = _sample(var, 1, labels[b:b + 1], [seeds[b]])
        for k in range(4):
            assert torch.equal(tok[k][b:b + 1], tok_b[k]), (b, k)
        # same tokens; the pixels only carry float noise of batched convolutions / matmuls: at most 4.9e-6
        # across kernel families default/avx2/avx512 x 1/3 threads (docs/reproducibility.md), so 10x margin
        assert (img[b:b + 1] - img_b).abs().max() <= 5e-5
    # the batch in another order gives the same images
    img_r, tok_r = _sample(var, 3, labels.flip(0), seeds[::-1])
    assert all(torch.equal(a, b.flip(0)) for a, b in zip(tok, tok_r))


def test_one_seed_list_equals_the_int_seed(tiny):
    _, var = tiny
    for kw in ({}, {"more_smooth": True}):
        img_a, tok_a = _sample(var, 1, torch.tensor([3]), 21, **kw)
        img_b, tok_b = _sample(var, 1, torch.tensor([3]), [21], **kw)
        assert all(torch.equal(a, b) for a, b in zip(tok_a, tok_b)) and torch.equal(img_a, img_b)
    _, tok_a = _sample(var, 1, None, 21)   # labels drawn from the generator too
    _, tok_b = _sample(var, 1, None, [21])
    assert all(torch.equal(a, b) for a, b in zip(tok_a, tok_b))


# ---------------------------------------------------------------- training-side API
def test_sampled_fhat_and_teacher_forcing_agree_with_sampling(tiny):
    vae, var = tiny
    seen: dict = {"logits": []}
    real_decode = vae.fhat_to_img
    vae.fhat_to_img = lambda f: (seen.__setitem__("fhat", f.clone()), real_decode(f))[1]
    import VAR.models.var as var_module
    real_sample = var_module.sample_with_top_k_top_p_

    def spy(logits, **kw):
        seen["logits"].append(logits.clone())
        return real_sample(logits, **kw)

    var_module.sample_with_top_k_top_p_ = spy
    try:
        with torch.inference_mode():  # cfg=0: the filtered logits are the conditional ones
            _, tokens = var.autoregressive_infer_cfg(2, torch.tensor([1, 8]), g_seed=5, cfg=0.0, return_tokens=True)
    finally:
        var_module.sample_with_top_k_top_p_ = real_sample
        del vae.fhat_to_img
    q = vae.quantize
    B, Cv = 2, q.Cvae
    maps = [q.embedding(t).transpose(1, 2).reshape(B, Cv, pn, pn) for t, pn in zip(tokens, var.patch_nums)]
    assert torch.equal(q.embed_to_fhat(maps, all_to_max_scale=True, last_one=True), seen["fhat"])
    x = q.idxBl_to_var_input(tokens)
    assert tuple(x.shape) == (B, var.L - 1, Cv)
    drop, var.cond_drop_rate = var.cond_drop_rate, 0.0
    try:
        with torch.no_grad():
            logits = var(torch.tensor([1, 8]), x)  # (B, L, V) with the block-causal mask
    finally:
        var.cond_drop_rate = drop
    torch.testing.assert_close(logits, torch.cat(seen["logits"], dim=1), rtol=0, atol=1e-5)
    # image -> tokens: shapes per scale; a decoded image re-encodes to valid indices
    with torch.no_grad():
        idx = vae.img_to_idxBl(real_decode(seen["fhat"]))
    assert [tuple(t.shape) for t in idx] == [(B, pn * pn) for pn in var.patch_nums]


# ---------------------------------------------------------------- bad input
def test_null_class_in_a_label_tensor_samples_unconditionally(tiny):
    """upstream uses a label tensor as is, so the null class id (num_classes) gives unconditional rows,
    exactly as the int label -1 does."""
    var = tiny[1]
    img_t, tok_t = _sample(var, 2, torch.tensor([10, 10]), 5)
    img_i, tok_i = _sample(var, 2, -1, 5)
    assert torch.equal(img_t, img_i) and all(torch.equal(a, b) for a, b in zip(tok_t, tok_i))


@pytest.mark.parametrize("labels", [torch.tensor([0, 11]), torch.tensor([-1, 3]), 10, torch.tensor([1, 2, 3]),
                                    torch.tensor([0.5, 1.0])])
def test_unknown_or_malformed_labels_are_rejected(tiny, labels):
    with pytest.raises(SSGError):
        tiny[1].autoregressive_infer_cfg(2, labels, g_seed=0)


def test_bad_seed_list_and_beta_list_are_rejected(tiny):
    with pytest.raises(SSGError, match="seeds"):
        tiny[1].autoregressive_infer_cfg(2, torch.tensor([0, 1]), g_seed=[1, 2, 3])
    with pytest.raises(SSGError):
        tiny[1].autoregressive_infer_cfg(2, torch.tensor([0, 1]), g_seed=0, ssg=SSG(beta=[0.0, 0.5]))


@pytest.mark.parametrize("kwargs", [dict(ch=48), dict(patch_nums=(1,)), dict(patch_nums=(4, 2)), dict(depth=0),
                                    dict(patch_nums=(1, 2.5, 4)), dict(num_classes=0)])
def test_impossible_configurations_are_rejected(kwargs):
    with pytest.raises(SSGError):
        models.build_vae_var("meta", **{**TINY, **kwargs})


def test_checkpoint_that_does_not_fit_gives_one_line_error(golden_dir, tmp_path):
    g = golden_dir / "var"
    with pytest.raises(SSGError) as e:  # a d2 file asked to be a d3 model
        models.load_vae_var(g / "vae_tiny.pth", g / "var_tiny_d2.pth", depth=3, ch=32)
    assert "missing keys" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SSGError) as e:  # the files swapped
        models.load_vae_var(g / "var_tiny_d2.pth", g / "vae_tiny.pth", depth=2, ch=32)
    assert "\n" not in str(e.value)
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SSGError):
        models.load_vae_var(g / "vae_tiny.pth", bad, depth=2, ch=32)


def test_vae_file_with_other_scale_count_loads_into_a_short_schedule(golden_dir):
    # the demo model uses the released-format VAE with a short schedule: usage statistics are replaced
    vae = models.build_vae_var("cpu", **{**TINY, "V": 4096, "Cvae": 32})[0]
    assert tuple(vae.quantize.ema_vocab_hit_SV.shape) == (4, 4096)
    released = torch.load(golden_dir / "var" / "vae_tiny.pth", map_location="cpu", weights_only=True)
    vae.load_state_dict(released, strict=True)
    assert torch.equal(vae.quantize.embedding.weight, released["quantize.embedding.weight"])
    assert np.isfinite(vae.quantize.ema_vocab_hit_SV.numpy()).all()
