"""Text-to-image with Infinity (+ SSG): upstream's `tools/run_infinity.py`, runnable on CPU and GPU.

    python -m Infinity.tools.run_infinity --prompt "a cat" --model_type infinity_2b --beta 0.5
    python -m Infinity.tools.run_infinity --prompt_file prompts.txt --outdir out/ --num_samples 4

The upstream helper names are kept (`load_tokenizer`, `encode_prompt`, `load_visual_tokenizer`,
`load_transformer`, `gen_one_img`) and so are its flags (`--cfg`, `--tau`, `--pn`,
`--h_div_w_template`, `--model_type`, `--vae_type`, `--text_encoder_ckpt`, ...), each also spelled with
hyphens (`--top-k`), as HART's. Missing files are downloaded from Hugging Face on first use (see
`ssg_core.hub.MODELS`, `scripts/download.py`).
Defaults are upstream's published settings: top-k 900, top-p 0.97, CFG on logits
(`cfg_insertion_layer 0`); cfg / tau per model as in upstream's inference scripts (2B:
`scripts/infer.sh`, cfg 4, tau 0.5; 8B: its notebooks, cfg 3, tau 1).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssg_core import SSG
from ssg_core.cli import (ArgumentParser, add_ssg_args, add_trust_pickle_arg, check_sampling, main_guard, make_ssg,
                          ssg_settings)
from ssg_core.errors import SSGError
from ssg_core.evaluation import (_atomic_write, check_output_path, init_distributed, save_png, shard, versions,
                                 write_json)
from ssg_core.hub import MODELS, load_state_dict, load_strict, resolve_file, resolve_snapshot, sha256
from Infinity.infinity.models.bsq_vae.vae import infer_vae_config, upstream_key_names, vae_model
from Infinity.infinity.models.infinity import (DROPPED_KEYS, Infinity, check_cfg_insertion_layer,
                                               fit_cfg_uncond)
from Infinity.infinity.utils.dynamic_resolution import (PN_LENGTHS, get_scale_schedule,
                                                       h_div_w_templates, nearest_h_div_w_template)

TEXT_MAXLEN = 512   # flan-t5-xl tokens; longer prompts are truncated (with a warning)

# tools/run_infinity.py: load_transformer (mlp_ratio 4, drop_path_rate 0.1 for all)
MODEL_ARCHS: dict[str, dict] = {
    'infinity_2b': dict(depth=32, embed_dim=2048, num_heads=16, block_chunks=8),
    'infinity_8b': dict(depth=40, embed_dim=3584, num_heads=28, block_chunks=8),
    'infinity_layer12': dict(depth=12, embed_dim=768, num_heads=8, block_chunks=4),
    'infinity_layer16': dict(depth=16, embed_dim=1152, num_heads=12, block_chunks=4),
    'infinity_layer24': dict(depth=24, embed_dim=1536, num_heads=16, block_chunks=4),
    'infinity_layer32': dict(depth=32, embed_dim=2080, num_heads=20, block_chunks=4),
    'infinity_layer40': dict(depth=40, embed_dim=2688, num_heads=24, block_chunks=4),
    'infinity_layer48': dict(depth=48, embed_dim=3360, num_heads=28, block_chunks=4),
}
CUSTOM = 'infinity_custom'   # architecture read from the checkpoint (own or test models)


@dataclass(frozen=True)
class Preset:
    """Which files go together and the published sampling settings of a released model."""
    hub: str                 # ssg_core.hub.MODELS entry
    model_file: str          # file (or folder for sharded safetensors) in FoundationVision/Infinity
    vae_file: str
    vae_type: int            # bits per VAE code d
    apply_spatial_patchify: int
    pn: str
    checkpoint_type: str
    cfg: str
    tau: float


PRESETS: dict[str, Preset] = {
    'infinity_2b': Preset('infinity-2b', 'infinity_2b_reg.pth', 'infinity_vae_d32reg.pth', 32, 0, '1M', 'torch', '4', 0.5),
    'infinity_8b': Preset('infinity-8b', 'infinity_8b_weights', 'infinity_vae_d56_f8_14_patchify.pth', 14, 1, '1M',
                          'torch_shard', '3', 1.0),
    'infinity_layer12': Preset('infinity-125m', 'infinity_125M_256x256.pth', 'infinity_vae_d16.pth', 16, 0, '0.06M',
                               'torch', '4', 0.5),
}
HF_REPO = 'FoundationVision/Infinity'
T5_REPO = 'google/flan-t5-xl'


# ----------------------------------------------------------------------------- text encoder
def check_text_encoder_ckpt(text: str) -> None:
    """`--text_encoder_ckpt` must be an existing folder or a Hugging Face repo id ("namespace/name").

    Something that looks like a local path (absolute, starting with . or ~, more than one /, or
    the OS separator) and does not exist is reported as such, not as a failed download.
    """
    if Path(text).expanduser().is_dir():
        return
    if Path(text).expanduser().exists():
        raise SSGError(f"--text_encoder_ckpt {text} is a file; give the folder that holds the T5 encoder and tokenizer")
    looks_local = (os.path.isabs(text) or text.startswith(('.', '~')) or text.count('/') > 1
                   or (os.sep != '/' and os.sep in text))
    if looks_local:
        raise SSGError(f"--text_encoder_ckpt {text}: no such folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise SSGError(f"--text_encoder_ckpt {text!r} is neither an existing folder nor a Hugging Face repo id") from None


def load_tokenizer(t5_path: str = T5_REPO, ckpt_dir: str | None = None, device: str | torch.device = 'cpu',
                   hub_model: str | None = None):
    """(tokenizer, T5EncoderModel) from a local folder or the Hugging Face repo `t5_path`.

    The encoder runs in float16 on GPU (as upstream) and float32 on CPU, in eval mode.
    """
    from transformers import AutoTokenizer, T5EncoderModel
    check_text_encoder_ckpt(t5_path)
    if Path(t5_path).expanduser().is_dir():
        t5_path = str(Path(t5_path).expanduser())
    else:
        patterns = None
        for f in MODELS.get(hub_model or '', []):
            if f.repo_id == t5_path and f.kind == 'snapshot':
                patterns = list(f.allow_patterns) or None
        t5_path = str(resolve_snapshot(t5_path, patterns, Path(ckpt_dir) / 'flan-t5-xl' if ckpt_dir else None,
                                       model=hub_model))
    try:
        tokenizer = AutoTokenizer.from_pretrained(t5_path, legacy=True)
        encoder = T5EncoderModel.from_pretrained(t5_path)
    except Exception as e:
        raise SSGError(f"cannot load the T5 text encoder from {t5_path} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    tokenizer.model_max_length = TEXT_MAXLEN
    dtype = torch.float16 if torch.device(device).type == 'cuda' else torch.float32
    encoder = encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return tokenizer, encoder


@torch.no_grad()
def encode_prompt(text_tokenizer, text_encoder, prompt: str | list[str], enable_positive_prompt: int = 0):
    """Prompt(s) -> upstream's packed text (kv_compact (sum len, Ct5) fp32, lens, cu_seqlens_k int32, max len).

    Tokenised to 512 with padding and truncation (</s> appended); a longer prompt is truncated
    with a warning, as the encoder cannot see more.
    """
    captions = [prompt] if isinstance(prompt, str) else list(prompt)
    if enable_positive_prompt:
        captions = [aug_with_positive_prompt(c) for c in captions]
    for c in captions:
        n = len(text_tokenizer(c, truncation=False).input_ids)
        if n > TEXT_MAXLEN:
            warnings.warn(f"prompt has {n} tokens but the text encoder takes {TEXT_MAXLEN}: it is truncated "
                          f"({c[:60]!r}...)", stacklevel=2)
    tokens = text_tokenizer(text=captions, max_length=TEXT_MAXLEN, padding='max_length', truncation=True,
                            return_tensors='pt')
    device = next(text_encoder.parameters()).device
    input_ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    text_features = text_encoder(input_ids=input_ids, attention_mask=mask)['last_hidden_state'].float()
    lens = mask.sum(dim=-1).tolist()
    cu_seqlens_k = torch.nn.functional.pad(mask.sum(dim=-1).to(dtype=torch.int32).cumsum_(0), (1, 0)).cpu()
    kv_compact = torch.cat([feat[:le] for le, feat in zip(lens, text_features.unbind(0))], dim=0)
    return kv_compact, lens, cu_seqlens_k, max(lens)


def aug_with_positive_prompt(prompt: str) -> str:
    """Upstream's optional `enable_positive_prompt`: add a face-quality phrase to prompts about people."""
    for key in ['man', 'woman', 'men', 'women', 'boy', 'girl', 'child', 'person', 'human', 'adult', 'teenager',
                'employee', 'employer', 'worker', 'mother', 'father', 'sister', 'brother', 'grandmother',
                'grandfather', 'son', 'daughter']:
        if key in prompt:
            return prompt + '. very smooth faces, good looking faces, face to the camera, perfect facial features'
    return prompt


