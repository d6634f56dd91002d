"""HART modules against upstream's rules where they differ from the released configuration: phi selection
for other counts of shared convs, tokenizers whose scales or extra parts differ from the transformer's,
keys sampling never reads, `context_norm_scale`, and where the diffusion head's frequencies are computed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from ssg_core.errors import SSGError

from hart.modules.diffusion.diffloss import TimestepEmbedder
from hart.modules.models.autoencoder import HARTAutoEncoder, HARTAutoEncoderWithDisc, HARTAutoEncoderWithDiscConfig
from hart.modules.models.autoencoder.quantize.var_quantize_multiple_res import PhiNonShared, PhiPartiallyShared
from hart.modules.models.transformer import HARTForT2I, HARTForT2IConfig

TOK_CFG = dict(vocab_size=64, z_channels=8, ch=32, ch_mult=[1, 1, 1], v_patch_nums=[1, 2, 3, 4],
               quantizer_type="var_hybrid", share_quant_resi=4, quant_resi=0.5)
LLM_CFG = dict(context_token=16, context_dim=64, embed_dim=32, depth=1, num_heads=2, patch_nums=[1, 2, 3, 4],
               attn_type="llama", mlp_type="llama", diff_width=32, diff_depth=1, num_sampling_steps="8")


def _save_tokenizer(folder: Path, cfg: dict, sd: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "hart_autoencoder_with_disc", **cfg}))
    torch.save(sd, folder / "pytorch_model.bin")


def _vae_sd(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {f"vae.{k}": v for k, v in HARTAutoEncoder(HARTAutoEncoderWithDiscConfig(**cfg)).state_dict().items()}


# ------------------------------------------------------------------------------------------- phi selection
@pytest.mark.parametrize("K", [3, 4, 6])
@pytest.mark.parametrize("cls", [PhiPartiallyShared, PhiNonShared])
def test_phi_pick_follows_upstream_ticks(cls, K):
    convs = [nn.Identity() for _ in range(K)]
    phi = cls(nn.ModuleList(convs)) if cls is PhiPartiallyShared else cls(convs)
    lo = 1 / 3 / K if K == 4 else 1 / 2 / K  # upstream: the 1/3 form only for four convs
    ticks = np.linspace(lo, 1 - lo, K)
    ats = sorted({si / (SN - 1) for SN in range(2, 16) for si in range(SN)} | set(np.linspace(0, 1, 97).tolist()))
    picked = [next(j for j, c in enumerate(convs) if c is phi[at]) for at in ats]
    assert picked == [int(np.argmin(np.abs(ticks - at))) for at in ats]


# ------------------------------------------------------------------------------------------- tokenizer loading
def test_tokenizer_with_other_scales_samples(tmp_path):
    """v_patch_nums only sizes a training statistic: sampling follows the transformer's patch_nums."""
    tok_cfg = {**TOK_CFG, "v_patch_nums": [1, 2, 3]}
    _save_tokenizer(tmp_path / "tokenizer", tok_cfg, _vae_sd(tok_cfg))
    torch.manual_seed(1)
    config = HARTForT2IConfig(**LLM_CFG)
    vae = HARTAutoEncoderWithDisc.from_pretrained(tmp_path / "tokenizer").vae
    model = HARTForT2I(config, vae=vae)
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "config.json").write_text(json.dumps({"model_type": "hart_transformer_t2i", **LLM_CFG}))
    torch.save(model.state_dict(), tmp_path / "llm" / "ema_model.bin")
    model = HARTForT2I.from_pretrained(tmp_path / "llm")  # finds the sibling tokenizer/
    torch.manual_seed(0)
    img = model.autoregressive_infer_cfg(B=1, label_B=torch.randn(1, 16, 64), g_seed=0, cfg=2.0)
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()


def test_double_decoder_tokenizer_loads_and_decodes_with_decoder(tmp_path):
    cfg = {**TOK_CFG, "double_decoder": True}
    sd = _vae_sd(cfg)
    second = {k.replace("vae.decoder.", "vae.decoder2.").replace("vae.post_quant_conv.", "vae.post_quant_conv2."):
              torch.zeros_like(v) for k, v in sd.items() if k.startswith(("vae.decoder.", "vae.post_quant_conv."))}
    _save_tokenizer(tmp_path / "tok", cfg, {**sd, **second})
    vae = HARTAutoEncoderWithDisc.from_pretrained(tmp_path / "tok").vae
    assert vae.double_decoder and not hasattr(vae, "decoder2")
    assert torch.equal(vae.decoder.conv_out.weight, sd["vae.decoder.conv_out.weight"])
    f_hat = torch.randn(1, 8, 4, 4)
    assert not torch.equal(vae.fhat_to_img(f_hat), torch.zeros(1, 3, 16, 16))  # decoder2 (all zeros) is not used


def test_tokenizer_loader_skips_only_unused_keys(tmp_path):
    sd = _vae_sd(TOK_CFG)
    unused = ("vae.encoder.", "vae.quant_conv.", "vae.quantize.ema_vocab_hit_SV")
    lean = {k: v for k, v in sd.items() if not k.startswith(unused)}
    lean["vae.quantize.ema_vocab_hit_SV"] = torch.ones(7, 64)  # another shape: sized by another v_patch_nums
    lean["disc.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    _save_tokenizer(tmp_path / "tok", TOK_CFG, lean)
    vae = HARTAutoEncoderWithDisc.from_pretrained(tmp_path / "tok").vae
    for name in ("quantize.embedding.weight", "quantize.quant_resi.qresi_ls.3.weight", "post_quant_conv.bias",
                 "decoder.conv_in.weight"):
        assert torch.equal(vae.state_dict()[name], sd[f"vae.{name}"])
    # what sampling reads stays strict: missing, misshapen or unknown keys are one-line errors
    for broken, message in [({k: v for k, v in lean.items() if k != "vae.decoder.conv_out.weight"}, "missing keys"),
                            ({**lean, "vae.post_quant_conv.weight": torch.zeros(8, 8, 1, 1)}, "shape mismatches"),
                            ({**lean, "vae.decoder.extra": torch.zeros(1)}, "unexpected keys")]:
        _save_tokenizer(tmp_path / "tok", TOK_CFG, broken)
        with pytest.raises(SSGError, match=message):
            HARTAutoEncoderWithDisc.from_pretrained(tmp_path / "tok")


# ------------------------------------------------------------------------------------------- transformer
def test_context_norm_scale_is_ignored_as_upstream():
    torch.manual_seed(0)
    vae = HARTAutoEncoder(HARTAutoEncoderWithDiscConfig(**TOK_CFG))
    model = HARTForT2I(HARTForT2IConfig(**LLM_CFG, use_context_norm=True, context_norm_scale=3.0), vae=vae)
    assert torch.equal(model.context_norm.weight, torch.ones(64))  # upstream's llama norm drops `scale`


def test_diffusion_timestep_frequencies_are_computed_on_cpu(monkeypatch):
    """Upstream's diffusion head computes exp() on the CPU and moves the result (a GPU exp may differ by an ulp)."""
    devices, exp = [], torch.exp
    monkeypatch.setattr(torch, "exp", lambda x: devices.append(x.device) or exp(x))
    emb = TimestepEmbedder.timestep_embedding(torch.arange(4, device="meta"), 256)
    assert emb.device.type == "meta" and devices == [torch.device("cpu")]
    monkeypatch.undo()
    t = torch.tensor([0, 143, 999])
    half = torch.exp(-np.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    assert torch.equal(TimestepEmbedder.timestep_embedding(t, 256)[:, :128], torch.cos(t[:, None].float() * half))
