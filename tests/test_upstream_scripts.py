"""scripts/{var,infinity,hart}_upstream_ssg.py against the upstream-shaped stand-in checkout (tests/upstream_standins).

Each script runs as a user runs it (a subprocess, `--upstream PATH`), on stand-in checkpoints written here. The
grid's rows are compared with the stand-in sampled directly in this process (VAR, HART: baseline and `ssg=`,
within one uint8 step: other thread counts may move a float32 rounding) or with the script's own run at beta 0
(Infinity, whose stand-in loaders import `infinity` as a top-level package; its SSG row is pinned by the stand-in
tests of tests/test_integrations.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssg_core import SSG
from ssg_core.evaluation import to_uint8_hwc

import upstream_standins.models as standin_models
from upstream_standins.hart.modules.models.transformer import HARTForT2I as StandinHART
from upstream_standins.hart.utils import encode_prompts, llm_system_prompt
from upstream_standins.infinity.models.bsq_vae.vae import vae_model as standin_vae_model
from upstream_standins.infinity.models.infinity import Infinity as StandinInfinity

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "upstream_standins"
PN256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def _script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def _cells(png: Path, rows: int, cols: int) -> np.ndarray:
    """(rows, cols, H, W, 3) uint8 from a save_grid PNG (2 px padding around every image)."""
    g = np.asarray(Image.open(png).convert("RGB"))
    H, W = (g.shape[0] - 2) // rows - 2, (g.shape[1] - 2) // cols - 2
    return np.stack([np.stack([g[2 + r * (H + 2):2 + r * (H + 2) + H, 2 + c * (W + 2):2 + c * (W + 2) + W]
                               for c in range(cols)]) for r in range(rows)])


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


# ---------------------------------------------------------------- VAR
@pytest.fixture(scope="module")
def var_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("var_upstream")
    torch.manual_seed(0)
    vae, var = standin_models.build_vae_var("cpu", V=4096, Cvae=32, ch=24, patch_nums=PN256, num_classes=1000, depth=2)
    torch.save(vae.state_dict(), root / "vae.pth")
    torch.save(var.state_dict(), root / "var.pth")
    return root, vae.eval(), var.eval()


def test_var_script_compare_grid_is_the_checkouts_sampling_with_and_without_ssg(var_ckpts, tmp_path):
    root, vae, var = var_ckpts
    beta = "0,0.5,0.5,0,0.5,0.5,0,0.5,0.5,0.5"
    run = _script("var_upstream_ssg.py", "--upstream", str(STANDINS), "--model-depth", "2", "--vae-ckpt",
                  str(root / "vae.pth"), "--var-ckpt", str(root / "var.pth"), "--classes", "3,7", "--seed", "5",
                  "--beta", beta, "--dse-mode", "bicubic", "--compare", "--device", "cpu", "--out", "grid.png",
                  cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "baseline (top) and SSG (bottom)" in run.stdout and str(STANDINS / "models") in run.stdout
    cells = _cells(tmp_path / "grid.png", 2, 2)
    labels = torch.tensor([3, 7])
    with torch.inference_mode():
        plain = var.autoregressive_infer_cfg(2, labels, g_seed=5, cfg=1.5, top_k=900, top_p=0.96)
        guided = var.autoregressive_infer_cfg(2, labels, g_seed=5, cfg=1.5, top_k=900, top_p=0.96,
                                              ssg=SSG(beta=[float(b) for b in beta.split(",")], mode="bicubic"))
    assert _close(cells[0], to_uint8_hwc(plain)) and _close(cells[1], to_uint8_hwc(guided))
    assert not _close(cells[0], cells[1])


def test_var_script_refuses_bad_input_in_one_line_before_loading(tmp_path):
    run = _script("var_upstream_ssg.py", "--upstream", str(STANDINS), "--var-ckpt", "missing.pth", "--beta", "0,0.5",
                  "--device", "cpu", cwd=tmp_path)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "beta list has 2 values but the model samples 10 scales" in run.stderr, run.stderr


def test_scripts_refuse_a_folder_that_is_not_the_checkout(tmp_path):
    for script, extra in (("var_upstream_ssg.py", ["--device", "cpu"]), ("hart_upstream_ssg.py", ["--device", "cpu"]),
                          ("infinity_upstream_ssg.py", ["--pn", "0.06M", "--model_path", "m.pth"])):
        run = _script(script, "--upstream", str(tmp_path), *extra, cwd=tmp_path)
        assert run.returncode == 2 and "give the root folder of a" in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr


# ---------------------------------------------------------------- Infinity
@pytest.fixture(scope="module")
def infinity_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("infinity_upstream")
    torch.manual_seed(0)
    vae = standin_vae_model("", "dynamic", 4, 2 ** 4)
    model = StandinInfinity(vae, text_channels=2048, depth=2, embed_dim=16)   # run_infinity's "infinity_tiny"
    torch.save({"vae": vae.state_dict()}, root / "vae.pth")
    torch.save(model.state_dict(), root / "infinity.pth")
    return root


def _infinity(root: Path, tmp_path: Path, *extra: str, out: str = "grid.png") -> np.ndarray:
    run = _script("infinity_upstream_ssg.py", "--upstream", str(STANDINS), "--model_path", str(root / "infinity.pth"),
                  "--vae_type", "4", "--vae_path", str(root / "vae.pth"), "--pn", "0.06M", "--model_type",
                  "infinity_tiny", "--cfg", "3", "--tau", "0.5", "--h_div_w_template", "0.5", "--seed", "3",
                  "--prompt", "a cat", "--prompt", "a dog on a hill", *extra, "--out", out, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    return _cells(tmp_path / out, 2 if "--compare" in extra else 1, 2)


def test_infinity_script_compare_grid_with_upstream_flags_and_a_non_square_schedule(infinity_ckpts, tmp_path):
    both = _infinity(infinity_ckpts, tmp_path, "--beta", "0,0.5,0,0.5", "--compare")
    assert both.shape[2:] == (64, 128, 3)   # the h/w = 0.5 template of the stand-in table: last grid 4x8, 16 px each
    plain = _infinity(infinity_ckpts, tmp_path, "--beta", "0", out="plain.png")   # the checkout's own sampling
    assert np.array_equal(both[0], plain[0]) and not np.array_equal(both[0], both[1])


# ---------------------------------------------------------------- HART
def _write_tiny_text_model(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["a red heart on a white table", "an owl in the snow"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  padding_side="right")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    Qwen2Model(Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=128)).save_pretrained(folder)


@pytest.fixture(scope="module")
def hart_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("hart_upstream")
    torch.manual_seed(0)
    model = StandinHART(context_dim=64, context_token=8)
    model.save_pretrained(root / "llm")
    torch.manual_seed(1)
    ema = StandinHART(context_dim=64, context_token=8)
    torch.save(ema.state_dict(), root / "llm" / "ema_model.bin")
    _write_tiny_text_model(root / "qwen")
    return root, ema.eval()


def test_hart_script_compare_grid_uses_the_ema_weights_and_guides_the_tokens(hart_ckpts, tmp_path):
    from transformers import AutoModel, AutoTokenizer
    root, ema = hart_ckpts
    prompts = ["a red heart", "an owl"]
    run = _script("hart_upstream_ssg.py", "--upstream", str(STANDINS), "--model_path", str(root / "llm"),
                  "--text_model_path", str(root / "qwen"), "--max_token_length", "8", "--prompt", prompts[0],
                  "--prompt", prompts[1], "--seed", "4", "--beta", "0.6", "--beta-schedule", "linear-decay",
                  "--no-more_smooth", "--compare", "--device", "cpu", "--out", "grid.png", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    cells = _cells(tmp_path / "grid.png", 2, 2)
    tok, text = AutoTokenizer.from_pretrained(root / "qwen"), AutoModel.from_pretrained(root / "qwen").eval()
    rows = []
    for ssg in (None, SSG(beta=0.6, schedule="linear-decay")):
        torch.manual_seed(4)
        np.random.seed(4)
        with torch.inference_mode():
            _, mask, pos, ctx = encode_prompts(prompts, text, tok, 8, llm_system_prompt, True)
            rows.append(ema.autoregressive_infer_cfg(B=2, label_B=ctx, cfg=4.5, g_seed=4, more_smooth=False,
                                                     context_position_ids=pos, context_mask=mask, ssg=ssg))
    assert _close(cells[0], to_uint8_hwc(rows[0])) and _close(cells[1], to_uint8_hwc(rows[1]))
    assert not _close(cells[0], cells[1])