# ----------------------------------------------------------------------------- checkpoints
def _preset(args) -> Preset | None:
    return PRESETS.get(args.model_type)


def _file(args, explicit: str | None, name: str | None, what: str) -> Path:
    """An explicit local path, or the preset's file from the hub (downloaded on first use)."""
    if explicit:
        p = Path(explicit)
        if not p.exists():
            raise SSGError(f"{what} {p} does not exist")
        return p
    preset = _preset(args)
    if preset is None or name is None:
        raise SSGError(f"--model_type {args.model_type} has no published {what}: pass its path")
    if preset.checkpoint_type == 'torch_shard' and name == preset.model_file:
        # scripts/download.py puts repository snapshots under <ckpt_dir>/<repo name>/
        root = resolve_snapshot(HF_REPO, [f'{name}/*'], Path(args.ckpt_dir) / 'Infinity' if args.ckpt_dir else None,
                                model=preset.hub)
        return root / name
    return resolve_file(HF_REPO, name, args.ckpt_dir, model=preset.hub)


def load_visual_tokenizer(args, device='cpu'):
    """The BSQ VAE named by `--vae_path` (or the model's published VAE), strictly loaded.

    Its configuration (bits d, width, levels, stride) is read from the file and must agree with
    `--vae_type` when given.
    """
    preset = _preset(args)
    path = _file(args, args.vae_path, preset.vae_file if preset else None, "VAE checkpoint")
    sd = load_state_dict(path, key='vae', trust_pickle=args.trust_pickle)
    sd = upstream_key_names(sd)   # older key names -> ours, before reading shapes
    cfg = infer_vae_config(sd)
    if args.vae_type is not None and args.vae_type != cfg['codebook_dim']:
        raise SSGError(f"VAE {path} has {cfg['codebook_dim']} bits per code but --vae_type is {args.vae_type}")
    vae = vae_model(sd, 'dynamic', cfg['codebook_dim'], 2 ** cfg['codebook_dim'], patch_size=cfg['patch_size'],
                    encoder_ch_mult=cfg['encoder_ch_mult'], decoder_ch_mult=cfg['decoder_ch_mult'],
                    base_ch=cfg['base_ch'])
    vae.ckpt_path = str(path)
    return vae.to(device)


