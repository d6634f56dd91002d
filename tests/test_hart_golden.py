"""HART against upstream's own outputs (`golden/hart`): tiny random checkpoint in the release format.

Pins `hart.modules.models.transformer.hart_transformer_t2i.HARTForT2I.autoregressive_infer_cfg`:
sampled tokens of every scale exactly, logits / image / f_hat / residual within the golden README's
bounds, for the plain call and for the SSG reference (beta 0.5 on scales >= 1).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ssg_core import SSG, dse
from ssg_core.errors import SSGError
from ssg_core.evaluation import to_uint8_hwc
from ssg_core.margins import decision_margins, is_exponential_race, spy_sampler

import hart.modules.models.transformer.hart_transformer_t2i as hart_module
from hart.modules.models.autoencoder import HARTAutoEncoderWithDisc
from hart.modules.models.transformer import HARTForT2I

# The largest change of any token's sampling margin across the kernel families default/avx2/avx512 x 1/2/3
# threads (`python scripts/golden_margins.py --matrix`, docs/reproducibility.md).
MARGIN_CHANGE = 3.2e-5


@pytest.fixture(scope="module")
def hart_golden(golden_dir):
    return golden_dir / "hart"


@pytest.fixture(scope="module")
def model(hart_golden):
    return HARTForT2I.from_pretrained(hart_golden / "checkpoint" / "llm")  # EMA weights, strict


def _run(model, case, ssg=None):
    """The golden call: sample.py's settings on the stored text-encoder outputs, seeds set as in the README."""
    torch.manual_seed(int(case["torch_seed"]))
    np.random.seed(int(case["numpy_seed"]))
    trace = {}
    with torch.inference_mode(), spy_sampler(hart_module, "sample_with_top_k_top_p_") as trace["draws"]:
        image = model.autoregressive_infer_cfg(
            B=2, label_B=torch.from_numpy(case["context_tensor"]), g_seed=int(case["g_seed"]), cfg=float(case["cfg"]),
            more_smooth=bool(case["more_smooth"]), context_position_ids=torch.from_numpy(case["context_position_ids"]),
            context_mask=torch.from_numpy(case["context_mask"]), ssg=ssg, trace=trace)
    return image, trace


@pytest.fixture(scope="module")
def baseline(model, hart_golden):
    case = dict(np.load(hart_golden / "expected.npz"))
    return case, *_run(model, case)


