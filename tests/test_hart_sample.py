"""End to end: `scripts/hart_t2i.sh` / `hart.sample` on tiny random checkpoints in the release layout
(llm/ + tokenizer/) with a tiny random `Qwen2Model` and a BPE tokenizer as text encoder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hart.modules.models.autoencoder import HARTAutoEncoder, HARTAutoEncoderWithDiscConfig
from hart.modules.models.transformer import HARTForT2I, HARTForT2IConfig
from hart.sample import main

REPO = Path(__file__).resolve().parents[1]

TOK_CFG = dict(vocab_size=64, z_channels=8, ch=32, ch_mult=[1, 1, 1], v_patch_nums=[1, 2, 3, 4],
               quantizer_type="var_hybrid", share_quant_resi=4, quant_resi=0.5)
LLM_CFG = dict(context_token=16, context_dim=64, embed_dim=32, depth=1, num_heads=2, patch_nums=[1, 2, 3, 4],
               attn_type="llama", mlp_type="llama", diff_width=32, diff_depth=1, num_sampling_steps="8")


def _write_tiny_qwen(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["a red heart on a white table", "an astronaut riding a horse on the moon",
                             "Given a user prompt, generate an enhanced prompt"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  padding_side="right")
    tok.save_pretrained(folder)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512)
    torch.manual_seed(0)
    Qwen2Model(cfg).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hart_tiny")
    torch.manual_seed(0)
    vae = HARTAutoEncoder(HARTAutoEncoderWithDiscConfig(**TOK_CFG))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "config.json").write_text(json.dumps({"model_type": "hart_autoencoder_with_disc", **TOK_CFG}))
    torch.save({f"vae.{k}": v for k, v in vae.state_dict().items()}, root / "tokenizer" / "pytorch_model.bin")
    model = HARTForT2I(HARTForT2IConfig(**LLM_CFG), vae=vae)
    with torch.no_grad():  # larger head weights: diverse, non-uniform tokens
        model.head.weight.normal_(0, 0.5)
    (root / "llm").mkdir()
    (root / "llm" / "config.json").write_text(json.dumps({"model_type": "hart_transformer_t2i", **LLM_CFG}))
    torch.save(model.state_dict(), root / "llm" / "ema_model.bin")
    torch.save(model.state_dict(), root / "llm" / "pytorch_model.bin")
    _write_tiny_qwen(root / "qwen")
    return root


def _base(root: Path) -> list[str]:
    return ["--model_path", str(root / "llm"), "--text_model_path", str(root / "qwen"), "--max_token_length", "16",
            "--device", "cpu"]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_script_end_to_end_compare(tiny_root, tmp_path):
    out = tmp_path / "demo"
    cmd = ["bash", str(REPO / "scripts" / "hart_t2i.sh"), *_base(tiny_root), "--prompt_list", "a red heart",
           "an astronaut", "--beta", "0.5", "--compare", "--store_seperately", "--sample_folder_dir", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for sub in ("baseline", "ssg"):
        for i in range(2):
            assert _png(out / sub / f"{i:06d}.png").shape == (16, 16, 3)
    assert _png(out / "compare.png").shape[0] > 32  # two rows of 16 px images plus padding
    assert (out / "prompt.txt").read_text().splitlines() == ["a red heart", "an astronaut"]
    assert not np.array_equal(_png(out / "baseline" / "000000.png"), _png(out / "ssg" / "000000.png"))


@pytest.mark.parametrize("wrapper, entry", [("hart_t2i.sh", "hart/sample.py"),
                                            ("infinity_t2i.sh", "Infinity/tools/run_infinity.py")])
def test_wrappers_run_in_the_callers_folder_without_install(tmp_path, wrapper, entry):
    """Both wrappers: the caller's folder stays the working folder (relative paths are the caller's), the repository
    goes first on PYTHONPATH, $PYTHON picks the interpreter, the entry point is called by absolute path (so that a
    folder named `hart` or `Infinity` where the user stands cannot shadow the package) and the arguments pass as given."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\nprintf \'%s\\n\' "$PWD" "$PYTHONPATH" "$@"\n')
    stub.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stub), PYTHONPATH="/elsewhere")
    r = subprocess.run(["bash", str(REPO / "scripts" / wrapper), "--prompt", "a b", "--top-p", "0.5"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    cwd, path, script, *args = r.stdout.splitlines()
    assert os.path.realpath(cwd) == os.path.realpath(tmp_path)
    first, rest = path.split(":", 1)
    assert os.path.realpath(first) == str(REPO) and rest == "/elsewhere"
    assert os.path.realpath(script) == str(REPO / entry) and args == ["--prompt", "a b", "--top-p", "0.5"]


def test_eval_mode_prints_what_it_wrote(tiny_root, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red heart\nthe moon\n")
    out = tmp_path / "eval"
    args = [*_base(tiny_root), "--prompt_file", str(prompts), "--sample_folder_dir", str(out), "--beta", "0.5"]
    assert main(args) == 0                                              # no --npz: a summary line all the same
    assert capsys.readouterr().out.splitlines()[-1] == f"2 images in {out}: 2 new, 0 already there"
    (out / "000001.png").unlink()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"2 images in {out}: 1 new, 1 already there"
    assert main([*args, "--npz"]) == 0                                   # nothing left to do
    assert capsys.readouterr().out.splitlines()[-1] == (f"2 images in {out}: 0 new, 2 already there; "
                                                        f"wrote {out / 'samples.npz'} (2, 16, 16, 3)")


def test_eval_mode_resumes_and_writes_manifest(tiny_root, tmp_path):
    prompts = tmp_path / "meta_data.json"
    prompts.write_text(json.dumps({f"id{i}": {"prompt": p, "category": "c"} for i, p in
                                   enumerate(["a red heart", "a white table", "the moon"])}))
    out = tmp_path / "eval"
    args = [*_base(tiny_root), "--prompt_file", str(prompts), "--no-more_smooth", "--beta", "0.5",
            "--sample_folder_dir", str(out), "--npz"]
    assert main(args) == 0
    first = _png(out / "000001.png")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_images"] == 3 and manifest["ssg"] is True and manifest["betas"] == [0.0, 0.5, 0.5, 0.5]
    assert len(manifest["checkpoints_sha256"]) == 4
    assert [r["id"] for r in json.loads((out / "prompts.json").read_text())] == ["id0", "id1", "id2"]
    assert np.load(out / "samples.npz")["arr_0"].shape == (3, 16, 16, 3)
    # resume: a deleted image is redone identically (its seed depends only on (seed, index))
    (out / "000001.png").unlink()
    mtime = (out / "000000.png").stat().st_mtime_ns
    assert main(args) == 0
    assert np.array_equal(_png(out / "000001.png"), first)
    assert (out / "000000.png").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "x", "--beta", "0,0.5"], "beta list has 2 values but the model samples 4 scales"),
    (["--prompt", "x", "--max_token_length", "300"], "max_token_length 300 != the transformer's context_token 16"),
    (["--prompt", "x", "--beta", "0", "--compare"], "--compare needs a non-zero --beta"),
    (["--prompt", "x", "--prompt_list", "y"], "give at most one of --prompt"),
])
def test_bad_cli_input_exits_2(tiny_root, tmp_path, capsys, extra, message):
    args = [a for a in _base(tiny_root) if a not in ("--max_token_length", "16")] if "--max_token_length" in extra \
        else _base(tiny_root)
    with pytest.raises(SystemExit) as e:
        main([*args, *extra, "--sample_folder_dir", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err  # one line, before any model is loaded
    assert not (tmp_path / "o").exists()


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model_path", str(tmp_path), "--text_model_path", str(tmp_path), "--prompt", "x", "--device", "cpu"])
    assert e.value.code == 2
    assert "config.json not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- upstream's habits
def test_text_encoder_loads_in_float32(tiny_root, tmp_path):
    """transformers >= 5 would keep the dtype config.json names (bf16 for Qwen2-1.5B-Instruct); upstream runs fp32."""
    from transformers import Qwen2Model

    from hart.sample import load_text_encoder
    folder = tmp_path / "qwen_bf16"
    Qwen2Model.from_pretrained(tiny_root / "qwen").to(torch.bfloat16).save_pretrained(folder)
    for f in (tiny_root / "qwen").glob("tokenizer*"):
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    assert "bfloat16" in (cfg.get("dtype"), cfg.get("torch_dtype"))
    _, model = load_text_encoder(folder, torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_one_prompt_writes_000000_png(tiny_root, tmp_path):
    out = tmp_path / "one"
    assert main([*_base(tiny_root), "--prompt", "a red heart", "--beta", "0", "--sample_folder_dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "prompt.txt"]  # no grid for a single image


def test_no_prompt_uses_default_prompts_and_upstream_flags(tiny_root, tmp_path, capsys):
    from hart.utils.constants import default_prompts
    out = tmp_path / "defaults"
    args = [*_base(tiny_root), "--shield_model_path", str(tmp_path / "shieldgemma-2b"), "--use_ema", "True",
            "--more_smooth", "False", "--use_llm_system_prompt", "1", "--prompt", "", "--sample_folder_dir", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "ShieldGemma prompt filter is not applied" in err and "--more_smooth 'False' means True" in err
    prompts = (out / "prompt.txt").read_text().splitlines()
    assert len(set(prompts)) == 4 and set(prompts) <= set(default_prompts)
    assert _png(out / "sample_images.png").shape[1] > 4 * 16  # 4 images in one row
    assert len(default_prompts) == 9  # upstream's missing comma fuses two prompts
    assert any("no digital painting blur.Bright scene" in p for p in default_prompts)


@pytest.mark.parametrize("argv, expected", [
    ([], (True, True, True)), (["--more_smooth", "False"], (True, True, True)),  # upstream: type=bool
    (["--no-more_smooth", "--no-use-ema"], (False, False, True)), (["--use_llm_system_prompt", ""], (True, True, False)),
    (["--use_ema", "--more-smooth"], (True, True, True)),
])
def test_bool_flags_parse_as_upstream(argv, expected):
    from hart.sample import build_parser
    a = build_parser().parse_args(argv)
    assert (a.use_ema, a.more_smooth, a.use_llm_system_prompt) == expected


def test_saved_pngs_convert_like_upstream(tmp_path):
    """x255 in the image's own dtype (fp16 under autocast), a grid's cells in fp16, then truncation."""
    from torchvision.utils import make_grid

    from hart.sample import save_images
    every_fp16 = torch.arange(0, 0x3C01, dtype=torch.int16).view(torch.float16)  # all fp16 values in [0, 1]
    img16 = torch.cat([every_fp16, every_fp16.new_zeros(3 * 72 * 72 - len(every_fp16))]).view(1, 3, 72, 72)
    assert save_images(img16, tmp_path / "a", False) == [tmp_path / "a" / "000000.png"]
    upstream = img16.clone().mul_(255).numpy()[0].transpose(1, 2, 0).astype(np.uint8)  # sample.py's expression
    assert np.array_equal(_png(tmp_path / "a" / "000000.png"), upstream)
    assert not np.array_equal(upstream, (img16.float() * 255).numpy()[0].transpose(1, 2, 0).astype(np.uint8))

    torch.manual_seed(0)
    img32 = torch.rand(2, 3, 16, 16)
    assert save_images(img32, tmp_path / "b", False) == [tmp_path / "b" / "sample_images.png"]
    grid = _png(tmp_path / "b" / "sample_images.png")
    upstream = make_grid(img32, nrow=12).to(torch.float16).permute(1, 2, 0).mul_(255).numpy().astype(np.uint8)
    for i in range(2):  # the cells (upstream's padding is black, the shared helper's white)
        cell = (slice(2, 18), slice(2 + 18 * i, 18 + 18 * i))
        assert np.array_equal(grid[cell], upstream[cell])
    assert not np.array_equal(grid[2:18, 2:18], (img32[0] * 255).permute(1, 2, 0).numpy().astype(np.uint8))
    names = [p.name for p in save_images(img32, tmp_path / "c", True)]
    assert names == ["000000.png", "000001.png"]


# ------------------------------------------------------------------------------------------- early errors
@pytest.mark.parametrize("setup, extra, message", [
    (lambda o: o.write_text("x"), ["--prompt", "x"], "exists and is not a folder"),
    (lambda o: (o / "sample_images.png").mkdir(parents=True), ["--prompt_list", "a", "b"], "is a folder"),
    (lambda o: o.mkdir() or (o / "ssg").write_text("x"), ["--prompt", "x", "--compare"], "exists and is not a folder"),
])
def test_bad_output_path_fails_before_loading(tmp_path, capsys, setup, extra, message):
    out = tmp_path / "out"
    setup(out)
    with pytest.raises(SystemExit) as e:  # the checkpoint does not exist: the output is checked first
        main(["--model_path", str(tmp_path / "none"), "--text_model_path", str(tmp_path), *extra,
              "--sample_folder_dir", str(out), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sample_folder_dir") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("break_folder, message", [
    (lambda q: [f.unlink() for f in q.iterdir()], "lacks config.json; tokenizer files"),
    (lambda q: (q / "model.safetensors").unlink(), "lacks weights"),
    (lambda q: (q / "tokenizer.json").write_text("{"), "cannot load the text encoder's tokenizer from"),
    (lambda q: (q / "model.safetensors").write_bytes(b"xx"), "cannot load the text encoder model from"),
])
def test_broken_text_encoder_is_one_line_error(tiny_root, tmp_path, capsys, break_folder, message):
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    for f in (tiny_root / "qwen").iterdir():
        (qwen / f.name).write_bytes(f.read_bytes())
    break_folder(qwen)
    args = [a if a != str(tiny_root / "qwen") else str(qwen) for a in _base(tiny_root)]
    with pytest.raises(SystemExit) as e:
        main([*args, "--prompt", "x", "--sample_folder_dir", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and str(qwen) in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("version, key", [("4.44.2", "torch_dtype"), ("4.55.4", "torch_dtype"),
                                          ("4.56.0", "dtype"), ("5.23.0", "dtype")])
def test_fp32_keyword_fits_the_transformers_version(monkeypatch, version, key):
    import transformers

    from hart.sample import fp32_kwargs
    monkeypatch.setattr(transformers, "__version__", version)
    assert fp32_kwargs() == {key: torch.float32}


def test_guided_window_is_printed_and_in_the_manifest(tiny_root, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red heart\n")
    out = tmp_path / "eval"
    assert main([*_base(tiny_root), "--prompt_file", str(prompts), "--sample_folder_dir", str(out), "--beta", "0.5",
                 "--beta_schedule", "linear-increase", "--beta_last_scales", "2"]) == 0
    assert "SSG: beta per scale [0, 0, 0.25, 0.5] (--beta 0.5, linear-increase, --beta-last-scales 2)" in \
        capsys.readouterr().out.splitlines()[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["betas"] == [0.0, 0.0, 0.25, 0.5] and manifest["settings"]["beta_last_scales"] == 2