def _checkpoint_parts(path: Path, checkpoint_type: str,
                      trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], list]:
    """(shapes, loaders): every key of the checkpoint (a tensor, or for shards a meta tensor: shape
    only) and one loader per file, so that a sharded checkpoint is read one shard at a time."""
    if checkpoint_type != 'torch_shard' and not path.is_dir():
        # a training checkpoint keeps the weights under trainer.gpt_fsdp (upstream's save_slim_model)
        sd = load_state_dict(path, nested=('trainer.gpt_fsdp',), trust_pickle=trust_pickle)
        return sd, [lambda: sd]
    index = path / 'model.safetensors.index.json'
    if not index.is_file():
        raise SSGError(f"{path} is not a sharded safetensors checkpoint (no model.safetensors.index.json)")
    try:
        weight_map = json.loads(index.read_text())['weight_map']
        files = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SSGError(f"{index} is not a safetensors index (no weight_map)") from None
    shapes: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    for name in files:
        for k, v in load_state_dict(path / name, device='meta').items():
            if k in owner:
                raise SSGError(f"sharded checkpoint {path}: {k} is in two shards ({owner[k]} and {name})")
            shapes[k], owner[k] = v, name
    if set(owner) != set(weight_map):
        odd = sorted(set(owner) ^ set(weight_map))
        raise SSGError(f"sharded checkpoint {path}: the shards and {index.name} disagree on {len(odd)} keys "
                       f"(e.g. {odd[:3]}); the download is incomplete or mixed")
    return shapes, [lambda name=name: load_state_dict(path / name) for name in files]


def _load_weights(model: Infinity, shapes: dict[str, torch.Tensor], loaders: list, what: str) -> None:
    """Fill a model built on the meta device, strictly: every key once with its shape, checked
    before any weight is read; then each file's tensors become the parameters (no second copy)."""
    meta = {k: torch.empty(v.shape, dtype=v.dtype, device='meta') for k, v in shapes.items() if k not in DROPPED_KEYS}
    if 'cfg_uncond' in meta and meta['cfg_uncond'].ndim == 2:
        meta['cfg_uncond'] = fit_cfg_uncond(meta['cfg_uncond'], model.text_maxlen)
    load_strict(model, meta, what)            # the model is still on meta: this checks, it copies nothing
    own = model.state_dict()
    for load in loaders:
        part = {k: v.to(own[k].dtype) for k, v in load().items() if k in own}   # the model's dtypes (float32)
        model.load_state_dict(part, strict=False, assign=True)   # fits cfg_uncond like upstream
    left = [k for k, v in model.state_dict().items() if v.is_meta]
    if left:
        raise SSGError(f"{what}: {len(left)} weights were not loaded (e.g. {left[:3]}); the files changed while loading")


def _arch_from_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict, int]:
    """(constructor widths, bits per token) read from the checkpoint's shapes."""
    try:
        C = sd['pos_start'].shape[-1]
        H = sd['block_chunks.0.module.0.sa.scale_mul_1H11'].shape[1]
        d_tok = int(sd['word_embed.weight'].shape[1])
        chunks = {k.split('.')[1] for k in sd if k.startswith('block_chunks.')}
        blocks = {tuple(k.split('.')[1:4:2]) for k in sd if k.startswith('block_chunks.')}
    except KeyError as e:
        raise SSGError(f"transformer checkpoint has no {e.args[0]!r}: not an Infinity state dict") from None
    return dict(depth=len(blocks), embed_dim=int(C), num_heads=int(H), block_chunks=len(chunks)), d_tok


