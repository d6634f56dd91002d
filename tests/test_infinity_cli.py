"""`scripts/infinity_t2i.sh` / `Infinity.tools.run_infinity` end to end on tiny random checkpoints.

Tiny transformer and VAE in the official file formats, a tiny random `T5EncoderModel` and a
T5 tokenizer built locally (no network), both saved with `save_pretrained`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from Infinity.infinity.models.bsq_vae.vae import vae_model
from Infinity.infinity.models.infinity import Infinity
from Infinity.tools import run_infinity

REPO = Path(__file__).resolve().parents[1]
CT5 = 128     # tiny T5 width = the transformer's text_channels (pooling needs a multiple of 128)


def _tiny_t5(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(["a photo of a cat", "a red car on the street", "an astronaut riding a horse",
                             "a bowl of fruit on a wooden table"], trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                    extra_ids=0).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=64, d_model=CT5, d_kv=32, d_ff=256, num_layers=1, num_heads=4,
                   feed_forward_proj='gated-gelu', pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(folder)


def _tiny_checkpoints(folder: Path, d: int = 16) -> tuple[Path, Path]:
    torch.manual_seed(0)
    vae = vae_model({}, 'dynamic', d, 2 ** d, patch_size=16, encoder_ch_mult=[1, 1, 1, 1, 1],
                    decoder_ch_mult=[1, 1, 1, 1, 1], base_ch=32)
    model = Infinity(vae, text_channels=CT5, text_maxlen=512, shared_aln=True, fused_norm=True, block_chunks=2,
                     depth=2, embed_dim=64, num_heads=4, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, pad_to_multiplier=128)
    vae_path, model_path = folder / f"vae_d{d}.pth", folder / "infinity_tiny.pth"
    torch.save({'vae': vae.state_dict()}, vae_path)
    torch.save(model.state_dict(), model_path)
    return model_path, vae_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("infinity_tiny")
    _tiny_t5(root / "t5")
    model_path, vae_path = _tiny_checkpoints(root)
    (root / "other").mkdir()
    _, vae_other = _tiny_checkpoints(root / "other", d=8)     # a VAE with 8 bits: does not fit the transformer
    base = ['--model_type', 'infinity_custom', '--model_path', str(model_path), '--vae_path', str(vae_path),
            '--text_encoder_ckpt', str(root / "t5"), '--pn', '0.06M', '--device', 'cpu']
    return root, base, vae_other


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_shell_script_end_to_end_with_compare(tiny, tmp_path):
    _, base, _ = tiny
    out = tmp_path / "cat.png"
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    r = subprocess.run(["bash", str(REPO / "scripts" / "infinity_t2i.sh"), *base, '--prompt', 'a photo of a cat',
                        '--save_file', str(out), '--beta', '0.5', '--compare', '--seed', '3'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ssg, baseline = _png(out), _png(tmp_path / "cat_baseline.png")
    assert ssg.shape == (256, 256, 3) and baseline.shape == (256, 256, 3)
    assert (ssg != baseline).any()                       # guidance changed the sample
    side = _png(tmp_path / "cat_compare.png")
    assert side.shape == (256, 256 * 2 + 8, 3)
    np.testing.assert_array_equal(side[:, :256], baseline)


def test_aspect_ratio_sets_the_image_size(tiny, tmp_path):
    _, base, _ = tiny
    run_infinity.main([*base, '--prompt', 'a red car', '--save_file', str(tmp_path / "b0.png"), '--beta', '0',
                       '--seed', '5', '--h_div_w', '0.75'])
    img = _png(tmp_path / "b0.png")
    assert img.shape == (240, 320, 3)                     # 0.75 at 0.06M: grid (15, 20) x 16 px


def test_batch_mode_is_resumable_with_manifest(tiny, tmp_path):
    _, base, _ = tiny
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({'prompt': p, 'tag': i}) for i, p in enumerate(["a cat", "a horse"])))
    outdir = tmp_path / "out"
    args = [*base, '--prompt_file', str(prompts), '--outdir', str(outdir), '--num_samples', '2', '--seed', '10', '--limit', '1',
            '--beta', '0.5']
    run_infinity.main(args)
    files = sorted(p.name for p in outdir.glob("*.png"))
    assert files == ["000000_10.png", "000000_11.png"]               # --limit 1: the first prompt only
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert [(e['index'], e['seed'], e['prompt'], e['tag']) for e in manifest['images']] == [(0, 10, "a cat", 0),
                                                                                          (0, 11, "a cat", 0)]
    assert manifest['files']['transformer']['sha256'] and manifest['settings']['beta'] == '0.5'
    # resume: a finished file is kept, a missing one is redone identically
    keep = (outdir / "000000_10.png").stat().st_mtime_ns
    redo = _png(outdir / "000000_11.png")
    assert (redo != _png(outdir / "000000_10.png")).any()                    # another seed, another image
    (outdir / "000000_11.png").unlink()
    run_infinity.main(args)
    assert (outdir / "000000_10.png").stat().st_mtime_ns == keep
    np.testing.assert_array_equal(_png(outdir / "000000_11.png"), redo)
    assert not list(outdir.glob(".*.tmp"))
    # resuming with other settings would mix images: refused
    with pytest.raises(SystemExit) as e:
        run_infinity.main([*args, '--beta', '0.3'])
    assert e.value.code == 2


def test_bad_inputs_give_one_line_errors(tiny, tmp_path, capsys):
    _, base, vae_other = tiny
    cases = [
        (['--h_div_w', '5'], "unsupported aspect ratio"),
        (['--vae_path', str(vae_other)], "does not fit the transformer"),
        (['--beta', '0,0.5'], "beta list has 2 values"),
        (['--vae_type', '32'], "bits per code but --vae_type is 32"),
    ]
    for extra, msg in cases:
        with pytest.raises(SystemExit) as e:
            run_infinity.main([*base, '--prompt', 'a cat', '--save_file', str(tmp_path / "x.png"), *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and err.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_long_prompt_is_truncated_with_warning(tiny):
    root, _, _ = tiny
    tok, enc = run_infinity.load_tokenizer(str(root / "t5"))
    long_prompt = " ".join(["a photo of a cat on a red car"] * 120)
    with pytest.warns(UserWarning, match="truncated"):
        kv, lens, cu, max_len = run_infinity.encode_prompt(tok, enc, long_prompt)
    assert lens == [512] and max_len == 512 and kv.shape == (512, CT5) and cu.tolist() == [0, 512]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kv, lens, cu, _ = run_infinity.encode_prompt(tok, enc, ["a cat", "a red car"])
    assert cu.dtype == torch.int32 and cu.tolist() == [0, lens[0], lens[0] + lens[1]] and kv.shape[0] == sum(lens)


def test_sharded_safetensors_patchify_checkpoint_loads_strictly(tmp_path):
    """The 8B format: `model-0000k-of-0000n.safetensors` + index, spatial patchify with a stride-8 VAE."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    vae = vae_model({}, 'dynamic', 8, 2 ** 8, patch_size=8, encoder_ch_mult=[1, 1, 1, 1],
                    decoder_ch_mult=[1, 1, 1, 1], base_ch=32)
    model = Infinity(vae, text_channels=CT5, text_maxlen=512, shared_aln=True, fused_norm=True, block_chunks=2,
                     depth=2, embed_dim=64, num_heads=4, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, apply_spatial_patchify=1)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path / "infinity_8b_weights"
    folder.mkdir()
    keys = sorted(sd)
    weight_map = {}
    for n, part in enumerate((keys[::2], keys[1::2]), start=1):
        name = f"model-0000{n}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    torch.save({'vae': vae.state_dict()}, tmp_path / "vae.pth")
    args = run_infinity.build_parser().parse_args(
        ['--model_type', 'infinity_custom', '--model_path', str(folder), '--checkpoint_type', 'torch_shard',
         '--vae_path', str(tmp_path / "vae.pth"), '--apply_spatial_patchify', '1', '--prompt', 'x'])
    run_infinity.resolve_settings(args)
    loaded = run_infinity.load_transformer(run_infinity.load_visual_tokenizer(args), args)
    assert loaded.apply_spatial_patchify == 1 and loaded.V == 2 * 4 * 8
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # without patchify the same VAE gives 8 bits per token, the checkpoint expects 32: refused
    args.apply_spatial_patchify = 0
    with pytest.raises(run_infinity.SSGError, match="does not fit the transformer"):
        run_infinity.load_transformer(run_infinity.load_visual_tokenizer(args), args)