def _check_outputs(expected, image, trace):
    """Tokens exactly; floats within the golden README's bounds (rounding-noise probes, with margin)."""
    for k in range(len(expected["patch_nums"])):
        np.testing.assert_array_equal(trace["tokens"][k].numpy(), expected[f"tokens_s{k}"], err_msg=f"tokens, scale {k}")
        np.testing.assert_allclose(trace["logits"][k][..., :8].numpy(), expected[f"logits_c8_s{k}"], rtol=0, atol=1e-4,
                                   err_msg=f"post-CFG logits, scale {k}")
    np.testing.assert_array_equal(torch.cat(trace["tokens"], 1).numpy(), expected["tokens_all"])
    np.testing.assert_allclose(image.numpy(), expected["image"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(trace["fhat"][0].numpy(), expected["fhat"], rtol=0, atol=1e-2)
    np.testing.assert_allclose(trace["residual"][0].numpy(), expected["residual"], rtol=0, atol=1e-2)
    u8 = to_uint8_hwc(image).astype(np.int16)
    diff = np.abs(u8 - expected["image_uint8"].astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.005, (diff.max(), (diff > 0).sum())
    # every token is torch.multinomial's exponential race, won by far more than other CPUs change: a seed,
    # filter or sampling change that left a token near a tie would pass here and fail elsewhere
    assert all(is_exponential_race(d) for d in trace["draws"])
    assert min(float(min(m.min() for m in decision_margins(d))) for d in trace["draws"]) >= 10 * MARGIN_CHANGE


def test_golden_plain_matches_upstream(baseline):
    expected, image, trace = baseline
    assert tuple(image.shape) == (2, 3, 256, 256)
    _check_outputs(expected, image, trace)


def test_golden_ssg_matches_reference(model, baseline, hart_golden):
    expected = dict(np.load(hart_golden / "expected_ssg.npz"))
    case = dict(baseline[0])
    import hashlib
    assert hashlib.sha256(case["context_tensor"].astype(np.float32).tobytes()).hexdigest() == str(expected["context_tensor_sha256"])
    for key in ("context_mask", "context_position_ids", "cfg", "g_seed", "torch_seed", "numpy_seed", "more_smooth"):
        case[key] = expected[key]
    betas = [float(b) for b in expected["ssg_beta"]]
    image, trace = _run(model, case, ssg=SSG(beta=betas))
    _check_outputs(expected, image, trace)
    pn = [int(p) for p in expected["patch_nums"]]
    for k in range(len(pn)):
        np.testing.assert_allclose(trace["guided"][k][..., :8].numpy(), expected[f"guided_c8_s{k}"], rtol=0, atol=1e-4,
                                   err_msg=f"guided logits, scale {k}")
        if k:  # DSE acts on every vocabulary channel independently, so the first 8 channels suffice
            prior = dse(trace["logits"][k - 1][..., :8], (pn[k], pn[k]), prev_size=(pn[k - 1], pn[k - 1]))
            np.testing.assert_allclose(prior.numpy(), expected[f"prior_c8_s{k}"], rtol=0, atol=1e-4,
                                       err_msg=f"prior, scale {k}")
    changed = [int((trace["tokens"][k].numpy() != baseline[2]["tokens"][k].numpy()).sum()) for k in range(len(pn))]
    assert changed[0] == 0 and sum(changed) > 100  # SSG really steered the sampling


def test_beta_zero_is_bit_identical(model, baseline):
    expected, image, trace = baseline
    image0, trace0 = _run(model, expected, ssg=SSG(beta=0.0))
    assert torch.equal(image0, image)
    assert all(torch.equal(a, b) for a, b in zip(trace0["tokens"], trace["tokens"]))


def test_checkpoints_load_strictly(hart_golden, model, tmp_path):
    ckpt = hart_golden / "checkpoint"
    non_ema = HARTForT2I.from_pretrained(ckpt / "llm", use_ema=False, vae=model.vae_proxy[0])
    assert len(non_ema.state_dict()) == 97
    assert not torch.equal(non_ema.head.weight, model.head.weight)  # two different weight files
    assert sum(p.numel() for p in model.parameters()) == 305_856
    assert sum(p.numel() for p in model.vae_proxy[0].parameters()) == 851_043
    # the tokenizer loader accepts the release's discriminator keys but nothing else unexpected
    tok = tmp_path / "tokenizer"
    shutil.copytree(ckpt / "tokenizer", tok)
    sd = torch.load(tok / "pytorch_model.bin", weights_only=True)
    torch.save({**sd, "disc.main.0.weight": torch.zeros(4, 3, 4, 4)}, tok / "pytorch_model.bin")
    HARTAutoEncoderWithDisc.from_pretrained(tok)
    torch.save({**sd, "vae.extra.weight": torch.zeros(1)}, tok / "pytorch_model.bin")
    with pytest.raises(SSGError, match="unexpected keys"):
        HARTAutoEncoderWithDisc.from_pretrained(tok)


def test_bad_inputs_raise_clear_errors(model, baseline, tmp_path):
    expected = baseline[0]
    ctx = torch.from_numpy(expected["context_tensor"])
    with pytest.raises(SSGError, match="context tensor must have shape"):
        model.autoregressive_infer_cfg(B=2, label_B=ctx[:, :100])
    with pytest.raises(SSGError, match="beta list has 3 values"):
        model.autoregressive_infer_cfg(B=2, label_B=ctx, ssg=SSG(beta=[0.0, 0.5, 0.5]))
    with pytest.raises(SSGError, match="config.json not found"):
        HARTForT2I.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "hart_autoencoder_with_disc"}')
    with pytest.raises(SSGError, match="expected 'hart_transformer_t2i'"):
        HARTForT2I.from_pretrained(tmp_path)