def load_transformer(vae, args, device='cpu') -> Infinity:
    """Build `Infinity` with upstream's `load_infinity` keywords and load the checkpoint strictly.

    The model is built on the meta device and the checkpoint's tensors become its parameters,
    file by file (shard by shard for the 8B model): host memory holds the model once. bf16 on
    GPU (`--bf16 1`, upstream's default) casts only the transformer blocks, as upstream.
    """
    preset = _preset(args)
    checkpoint_type = args.checkpoint_type or (preset.checkpoint_type if preset else 'torch')
    path = _file(args, args.model_path, preset.model_file if preset else None, "transformer checkpoint")
    shapes, loaders = _checkpoint_parts(path, checkpoint_type, args.trust_pickle)
    arch, d_tok = _arch_from_state_dict(shapes)
    if args.model_type != CUSTOM:
        want = MODEL_ARCHS[args.model_type]
        if arch != want:
            raise SSGError(f"checkpoint {path} is not an {args.model_type} model: it has {arch}, expected {want}")
    check_cfg_insertion_layer([args.cfg_insertion_layer], arch['depth'])
    patchify = args.apply_spatial_patchify if args.apply_spatial_patchify is not None else (
        preset.apply_spatial_patchify if preset else 0)
    d_vae = vae.codebook_dim * (4 if patchify else 1)
    if d_tok != d_vae:
        raise SSGError(f"the VAE ({getattr(vae, 'ckpt_path', 'given')}, {vae.codebook_dim} bits per code"
                       f"{', x4 with spatial patchify' if patchify else ''}) does not fit the transformer {path}, "
                       f"which takes {d_tok} bits per token; use the VAE published with the model")
    text_channels = int(shapes['cfg_uncond'].shape[1]) if 'cfg_uncond' in shapes else args.text_channels
    with torch.device('meta'):   # no random init of billions of weights: they are all overwritten
        model = Infinity(vae_local=vae, text_channels=text_channels, text_maxlen=TEXT_MAXLEN, shared_aln=True,
                         raw_scale_schedule=None, checkpointing='full-block', customized_flash_attn=False,
                         fused_norm=True, pad_to_multiplier=128, use_flex_attn=False,
                         add_lvl_embeding_only_first_block=args.add_lvl_embeding_only_first_block,
                         use_bit_label=args.use_bit_label, rope2d_each_sa_layer=args.rope2d_each_sa_layer,
                         rope2d_normalized_by_hw=args.rope2d_normalized_by_hw, pn=args.pn,
                         apply_spatial_patchify=patchify, inference_mode=True, train_h_div_w_list=[1.0],
                         drop_path_rate=0.1, mlp_ratio=4, **arch)
    _load_weights(model, shapes, loaders, f"transformer checkpoint {path}")
    del shapes, loaders
    model.ckpt_path = str(path)
    model = model.eval().requires_grad_(False).to(device)
    if args.bf16 and torch.device(device).type == 'cuda':
        for block in model.unregistered_blocks:
            block.bfloat16()
    return model


