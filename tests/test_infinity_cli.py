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


def test_shell_script_end_to_end_with_compare_in_the_callers_folder(tiny, tmp_path):
    """Relative paths (--save_file, --text_encoder_ckpt) are the caller's, not the repository's."""
    root, base, _ = tiny
    (tmp_path / "t5").symlink_to(root / "t5")
    base = [a if a != str(root / "t5") else "./t5" for a in base]
    name = f"cat_{os.getpid()}.png"          # nothing of that name in the repository to overwrite or remove
    out = tmp_path / name
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    try:
        r = subprocess.run(["bash", str(REPO / "scripts" / "infinity_t2i.sh"), *base, '--prompt', 'a photo of a cat',
                            '--save_file', name, '--beta', '0.5', '--compare', '--seed', '3'],
                           capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    finally:
        stray = [p for p in (REPO / f"{out.stem}{tag}.png" for tag in ("", "_baseline", "_compare")) if p.exists()]
        for p in stray:
            p.unlink()
    assert not stray, f"written in the repository: {stray}"
    assert r.returncode == 0, r.stderr[-2000:]
    ssg, baseline = _png(out), _png(out.with_name(f"{out.stem}_baseline.png"))
    assert ssg.shape == (256, 256, 3) and baseline.shape == (256, 256, 3)
    assert (ssg != baseline).any()                       # guidance changed the sample
    side = _png(out.with_name(f"{out.stem}_compare.png"))
    assert side.shape == (256, 256 * 2 + 8, 3)
    np.testing.assert_array_equal(side[:, :256], baseline)


def test_every_flag_has_a_hyphen_spelling_with_underscores_first_in_help(capsys):
    parser = run_infinity.build_parser()
    snake = ['--save_file', 'x.png', '--text_encoder_ckpt', 't5', '--ckpt_dir', '/c', '--model_type', 'infinity_8b',
             '--top_k', '5', '--top_p', '0.5', '--h_div_w', '0.5', '--cfg_insertion_layer', '-2', '--num_samples', '3',
             '--negative_prompt', 'blurry', '--beta_schedule', 'linear-decay']
    kebab = [a.replace('_', '-') if a.startswith('--') else a for a in snake]
    assert kebab[:2] == ['--save-file', 'x.png'] and '--h-div-w' in kebab
    assert vars(parser.parse_args(kebab)) == vars(parser.parse_args(snake)) != vars(parser.parse_args([]))
    for action in parser._actions:
        names = action.option_strings
        assert all(n.replace('_', '-') in names for n in names if n.startswith('--')), names
    with pytest.raises(SystemExit):
        parser.parse_args(['--help'])
    text = capsys.readouterr().out      # upstream's spelling first, and alone in the usage line
    assert '--top_k TOP_K, --top-k TOP_K' in text and '[--top_k TOP_K]' in text and '[--save_file SAVE_FILE]' in text


def test_aspect_ratio_sets_the_image_size_with_upstream_flags_and_jpeg(tiny, tmp_path):
    _, base, _ = tiny
    # the flags of upstream's scripts/infer.sh are accepted; --save_file tmp.jpg writes a JPEG, as upstream
    upstream = ['--use_scale_schedule_embedding', '0', '--use_flex_attn', '0', '--cache_dir', str(tmp_path / "c"),
                '--enable_model_cache', '0', '--bf16', '1', '--rope2d_normalized_by_hw', '2', '--use_bit_label', '1',
                '--rope2d_each_sa_layer', '1', '--add_lvl_embeding_only_first_block', '1', '--cfg_insertion_layer', '0']
    run_infinity.main([*base, *upstream, '--prompt', 'a red car', '--save_file', str(tmp_path / "b0.jpg"),
                       '--beta', '0', '--seed', '5', '--h_div_w', '0.75'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0.jpg"]
    with Image.open(tmp_path / "b0.jpg") as im:
        assert im.format == "JPEG" and im.size == (320, 240)      # 0.75 at 0.06M: grid (15, 20) x 16 px


def test_save_image_writes_the_format_of_the_extension(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for name, fmt in [("a.PNG", "PNG"), ("a.webp", "WEBP"), ("a.jpeg", "JPEG")]:
        run_infinity.save_image(tmp_path / name, img)
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt
            if fmt != "JPEG":                                       # PNG and WebP (lossless, as cv2) are exact
                np.testing.assert_array_equal(np.asarray(im.convert("RGB")), img)
    with pytest.raises(run_infinity.SSGError, match="unknown image type .gif"):
        run_infinity.save_image(tmp_path / "a.gif", img)
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "a.gif").exists()


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
    assert manifest['ssg_settings']['beta'] == [0.0] + [0.5] * 6    # the per-scale values sampled (7 scales)
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
        (['--cfg_insertion_layer', '-2'], "the model has 2 blocks"),      # known once the checkpoint is read
    ]
    for extra, msg in cases:
        with pytest.raises(SystemExit) as e:
            run_infinity.main([*base, '--prompt', 'a cat', '--save_file', str(tmp_path / "x.png"), *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and err.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_bad_flags_fail_before_any_file_is_read(tiny, tmp_path, capsys):
    """Each of these must be refused up front: the transformer path does not even exist."""
    root, base, _ = tiny
    (tmp_path / "afile").write_text("")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    early = [*base, '--model_path', str(tmp_path / "missing.pth")]
    cases = [
        (['--cfg', '3,4'], "--cfg list has 2 values but the schedule has 7 scales"),
        (['--cfg', 'strong'], "--cfg: expected a number"),
        (['--cfg', 'nan'], "--cfg must be a finite number"),
        (['--top_k', '-1'], "--top_k must be >= 0"),
        (['--top_p', '1.5'], "between 0 and 1"),
        (['--tau', 'nan'], "--tau must be a positive number"),
        (['--use_bit_label', '0'], "--use_bit_label 0 is not implemented"),
        (['--rope2d_normalized_by_hw', '1'], "--rope2d_normalized_by_hw 1 is not implemented"),
        (['--rope2d_each_sa_layer', '0'], "--rope2d_each_sa_layer 0 is not implemented"),
        (['--use_flex_attn', '1'], "--use_flex_attn 1 is not implemented"),
        (['--cfg_insertion_layer', '2'], "cfg_insertion_layer 2 is not valid"),
        (['--beta_last_scales', '7'], "--beta-last-scales 7: cannot guide the last 7 scales: only 6 of the model's 7"),
        (['--beta-from-scale', '7'], "--beta-from-scale 7: cannot guide from scale 7 on"),
        (['--model_type', 'infinity_2b', '--cfg_insertion_layer', '-32'], "the model has 32 blocks"),
        (['--save_file', str(tmp_path / "x.gif")], "unknown image type .gif"),
        (['--save_file', str(tmp_path / "x")], "unknown image type (no extension)"),
        (['--save_file', str(tmp_path / "afile" / "x.png")], "is a file, not a folder"),
        (['--text_encoder_ckpt', str(tmp_path / "no_t5")], "no such folder"),
        (['--text_encoder_ckpt', './no_t5'], "no such folder"),
        (['--text_encoder_ckpt', 'not a repo'], "neither an existing folder nor a Hugging Face repo id"),
        (['--prompt_file', str(tmp_path / "none.txt")], "prompt file"),
        (['--prompt_file', str(root / "t5" / "config.json")], "entry 0 has no 'prompt' string"),
        (['--prompt_file', str(prompts), '--outdir', str(tmp_path / "afile")], "exists and is not a folder"),
    ]
    for extra, msg in cases:
        mode = [] if '--prompt_file' in extra else ['--prompt', 'a cat']
        with pytest.raises(SystemExit) as e:
            run_infinity.main([*early, *mode, *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (extra, err)
    # upstream's argparse choices
    for flag, value in [('--add_lvl_embeding_only_first_block', '2'), ('--use_scale_schedule_embedding', '2'),
                        ('--enable_model_cache', '2'), ('--bf16', '2')]:
        with pytest.raises(SystemExit) as e:
            run_infinity.build_parser().parse_args([flag, value])
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


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


def _save_shards(folder: Path, sd: dict, parts: list[list[str]]) -> None:
    from safetensors.torch import save_file
    folder.mkdir(exist_ok=True)
    weight_map = {}
    for n, part in enumerate(parts, start=1):
        name = f"model-{n:05d}-of-{len(parts):05d}.safetensors"
        save_file({k: sd[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_safetensors_patchify_checkpoint_loads_strictly_shard_by_shard(tmp_path, monkeypatch):
    """The 8B format: `model-0000k-of-0000n.safetensors` + index, spatial patchify with a stride-8 VAE.

    The model is built on the meta device and each shard's tensors become its parameters, one
    shard at a time (no full state dict, no second copy), after a strict check of every key.
    """
    torch.manual_seed(0)
    vae = vae_model({}, 'dynamic', 8, 2 ** 8, patch_size=8, encoder_ch_mult=[1, 1, 1, 1],
                    decoder_ch_mult=[1, 1, 1, 1], base_ch=32)
    model = Infinity(vae, text_channels=CT5, text_maxlen=512, shared_aln=True, fused_norm=True, block_chunks=2,
                     depth=2, embed_dim=64, num_heads=4, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2, apply_spatial_patchify=1)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(sd)
    folder = tmp_path / "infinity_8b_weights"
    _save_shards(folder, sd, [keys[0::3], keys[1::3], keys[2::3]])
    torch.save({'vae': vae.state_dict()}, tmp_path / "vae.pth")
    args = run_infinity.build_parser().parse_args(
        ['--model_type', 'infinity_custom', '--model_path', str(folder), '--checkpoint_type', 'torch_shard',
         '--vae_path', str(tmp_path / "vae.pth"), '--apply_spatial_patchify', '1', '--prompt', 'x'])
    run_infinity.resolve_settings(args)
    vae_loaded = run_infinity.load_visual_tokenizer(args)

    reads = []          # (file, meta?) in order, and the tensors handed out
    real_load = run_infinity.load_state_dict

    def spy(path, *a, **kw):
        out = real_load(path, *a, **kw)
        reads.append((Path(path).name, kw.get('device') == 'meta', out))
        return out
    monkeypatch.setattr(run_infinity, 'load_state_dict', spy)
    loaded = run_infinity.load_transformer(vae_loaded, args)
    assert loaded.apply_spatial_patchify == 1 and loaded.V == 2 * 4 * 8
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # shapes of all three shards first (meta), then one shard at a time
    assert [(name, meta) for name, meta, _ in reads] == [(f"model-0000{n}-of-00003.safetensors", m)
                                                         for m in (True, False) for n in (1, 2, 3)]
    head = next(out for _, meta, out in reads if not meta and 'head.weight' in out)['head.weight']
    assert loaded.head.weight.data_ptr() == head.data_ptr()              # the shard's tensor is the parameter

    # a key in two shards, or one missing from every shard: refused before any weight is read
    for parts, msg in [([keys[0::2], keys[1::2] + keys[:1]], "is in two shards"),
                       ([keys[0::2], [k for k in keys[1::2] if k != 'head.bias']], "missing keys.*head.bias")]:
        bad = tmp_path / f"bad{len(reads)}"
        _save_shards(bad, sd, parts)
        args.model_path = str(bad)
        reads.clear()
        with pytest.raises(run_infinity.SSGError, match=msg):
            run_infinity.load_transformer(vae_loaded, args)
        assert all(meta for _, meta, _ in reads)
    # without patchify the same VAE gives 8 bits per token, the checkpoint expects 32: refused
    args.model_path, args.apply_spatial_patchify = str(folder), 0
    with pytest.raises(run_infinity.SSGError, match="does not fit the transformer"):
        run_infinity.load_transformer(run_infinity.load_visual_tokenizer(args), args)


def _loader_args(tiny, *extra):
    root, base, _ = tiny
    args = run_infinity.build_parser().parse_args([*base, '--prompt', 'x', *extra])
    run_infinity.resolve_settings(args)
    return args


def _old_vae_names(sd: dict, every: int = 1) -> dict:
    """Upstream's older key style (`X.weight` for `X.conv.weight` / `X.norm.weight`), on every `every`-th key."""
    out = {}
    for i, (k, v) in enumerate(sd.items()):
        if i % every == 0:
            k = k.replace('.conv.weight', '.weight').replace('.conv.bias', '.bias')
            k = k.replace('.norm.weight', '.weight').replace('.norm.bias', '.bias')
        out[k] = v
    return out


def test_vae_files_with_older_key_names_load_in_the_cli(tiny, tmp_path):
    root, _, _ = tiny
    vsd = torch.load(root / "vae_d16.pth", weights_only=True)['vae']
    for every, name in [(1, "old.pth"), (3, "mixed.pth")]:          # all renamed, or one key in three
        old = _old_vae_names(vsd, every)
        assert 'decoder.conv_in.weight' in old or every > 1
        assert 'decoder.up.1.upsample.conv.weight' in old or every > 1   # the Conv named `conv` loses one level
        torch.save({'vae': old}, tmp_path / name)
        vae = run_infinity.load_visual_tokenizer(_loader_args(tiny, '--vae_path', str(tmp_path / name)))
        for k, v in vae.state_dict().items():
            assert torch.equal(v, vsd[k]), k
    # a file that lacks a decoder weight is one clear error, not a KeyError
    broken = {k: v for k, v in _old_vae_names(vsd).items() if not k.startswith('decoder.up.1.block.0.conv1')}
    torch.save({'vae': broken}, tmp_path / "broken.pth")
    with pytest.raises(run_infinity.SSGError, match="decoder.up.1.block.0.conv1.conv.weight"):
        run_infinity.load_visual_tokenizer(_loader_args(tiny, '--vae_path', str(tmp_path / "broken.pth")))


def test_vae_needs_the_decoder_only_and_either_mask_name(tiny, tmp_path):
    root, _, _ = tiny
    vsd = torch.load(root / "vae_d16.pth", weights_only=True)['vae']
    # no encoder, only one name of the bit-mask buffer, plus a key upstream would skip: loads
    slim = {k: v for k, v in vsd.items() if k.startswith('decoder.')}
    slim['quantize.lfq.mask'] = vsd['quantize.lfq.mask']
    slim['discriminator.weight'] = torch.zeros(3)
    torch.save({'vae': slim}, tmp_path / "slim.pth")
    vae = run_infinity.load_visual_tokenizer(_loader_args(tiny, '--vae_path', str(tmp_path / "slim.pth")))
    assert torch.equal(vae.decoder.conv_out.conv.weight, vsd['decoder.conv_out.conv.weight'])
    # the decoder stays strict: an extra or a missing decoder weight is refused
    for bad, msg in [({**vsd, 'decoder.up.0.attn.q.weight': torch.zeros(1)}, "unexpected decoder keys"),
                     ({k: v for k, v in vsd.items() if k != 'decoder.norm_out.norm.bias'}, "missing decoder keys")]:
        torch.save({'vae': bad}, tmp_path / "bad.pth")
        with pytest.raises(run_infinity.SSGError, match=msg):
            run_infinity.load_visual_tokenizer(_loader_args(tiny, '--vae_path', str(tmp_path / "bad.pth")))


def test_transformer_drops_upstream_buffers_and_pads_cfg_uncond_like_upstream(tiny, tmp_path):
    root, _, _ = tiny
    sd = torch.load(root / "infinity_tiny.pth", weights_only=True)
    extra = {'lvl_1L': torch.zeros(1, 521), 'attn_bias_for_masking': torch.zeros(1, 1, 4, 4),
             'Infinity_visible_kvlen': torch.zeros(4), 'Infinity_invisible_qlen': torch.zeros(4)}
    short = {**sd, **extra, 'cfg_uncond': sd['cfg_uncond'][:100].clone()}
    torch.save(short, tmp_path / "short.pth")
    args = _loader_args(tiny, '--model_path', str(tmp_path / "short.pth"))
    vae = run_infinity.load_visual_tokenizer(args)
    a = run_infinity.load_transformer(vae, args).cfg_uncond
    b = run_infinity.load_transformer(vae, args).cfg_uncond
    assert a.shape == (512, CT5) and torch.equal(a[:100], sd['cfg_uncond'][:100])
    assert torch.equal(a, b)                                          # padding is deterministic
    # ... and equals upstream's rows for a freshly built model, whatever the global RNG did before
    torch.manual_seed(123)
    fresh = Infinity(vae, text_channels=CT5, text_maxlen=512, shared_aln=True, fused_norm=True, block_chunks=2,
                     depth=2, embed_dim=64, num_heads=4, add_lvl_embeding_only_first_block=1, use_bit_label=1,
                     rope2d_each_sa_layer=1, rope2d_normalized_by_hw=2)
    assert torch.equal(a[100:], fresh.cfg_uncond[100:])
    assert a[100:].abs().max() <= 2 / CT5 ** 0.5 and 0.8 < float(a[100:].std() * CT5 ** 0.5) < 1.1   # trunc. N(0, 1.2)
    fresh.load_state_dict(short)                                      # the model's own override: same result
    assert torch.equal(fresh.cfg_uncond, a)
    # any other unknown key is still refused
    torch.save({**sd, 'lvl_2L': torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(run_infinity.SSGError, match="unexpected keys.*lvl_2L"):
        run_infinity.load_transformer(vae, _loader_args(tiny, '--model_path', str(tmp_path / "odd.pth")))


def test_gpu_runs_t5_and_sampling_under_bf16_autocast_whatever_bf16(monkeypatch):
    """Upstream's CLI wraps gen_one_img, T5 included, in CUDA bf16 autocast; --bf16 0 only keeps the blocks fp32."""
    import contextlib
    from types import SimpleNamespace
    calls = []
    monkeypatch.setattr(torch, 'autocast', lambda **kw: calls.append(kw) or contextlib.nullcontext())
    run_infinity._autocast(torch.device('cuda'))      # no model dtype involved: the same for --bf16 0 and 1
    run_infinity._autocast(torch.device('cpu'))
    monkeypatch.undo()
    assert calls == [dict(device_type='cuda', dtype=torch.bfloat16, enabled=True),
                     dict(device_type='cpu', dtype=torch.bfloat16, enabled=False)]
    # the prompt (and the negative prompt) are encoded inside the same context as the sampling
    inside, seen = [False], []

    @contextlib.contextmanager
    def flag(device):
        inside[0] = True
        yield
        inside[0] = False
    monkeypatch.setattr(run_infinity, '_autocast', flag)
    monkeypatch.setattr(run_infinity, 'encode_prompt', lambda *a, **k: seen.append(('t5', inside[0])))
    model = SimpleNamespace(word_embed=SimpleNamespace(weight=torch.zeros(1)),
                            autoregressive_infer_cfg=lambda **k: seen.append(('sample', inside[0])) or (0, 0, ['img']))
    assert run_infinity.gen_one_img(model, None, None, None, 'a cat', negative_prompt='blurry') == 'img'
    assert seen == [('t5', True), ('t5', True), ('sample', True)]