# ----------------------------------------------------------------------------- sampling
def _parse_cfg(text: str, num_scales: int) -> list[float]:
    """`--cfg`: one number for every scale, or a comma-separated list with a value per scale."""
    try:
        vals = [float(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        vals = []
    if not vals:
        raise SSGError(f"--cfg: expected a number or a comma-separated per-scale list, got {text!r}")
    for v in vals:
        check_sampling(cfg=v)
    if len(vals) == 1:
        return vals * num_scales
    if len(vals) < num_scales:
        raise SSGError(f"--cfg list has {len(vals)} values but the schedule has {num_scales} scales")
    return vals


def _autocast(device: torch.device):
    """Upstream's CLI runs all of gen_one_img, T5 included, under CUDA bf16 autocast, whatever
    `--bf16` says (that flag only decides whether the block weights are bf16). CPU: no autocast,
    everything float32, as upstream's code behaves on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda')


def gen_one_img(infinity_test: Infinity, vae, text_tokenizer, text_encoder, prompt: str, cfg_list=(), tau_list=(),
                negative_prompt: str = '', scale_schedule=None, top_k: int = 900, top_p: float = 0.97, cfg_sc=3,
                cfg_exp_k=0.0, cfg_insertion_layer=-5, vae_type: int = 0, gumbel=0, softmax_merge_topk=-1,
                gt_leak=-1, gt_ls_Bl=None, g_seed: int | None = None, sampling_per_bits: int = 1,
                enable_positive_prompt: int = 0, ssg: SSG | None = None, capture: dict | None = None) -> torch.Tensor:
    """One image (H, W, 3) uint8 in BGR order, as upstream's `gen_one_img` (plus `ssg`, `capture`)."""
    device = infinity_test.word_embed.weight.device
    if not isinstance(cfg_insertion_layer, (list, tuple)):
        cfg_insertion_layer = [cfg_insertion_layer]
    with _autocast(device):
        text_cond_tuple = encode_prompt(text_tokenizer, text_encoder, prompt, enable_positive_prompt)
        negative_label = encode_prompt(text_tokenizer, text_encoder, negative_prompt) if negative_prompt else None
        _, _, img_list = infinity_test.autoregressive_infer_cfg(
            vae=vae, scale_schedule=scale_schedule, label_B_or_BLT=text_cond_tuple, g_seed=g_seed, B=1,
            negative_label_B_or_BLT=negative_label, force_gt_Bhw=None, cfg_sc=cfg_sc, cfg_list=cfg_list,
            tau_list=tau_list, top_k=top_k, top_p=top_p, returns_vemb=1, ratio_Bl1=None, gumbel=gumbel,
            norm_cfg=False, cfg_exp_k=cfg_exp_k, cfg_insertion_layer=cfg_insertion_layer, vae_type=vae_type,
            softmax_merge_topk=softmax_merge_topk, ret_img=True, trunk_scale=1000, gt_leak=gt_leak, gt_ls_Bl=gt_ls_Bl,
            inference_mode=True, sampling_per_bits=sampling_per_bits, ssg=ssg, capture=capture)
    return img_list[0]


def bgr_to_rgb(img: torch.Tensor) -> np.ndarray:
    return img.flip(-1).cpu().numpy()


# ----------------------------------------------------------------------------- CLI
class HyphenAliases:
    """An argument group whose `add_argument` also accepts every `--snake_case` flag as `--snake-case`, as HART's
    flags do. Upstream's underscore spelling comes first: it names the value and leads in --help."""

    def __init__(self, group):
        self.group = group

    def add_argument(self, *flags: str, **kwargs):
        hyphens = [f.replace('_', '-') for f in flags if f.startswith('--') and '_' in f]
        return self.group.add_argument(*flags, *(h for h in hyphens if h not in flags), **kwargs)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Upstream's flags (same names and meaning); `None` defaults come from the model's preset."""
    g = HyphenAliases(parser.add_argument_group("model (upstream flags)"))
    g.add_argument('--model_type', default='infinity_2b', choices=[*MODEL_ARCHS, CUSTOM],
                   help="architecture: infinity_2b (1024 px), infinity_8b (1024 px, patchify VAE), infinity_layer12 "
                        "(the 125M model, 256 px), ...; infinity_custom reads it from --model_path")
    g.add_argument('--model_path', default=None,
                   help="transformer checkpoint (.pth state dict, or the folder of sharded safetensors for 8B); "
                        "default: the published file, downloaded on first use")
    g.add_argument('--checkpoint_type', default=None, choices=['torch', 'torch_shard'],
                   help="torch: one .pth state dict; torch_shard: safetensors shards + index (default: by model)")
    g.add_argument('--vae_path', default=None, help="BSQ VAE file (a dict with entry 'vae'); default: the published one")
    g.add_argument('--vae_type', type=int, default=None,
                   help="bits per VAE code (32 for 2B, 14 for 8B, 16 for 125M); checked against the file")
    g.add_argument('--apply_spatial_patchify', type=int, default=None, choices=[0, 1],
                   help="1 for the 8B model: every token carries 2x2 VAE positions (default: by model)")
    g.add_argument('--text_encoder_ckpt', default=T5_REPO,
                   help="T5 encoder + tokenizer: a local folder or a Hugging Face repo id (default google/flan-t5-xl)")
    g.add_argument('--text_channels', type=int, default=2048, help="T5 width (read from the checkpoint when possible)")
    g.add_argument('--ckpt_dir', default=None,
                   help="folder for checkpoint files: looked up there first, downloads go there (default: HF cache)")
    add_trust_pickle_arg(g, sep='_')
    g.add_argument('--add_lvl_embeding_only_first_block', type=int, default=1, choices=[0, 1],
                   help="1: level embedding added before the first block only (every released model); "
                        "0: before every block chunk")
    g.add_argument('--use_bit_label', type=int, default=1, choices=[0, 1],
                   help="1: bitwise labels (every released model); 0 is not implemented")
    g.add_argument('--rope2d_each_sa_layer', type=int, default=1, choices=[0, 1],
                   help="1: 2-D RoPE in every self-attention (every released model); 0 is not implemented")
    g.add_argument('--rope2d_normalized_by_hw', type=int, default=2, choices=[0, 1, 2],
                   help="2: RoPE positions on the template's 1M grid (every released model); 0 and 1 are not implemented")
    g.add_argument('--use_scale_schedule_embedding', type=int, default=0, choices=[0, 1],
                   help="accepted for compatibility: upstream's loader takes it and never uses it (no effect)")
    g.add_argument('--use_flex_attn', type=int, default=0, choices=[0, 1],
                   help="0: plain attention over the KV cache, upstream's default; 1 (flex attention) is not implemented")
    g.add_argument('--cache_dir', default='/dev/shm',
                   help="accepted for compatibility, no effect: upstream copies the checkpoint there with "
                        "--enable_model_cache 1; here files are read in place (see --ckpt_dir for downloads)")
    g.add_argument('--enable_model_cache', type=int, default=0, choices=[0, 1],
                   help="accepted for compatibility, no effect on outputs: upstream caches a slim copy of a training "
                        "checkpoint; here the weights of a training checkpoint (trainer.gpt_fsdp) are read directly")
    g.add_argument('--bf16', type=int, default=1, choices=[0, 1],
                   help="1: transformer blocks in bfloat16 on GPU (upstream default); either way GPU runs under bf16 "
                        "autocast, as upstream; CPU runs float32")
    g.add_argument('--device', default=None, help="cuda or cpu (default: cuda if available)")

    g = HyphenAliases(parser.add_argument_group("sampling (upstream flags; defaults = published settings)"))
    g.add_argument('--cfg', default=None,
                   help="classifier-free guidance on logits: a number or a comma-separated per-scale list "
                        "(default: 4 for infinity_2b as scripts/infer.sh, 3 for infinity_8b)")
    g.add_argument('--tau', type=float, default=None,
                   help="temperature, logits are divided by it before CFG (default: 0.5 for 2B, 1.0 for 8B)")
    g.add_argument('--top_k', type=int, default=900, help="top-k per bit (900 >= 2 keeps both classes)")
    g.add_argument('--top_p', type=float, default=0.97, help="top-p per bit: a class with p <= 1 - top_p is dropped")
    g.add_argument('--cfg_insertion_layer', type=int, default=0,
                   help="0: CFG on logits (upstream default); -depth < n < 0: mix hidden states after block depth+n; "
                        "1: 'on probabilities', which upstream never implemented (no guidance)")
    g.add_argument('--pn', default=None, choices=list(PN_LENGTHS),
                   help="resolution key: 0.06M (256 px), 0.25M (512), 0.60M (768), 1M (1024) (default: by model)")
    g.add_argument('--h_div_w_template', '--h_div_w', dest='h_div_w_template', type=float, default=1.0,
                   help=f"aspect ratio height/width; the nearest of {sorted(float(t) for t in h_div_w_templates)} is used")
    g.add_argument('--seed', type=int, default=0, help="random seed (the model's generator is seeded with it)")
    g.add_argument('--negative_prompt', default='', help="text used instead of the learned null text for CFG")
    g.add_argument('--enable_positive_prompt', type=int, default=0, choices=[0, 1],
                   help="1: append upstream's face-quality phrase to prompts about people")
    g.add_argument('--sampling_per_bits', type=int, default=1, choices=[1, 2, 4, 8, 16],
                   help="accepted for compatibility (upstream ignores it)")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Infinity text-to-image with Scaled Spatial Guidance (SSG). One prompt -> --save_file; "
                    "a prompt file -> one PNG per prompt and seed in --outdir (resumable, with a manifest).")
    src = HyphenAliases(p.add_argument_group("prompts and outputs"))
    src.add_argument('--prompt', default=None, help="one prompt")
    src.add_argument('--prompt_file', default=None,
                     help="batch mode: .txt (one prompt per line), .jsonl (objects with 'prompt', as GenEval's "
                          "metadata) or .json (MJHQ-30K meta_data.json: id -> {'prompt', 'category'})")
    src.add_argument('--save_file', default='tmp.png',
                     help=f"output image for --prompt; the extension picks the format ({', '.join(IMAGE_FORMATS)})")
    src.add_argument('--outdir', default='outputs/infinity', help="batch mode output folder")
    src.add_argument('--num_samples', type=int, default=1,
                     help="batch mode: images per prompt, with seeds --seed, --seed+1, ...")
    src.add_argument('--limit', type=int, default=None, help="batch mode: only the first N prompts")
    add_common_arguments(p)
    add_ssg_args(p)
    return p


@dataclass
class Setup:
    model: Infinity
    vae: object
    tokenizer: object
    encoder: object
    scale_schedule: list
    cfg_list: list
    tau_list: list
    h_div_w_template: float
    pn: str
    files: dict


def resolve_settings(args) -> None:
    """Fill preset-dependent defaults and check what can be checked before loading anything."""
    preset = _preset(args)
    if args.model_type == CUSTOM and not args.model_path:
        raise SSGError("--model_type infinity_custom needs --model_path (and --vae_path)")
    args.pn = args.pn or (preset.pn if preset else '1M')
    args.cfg = args.cfg if args.cfg is not None else (preset.cfg if preset else '3')
    args.tau = args.tau if args.tau is not None else (preset.tau if preset else 1.0)
    if not (math.isfinite(args.tau) and args.tau > 0):
        raise SSGError(f"--tau must be a positive number, got {args.tau}")
    check_sampling(top_k=args.top_k, top_p=args.top_p, sep="_")
    _check_model_flags(args)
    if args.vae_type is None and preset and not args.vae_path:
        args.vae_type = preset.vae_type
    h = args.h_div_w_template
    if not np.isfinite(h) or h <= 0:
        raise SSGError(f"--h_div_w_template must be a positive number, got {h}")
    nearest = nearest_h_div_w_template(h)
    if abs(nearest - h) / h > 0.05:
        raise SSGError(f"unsupported aspect ratio h/w = {h:g}: Infinity has templates for "
                       f"{', '.join(f'{t:g}' for t in sorted(h_div_w_templates))} (nearest {nearest:g})")
    args.h_div_w_template = nearest
    _parse_cfg(args.cfg, len(get_scale_schedule(args.h_div_w_template, args.pn)))   # list length and numbers, now
    if (args.prompt is None) == (args.prompt_file is None):
        raise SSGError("give either --prompt or --prompt_file")
    if args.num_samples < 1:
        raise SSGError(f"--num_samples must be >= 1, got {args.num_samples}")
    check_text_encoder_ckpt(args.text_encoder_ckpt)
    if args.prompt_file is None:
        image_format(args.save_file)
        check_output_path(args.save_file, "--save_file")
    else:
        read_prompts(args.prompt_file)
        check_output_path(args.outdir, "--outdir", folder=True)


def _check_model_flags(args) -> None:
    """Upstream flags whose other values no released model uses and this implementation does not have."""
    unsupported = {'use_bit_label': (args.use_bit_label, 1), 'rope2d_each_sa_layer': (args.rope2d_each_sa_layer, 1),
                   'rope2d_normalized_by_hw': (args.rope2d_normalized_by_hw, 2), 'use_flex_attn': (args.use_flex_attn, 0)}
    for flag, (value, only) in unsupported.items():
        if value != only:
            raise SSGError(f"--{flag} {value} is not implemented: every released Infinity model uses {only}")
    # 0 (logits) is the default; a negative offset is checked against the depth (the checkpoint's, for custom models)
    depth = MODEL_ARCHS[args.model_type]['depth'] if args.model_type in MODEL_ARCHS else None
    check_cfg_insertion_layer([args.cfg_insertion_layer], depth)


def load_all(args, device) -> Setup:
    vae = load_visual_tokenizer(args, device)
    model = load_transformer(vae, args, device)
    preset = _preset(args)
    tokenizer, encoder = load_tokenizer(args.text_encoder_ckpt, args.ckpt_dir, device, preset.hub if preset else None)
    if encoder.config.d_model != model.Ct5:
        raise SSGError(f"text encoder {args.text_encoder_ckpt} has width {encoder.config.d_model} but the transformer "
                       f"expects {model.Ct5} (google/flan-t5-xl)")
    sched = get_scale_schedule(args.h_div_w_template, args.pn)
    files = {'transformer': model.ckpt_path, 'vae': vae.ckpt_path, 'text_encoder': str(args.text_encoder_ckpt)}
    return Setup(model, vae, tokenizer, encoder, sched, _parse_cfg(args.cfg, len(sched)), [args.tau] * len(sched),
                 args.h_div_w_template, args.pn, files)


def sample(setup: Setup, args, prompt: str, seed: int, ssg: SSG | None, capture: dict | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB. `capture` receives per-scale tensors (see `Infinity.autoregressive_infer_cfg`)."""
    img = gen_one_img(setup.model, setup.vae, setup.tokenizer, setup.encoder, prompt, cfg_list=setup.cfg_list,
                      tau_list=setup.tau_list, negative_prompt=args.negative_prompt,
                      scale_schedule=setup.scale_schedule, top_k=args.top_k, top_p=args.top_p,
                      cfg_insertion_layer=args.cfg_insertion_layer, vae_type=setup.vae.codebook_dim, g_seed=seed,
                      sampling_per_bits=args.sampling_per_bits, enable_positive_prompt=args.enable_positive_prompt,
                      ssg=ssg, capture=capture)
    return bgr_to_rgb(img)


def read_prompts(path: str) -> list[dict]:
    """[{'prompt': ..., 'id': ..., (other fields)}] from .txt / .jsonl / .json (MJHQ meta_data)."""
    p = Path(path)
    if not p.is_file():
        raise SSGError(f"prompt file {p} does not exist")
    text = p.read_text(encoding='utf-8')
    try:
        if p.suffix == '.jsonl':
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif p.suffix == '.json':
            data = json.loads(text)
            items = ([{'id': k, **v} if isinstance(v, dict) else v for k, v in data.items()]
                     if isinstance(data, dict) else list(data) if isinstance(data, list) else [data])
        else:
            items = [{'prompt': line.strip()} for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise SSGError(f"prompt file {p}: invalid JSON ({e.msg} at line {e.lineno})") from None
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get('prompt'), str):
            raise SSGError(f"prompt file {p}: entry {i} has no 'prompt' string")
    if not items:
        raise SSGError(f"prompt file {p} has no prompts")
    return items


# What upstream's cv2.imwrite does by default: JPEG quality 95, WebP lossless.
IMAGE_FORMATS: dict[str, tuple[str, dict]] = {'.png': ('PNG', {}), '.jpg': ('JPEG', {'quality': 95}),
                                              '.jpeg': ('JPEG', {'quality': 95}), '.webp': ('WEBP', {'lossless': True})}


def image_format(path: str | Path) -> tuple[str, dict]:
    """(PIL format, save options) for an output file name; an unknown extension is a one-line error."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise SSGError(f"--save_file {path}: unknown image type {suffix or '(no extension)'}; "
                       f"use {', '.join(IMAGE_FORMATS)}")
    fmt, options = IMAGE_FORMATS[suffix]
    from PIL import features
    if fmt == 'WEBP' and not features.check('webp'):
        raise SSGError(f"--save_file {path}: this Pillow has no WebP support; use .png or .jpg")
    return fmt, options


def save_image(path: str | Path, image_hwc_uint8: np.ndarray) -> None:
    """Write (H, W, 3) uint8 RGB in the format the extension names; the file appears whole or not at all."""
    from PIL import Image
    fmt, options = image_format(path)
    img = Image.fromarray(np.ascontiguousarray(image_hwc_uint8))
    _atomic_write(Path(path), lambda f: img.save(f, format=fmt, **options))


def _side_by_side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    gap = np.full((a.shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([a, gap, b], axis=1)


def run_single(setup: Setup, args, ssg: SSG | None, dist) -> None:
    if not dist.is_main:          # one prompt, one file: extra ranks have nothing to do
        return
    out = Path(args.save_file)
    t0 = time.time()
    img = sample(setup, args, args.prompt, args.seed, ssg)
    save_image(out, img)
    print(f"saved {out} ({img.shape[1]}x{img.shape[0]}, {time.time() - t0:.1f} s, ssg={ssg})")
    if args.compare:
        base = sample(setup, args, args.prompt, args.seed, None)
        base_file, both_file = (out.with_name(f"{out.stem}_{tag}{out.suffix}") for tag in ('baseline', 'compare'))
        save_image(base_file, base)
        save_image(both_file, _side_by_side(base, img))
        print(f"saved {base_file} and {both_file} (left: baseline, right: SSG)")


def run_batch(setup: Setup, args, ssg: SSG | None, dist) -> None:
    """One PNG per (prompt, seed): `{outdir}/{prompt_index:06d}_{seed}.png`; existing files are skipped."""
    from tqdm import tqdm
    items = read_prompts(args.prompt_file)[:args.limit]
    outdir = Path(args.outdir)
    seeds = [args.seed + j for j in range(args.num_samples)]
    variants = [('', ssg)] + ([('baseline', None)] if args.compare else [])
    jobs = [(i, s) for i in range(len(items)) for s in seeds]
    K = len(setup.scale_schedule)
    betas = ssg.betas(K) if ssg is not None else [0.0] * K  # for the manifest: the per-scale values sampled
    # what decides the pixels (besides prompt and seed): a resumed run must not mix other settings in
    fingerprint = {'model_type': args.model_type, 'files': setup.files, 'scale_schedule': setup.scale_schedule,
                   'cfg_list': setup.cfg_list, 'tau_list': setup.tau_list, 'top_k': args.top_k, 'top_p': args.top_p,
                   'cfg_insertion_layer': args.cfg_insertion_layer, 'negative_prompt': args.negative_prompt,
                   'enable_positive_prompt': args.enable_positive_prompt, 'ssg': repr(ssg), 'bf16': args.bf16}
    old = outdir / 'manifest.json'
    if old.is_file():
        try:
            previous = json.loads(old.read_text()).get('fingerprint')
        except json.JSONDecodeError:
            previous = None
        if previous is not None and previous != json.loads(json.dumps(fingerprint, default=str)):
            changed = sorted(k for k in fingerprint if previous.get(k) != json.loads(json.dumps(fingerprint[k], default=str)))
            raise SSGError(f"{outdir} holds images made with other settings ({', '.join(changed)} differ); "
                           f"use another --outdir or delete it")
    if dist.is_main:
        manifest = {
            'fingerprint': fingerprint,
            'model_type': args.model_type, 'settings': {k: v for k, v in vars(args).items()},
            'scale_schedule': setup.scale_schedule, 'cfg_list': setup.cfg_list, 'tau_list': setup.tau_list,
            'ssg': repr(ssg), 'ssg_settings': ssg_settings(args, betas), 'files': {k: {'path': v, 'sha256': sha256(v) if Path(v).is_file() else None}
                                        for k, v in setup.files.items()},
            'versions': versions(), 'layout': '{prompt_index:06d}_{seed}.png' + (', baseline/ without SSG' if args.compare else ''),
            'images': [{'file': f'{i:06d}_{s}.png', 'index': i, 'seed': s, **items[i]} for i, s in jobs],
        }
        write_json(outdir / 'manifest.json', manifest)
    todo = [jobs[j] for j in shard(range(len(jobs)), dist)
            if any(not (outdir / sub / f'{jobs[j][0]:06d}_{jobs[j][1]}.png').is_file() for sub, _ in variants)]
    with tqdm(todo, desc='infinity', disable=not dist.is_main) as bar:   # closed before an error is printed
        for i, s in bar:
            for sub, variant_ssg in variants:
                path = outdir / sub / f'{i:06d}_{s}.png'
                if not path.is_file():
                    save_png(path, sample(setup, args, items[i]['prompt'], s, variant_ssg))
    dist.barrier()
    if dist.is_main:
        print(f"{len(jobs)} images in {outdir} (manifest.json lists prompts, seeds and settings)")


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_settings(args)
    # a wrong per-scale beta list fails now, not after minutes of loading
    ssg, _ = make_ssg(args, len(get_scale_schedule(args.h_div_w_template, args.pn)), announce=True)
    dist = init_distributed(args.device)
    device = dist.device
    setup = load_all(args, device)
    if args.prompt_file:
        run_batch(setup, args, ssg, dist)
    else:
        run_single(setup, args, ssg, dist)
    return 0


if __name__ == '__main__':
    sys.exit(main())
