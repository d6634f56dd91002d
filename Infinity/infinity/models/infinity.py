"""Infinity: bitwise next-scale text-to-image transformer (inference), with the SSG hook.

Mirrors upstream `infinity/models/infinity.py` (FoundationVision/Infinity @ 4c27bbb): class
`Infinity`, its constructor keywords, its state-dict keys, and `autoregressive_infer_cfg`
with upstream's operation order and random-number consumption. The only addition to the
sampling loop is `ssg=` (one call between CFG and the top-k/top-p sampler) and `capture=`
(copies of per-scale logits and bits for tests and analysis).

Runs on CPU and GPU without flash-attn: the variable-length cross-attention is an exact
segment-wise SDPA (`basic.flash_attn_varlen_kvpacked_func`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssg_core.errors import SSGError
from ssg_core.sampling import sample_with_top_k_top_p_
from .basic import (AdaLNBeforeHead, CaKV, CrossAttnBlock, FastRMSNorm, Rope2DTable, SharedAdaLin,
                    TextAttentivePool)

# Upstream's name for the per-bit sampler. Its rule (in-place top-k, top-p on ascending sorted
# pairs, one multinomial over the (B*L*d, 2) matrix) is exactly ssg_core's shared sampler.
sample_with_top_k_top_p_also_inplace_modifying_logits_ = sample_with_top_k_top_p_

# Keys upstream's `Infinity.load_state_dict` pops before loading: buffers of its training code
# (level indices, attention masks, flash-attn lengths) that it rebuilds at run time. Checkpoints
# may hold them; they carry no weights.
DROPPED_KEYS = ('lvl_1L', 'attn_bias_for_masking', 'Infinity_visible_kvlen', 'Infinity_invisible_qlen')


def default_cfg_uncond(text_maxlen: int, Ct5: int) -> torch.Tensor:
    """Upstream's initial "null text" (text_maxlen, Ct5) float32 on CPU, the same on every run.

    Truncated normal (std 1.2, cut at +-2) from its own CPU generator seeded with 0, divided by
    sqrt(Ct5). Deterministic, so the rows that pad a checkpoint's shorter `cfg_uncond` are
    upstream's rows, and building a model does not touch the global RNG.
    """
    rng = torch.Generator(device='cpu')
    rng.manual_seed(0)
    cfg_uncond = torch.empty(text_maxlen, Ct5, device='cpu')
    torch.nn.init.trunc_normal_(cfg_uncond, std=1.2, generator=rng)
    return cfg_uncond / Ct5 ** 0.5


def fit_cfg_uncond(cfg_uncond: torch.Tensor, text_maxlen: int) -> torch.Tensor:
    """A checkpoint's `cfg_uncond` (n, Ct5) trimmed, or padded with `default_cfg_uncond` rows, to text_maxlen.

    Upstream pads with the model's current rows, which for a freshly built model are exactly
    these; using the formula keeps this right for models built on the meta device. Works on
    meta tensors too (shapes only).
    """
    n, Ct5 = cfg_uncond.shape
    if n >= text_maxlen:
        return cfg_uncond[:text_maxlen]
    pad = default_cfg_uncond(text_maxlen, Ct5)[n:]
    return torch.cat((cfg_uncond, pad.to(device=cfg_uncond.device, dtype=cfg_uncond.dtype)))


def check_cfg_insertion_layer(cfg_insertion_layer: Sequence[int], depth: int | None) -> None:
    """Upstream's rule: 0 = CFG on logits, 1 = "on probs" (never implemented: no guidance),
    -depth < n < 0 = mix hidden states after block depth+n; anything else is refused.
    depth None (not known yet) checks only what does not depend on it."""
    for n in cfg_insertion_layer:
        if n > 1:
            raise SSGError(f"cfg_insertion_layer {n} is not valid: use 0 (CFG on logits), 1 (on probabilities, "
                           f"which upstream never implemented) or a negative block offset")
        if n < 0 and depth is not None and depth + n <= 0:
            raise SSGError(f"cfg_insertion_layer {n} is not valid: the model has {depth} blocks, so a negative "
                           f"value must be > -{depth}")


class MultipleLayers(nn.Module):
    """A chunk of consecutive blocks (`block_chunks.{i}.module.{j}` in the state dict)."""

    def __init__(self, ls: Sequence[nn.Module], num_blocks_in_a_chunk: int, index: int):
        super().__init__()
        self.module = nn.ModuleList(ls[index:index + num_blocks_in_a_chunk])

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        for m in self.module:
            x = m(x, **kw)
        return x


class Infinity(nn.Module):
    """The Infinity transformer. Constructor keywords as upstream (`load_infinity` passes the ones that matter).

    Only the configuration of the released models is implemented: shared AdaLN, LayerNorm
    blocks, cosine attention, 2-D RoPE in every self-attention normalised to the template's
    1M grid, bit labels (head width 2 * d_vae), `block_chunks >= 2`. Anything else raises.
    """

    def __init__(self, vae_local, text_channels: int = 0, text_maxlen: int = 0, selecting_idx=None,
                 embed_dim: int = 1024, depth: int = 16, num_heads: int = 16, mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6, rms_norm: bool = False,
                 shared_aln: bool = False, head_aln: bool = True, cond_drop_rate: float = 0.1, rand_uncond: bool = False,
                 cross_attn_layer_scale: float = -1.0, nm0: bool = False, tau: float = 1, cos_attn: bool = True,
                 swiglu: bool = False, raw_scale_schedule=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), head_depth: int = 1,
                 top_p: float = 0.0, top_k: float = 0.0, customized_flash_attn: bool = False, fused_mlp: bool = False,
                 fused_norm: bool = False, block_chunks: int = 1, checkpointing=None, pad_to_multiplier: int = 0,
                 use_flex_attn: bool = False, batch_size: int = 2, add_lvl_embeding_only_first_block: int = 1,
                 use_bit_label: int = 1, rope2d_each_sa_layer: int = 0, rope2d_normalized_by_hw: int = 0, pn=None,
                 train_h_div_w_list=None, video_frames: int = 1, always_training_scales: int = 20,
                 apply_spatial_patchify: int = 0, inference_mode: bool = False,
                 upstream_bf16_roundtrip: bool = True):
        super().__init__()
        unsupported = {
            'shared_aln=False': not shared_aln, 'rms_norm=True': rms_norm, 'swiglu=True': swiglu,
            'head_aln=False': not head_aln, 'head_depth!=1': head_depth != 1, 'rand_uncond=True': rand_uncond,
            'nm0=True': nm0, 'use_bit_label=0': not use_bit_label, 'rope2d_each_sa_layer=0': not rope2d_each_sa_layer,
            'rope2d_normalized_by_hw!=2': rope2d_normalized_by_hw != 2, 'block_chunks<2': block_chunks < 2,
            'use_flex_attn=True': use_flex_attn,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise NotImplementedError(f"Infinity options not implemented (no released model uses them): {bad}")
        if depth % block_chunks:
            raise ValueError(f"depth {depth} is not a multiple of block_chunks {block_chunks}")
        self.C = self.D = embed_dim
        self.depth, self.num_heads = depth, num_heads
        self.Ct5, self.text_maxlen = text_channels, text_maxlen
        self.norm_eps = norm_eps
        self.tau, self.top_k, self.top_p = tau, top_k, top_p
        self.fused_norm = fused_norm
        self.add_lvl_embeding_only_first_block = add_lvl_embeding_only_first_block
        self.use_bit_label = use_bit_label
        self.apply_spatial_patchify = apply_spatial_patchify
        self.codebook_dim = vae_local.codebook_dim                      # d: bits per VAE code
        self.d_vae = self.codebook_dim * (4 if apply_spatial_patchify else 1)   # bits per transformer token
        self.V = 2 * self.d_vae                                          # head width: a logit pair per bit
        self.num_block_chunks = block_chunks
        self.rng: torch.Generator | None = None

        # text conditioning
        self.text_norm = FastRMSNorm(text_channels, eps=norm_eps, elementwise_affine=True)
        self.text_proj_for_sos = TextAttentivePool(text_channels, self.D, upstream_bf16_roundtrip)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(text_channels, self.D), nn.GELU(approximate='tanh'),
                                              nn.Linear(self.D, self.D))
        # learned "null text"; built on CPU (explicit generator) and moved to the device being built on
        self.cfg_uncond = nn.Parameter(default_cfg_uncond(text_maxlen, text_channels).to(torch.empty(0).device))
        self.pos_start = nn.Parameter(torch.randn(1, 1, self.C) * 0.02)
        self.lvl_embed = nn.Embedding(15, self.C)
        self.word_embed = nn.Linear(self.d_vae, self.C)
        self.norm0_ve = nn.Identity()
        self.shared_ada_lin = nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(self.D, 6 * self.C))
        self.head_nm = AdaLNBeforeHead(self.C, self.D, norm_eps=norm_eps)
        self.head = nn.Linear(self.C, self.V)

        blocks = [CrossAttnBlock(embed_dim=self.C, kv_dim=self.D, cross_attn_layer_scale=cross_attn_layer_scale,
                                 cond_dim=self.D, num_heads=num_heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps,
                                 drop=drop_rate, tau=tau, cos_attn=cos_attn, fused_norm=fused_norm,
                                 pad_to_multiplier=pad_to_multiplier, rope2d_normalized_by_hw=rope2d_normalized_by_hw,
                                 upstream_bf16_roundtrip=upstream_bf16_roundtrip)
                  for _ in range(depth)]
        self.unregistered_blocks = blocks
        per_chunk = depth // block_chunks
        self.block_chunks = nn.ModuleList(MultipleLayers(blocks, per_chunk, i) for i in range(0, depth, per_chunk))
        self.rope2d_freqs_grid = Rope2DTable(self.C // num_heads)

    # ------------------------------------------------------------------ loading
    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Upstream's override: fit `cfg_uncond` to `text_maxlen` (trim, or pad with upstream's initial
        rows) and drop the training buffers in `DROPPED_KEYS`.

        Upstream defaults to strict=False and silently ignores mismatches; here the default is
        strict=True so that a wrong file cannot half-load.
        """
        state_dict = {k: v for k, v in state_dict.items() if k not in DROPPED_KEYS}
        cu = state_dict.get('cfg_uncond')
        if cu is not None and cu.ndim == 2 and cu.shape[1] == self.cfg_uncond.shape[1]:
            state_dict['cfg_uncond'] = fit_cfg_uncond(cu, self.text_maxlen)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ pieces of the forward pass
    def get_logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Head: (bs, L, C) conditioned on the pooled text `sos` (bs, D) -> (bs, L, V), in float32."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.head(self.head_nm(h.float(), cond_BD.float()))

    def add_lvl_embeding(self, feature: torch.Tensor, scale_ind: int, scale_schedule) -> torch.Tensor:
        """Add `lvl_embed[scale_ind]` to every token of scale `scale_ind` (in place, as upstream)."""
        bs, seq_len, _ = feature.shape
        idx = torch.full((bs, seq_len), scale_ind, dtype=torch.int, device=feature.device)
        feature[:, :seq_len] += self.lvl_embed(idx)
        return feature

    def _generator(self, device: torch.device, g_seed: int | None) -> torch.Generator | None:
        if g_seed is None:
            return None
        if self.rng is None or self.rng.device != device:
            self.rng = torch.Generator(device)
        self.rng.manual_seed(g_seed)
        return self.rng

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def autoregressive_infer_cfg(self, vae=None, scale_schedule=None, label_B_or_BLT=None, B: int = 1,
                                 negative_label_B_or_BLT=None, force_gt_Bhw=None, g_seed: int | None = None,
                                 cfg_list=(), tau_list=(), cfg_sc=3, top_k=0, top_p=0.0, returns_vemb=0,
                                 ratio_Bl1=None, gumbel=0, norm_cfg=False, cfg_exp_k: float = 0.0,
                                 cfg_insertion_layer=(-5,), vae_type=0, softmax_merge_topk=-1, ret_img=False,
                                 trunk_scale=1000, gt_leak=0, gt_ls_Bl=None, inference_mode=False,
                                 save_img_path=None, sampling_per_bits=1,
                                 ssg=None, capture: dict[str, Any] | None = None):
        """Sample bit labels scale by scale and decode them with `vae`.

        label_B_or_BLT: packed text (kv_compact (sum len, Ct5), lens list, cu_seqlens_k int32 (B+1,),
        max_seqlen_k). scale_schedule: [(1, h_k, w_k), ...] Python ints. cfg_list / tau_list: one value
        per scale. Accepted and ignored as upstream: force_gt_Bhw, cfg_sc, ratio_Bl1, gumbel, norm_cfg,
        cfg_exp_k, softmax_merge_topk, save_img_path, sampling_per_bits.

        ssg: an `ssg_core.SSG` (or None). It is called once per scale on the combined logits
        (B, h_k*w_k, 2*d_vae) after temperature and CFG and before top-k/top-p. The channels are
        the flat (bit, class) pairs, channel 2j+c = "bit j is c"; DSE treats every channel
        independently, so no layout transform is needed. With patchify (8B) the grid is the
        transformer grid (h_k, w_k) with 4*d bits per token. Guidance draws no random numbers.
        capture: a dict that receives per-scale copies: 'logits' (unguided, B x L x V), 'guided_logits',
        'bits' (B, h', w', d int64 on the VAE grid), and 'summed_codes', 'image_float' at the end.

        Returns (ret, idx_Bl_list, img): per-scale codes (returns_vemb) or bits, per-scale bit labels
        (B, 1, h', w', d), and the uint8 image (B, H, W, 3) in BGR order as upstream (or [] if not ret_img).
        """
        if not vae_type:
            raise NotImplementedError("only vae_type != 0 (bitwise BSQ VAE) is implemented, as released")
        scale_schedule = [tuple(int(v) for v in s) for s in scale_schedule]
        num_scales = len(scale_schedule)
        if isinstance(cfg_list, (int, float)):
            cfg_list = [cfg_list] * num_scales
        if isinstance(tau_list, (int, float)):
            tau_list = [tau_list] * num_scales
        if len(cfg_list) < num_scales or len(tau_list) < num_scales:
            raise ValueError(f"cfg_list / tau_list need {num_scales} values, got {len(cfg_list)} / {len(tau_list)}")
        if self.apply_spatial_patchify:
            vae_scale_schedule = [(t, 2 * h, 2 * w) for t, h, w in scale_schedule]
        else:
            vae_scale_schedule = scale_schedule
        device = self.word_embed.weight.device
        rng = self._generator(device, g_seed)

        # ---- text: conditional rows first, then the unconditional ones (cfg_uncond or the negative prompt)
        kv_compact, lens, cu_seqlens_k, max_seqlen_k = label_B_or_BLT
        kv_compact = kv_compact.to(device)
        cu_seqlens_k = cu_seqlens_k.to(torch.int32).cpu()
        if any(np.array(cfg_list) != 1):
            bs = 2 * B
            if negative_label_B_or_BLT is None:
                kv_compact_un = kv_compact.clone()
                total = 0
                for le in lens:
                    kv_compact_un[total:total + le] = self.cfg_uncond[:le]
                    total += le
                kv_compact = torch.cat((kv_compact, kv_compact_un), dim=0)
                cu_seqlens_k = torch.cat((cu_seqlens_k, cu_seqlens_k[1:] + cu_seqlens_k[-1]), dim=0)
            else:
                kv_compact_un, lens_un, cu_seqlens_k_un, max_seqlen_k_un = negative_label_B_or_BLT
                kv_compact = torch.cat((kv_compact, kv_compact_un.to(device)), dim=0)
                cu_seqlens_k_un = cu_seqlens_k_un.to(torch.int32).cpu()
                cu_seqlens_k = torch.cat((cu_seqlens_k, cu_seqlens_k_un[1:] + cu_seqlens_k[-1]), dim=0)
                max_seqlen_k = max(max_seqlen_k, max_seqlen_k_un)
        else:
            bs = B

        kv_compact = self.text_norm(kv_compact)
        sos = cond_BD = self.text_proj_for_sos((kv_compact, cu_seqlens_k, max_seqlen_k))   # (bs, D)
        kv_compact = self.text_proj_for_ca(kv_compact)                                     # (N, D)
        ca_kv: CaKV = (kv_compact, cu_seqlens_k, max_seqlen_k)
        last_stage = sos.unsqueeze(1).expand(bs, 1, -1) + self.pos_start.expand(bs, 1, -1)  # (bs, 1, C)
        with torch.autocast(device_type=device.type, enabled=False):
            cond_BD_or_gss = self.shared_ada_lin(cond_BD.float()).float().contiguous()     # (bs, 1, 6, C)

        # cfg_insertion_layer: 0 = CFG on logits; n < 0 = mix hidden states after block depth+n;
        # 1 = "on probs", a flag upstream never implements (no guidance at all); others raise, as upstream
        check_cfg_insertion_layer(cfg_insertion_layer, self.depth)
        add_cfg_on_logits = 0 in cfg_insertion_layer
        abs_cfg_insertion_layers = [self.depth + n for n in cfg_insertion_layer if n < 0]

        rope_table = self.rope2d_freqs_grid.get(scale_schedule, device)
        for b in self.unregistered_blocks:
            b.sa.kv_caching(True)
        if ssg is not None:
            ssg.reset(num_scales)
        ret, idx_Bl_list = [], []
        summed_codes: torch.Tensor | int = 0
        cur_L = 0
        try:
            for si, pn in enumerate(scale_schedule):
                cfg = cfg_list[si]
                if si >= trunk_scale:
                    break
                rope_start = cur_L                       # tokens of scales 0..si-1 (RoPE rows of this scale start here)
                cur_L += int(np.array(pn).prod())
                layer_idx = 0
                for block_idx, chunk in enumerate(self.block_chunks):
                    if (self.add_lvl_embeding_only_first_block and block_idx == 0) or not self.add_lvl_embeding_only_first_block:
                        last_stage = self.add_lvl_embeding(last_stage, si, scale_schedule)
                    for m in chunk.module:
                        last_stage = m(last_stage, cond_BD=cond_BD_or_gss, ca_kv=ca_kv, rope_table=rope_table,
                                       rope_start=rope_start)
                        if cfg != 1 and layer_idx in abs_cfg_insertion_layers:
                            last_stage = cfg * last_stage[:B] + (1 - cfg) * last_stage[B:]
                            last_stage = torch.cat((last_stage, last_stage), 0)
                        layer_idx += 1

                if cfg != 1 and add_cfg_on_logits:
                    logits_BlV = self.get_logits(last_stage, sos).mul(1 / tau_list[si])       # (2B, L, V)
                    logits_BlV = cfg * logits_BlV[:B] + (1 - cfg) * logits_BlV[B:]          # (B, L, V)
                else:
                    logits_BlV = self.get_logits(last_stage[:B], sos[:B]).mul(1 / tau_list[si])
                if capture is not None:
                    capture.setdefault('logits', []).append(logits_BlV.detach().float().cpu().clone())

                # ---- SSG hook: post-temperature, post-CFG, before top-k/top-p (the sampler filters in place)
                if ssg is not None:
                    logits_BlV = ssg(si, logits_BlV, (pn[1], pn[2]))
                if capture is not None:
                    capture.setdefault('guided_logits', []).append(logits_BlV.detach().float().cpu().clone())

                tmp_bs, tmp_seq_len = logits_BlV.shape[:2]
                logits_BlV = logits_BlV.reshape(tmp_bs, -1, 2)                               # (B, L*d_vae, 2)
                idx_Bld = sample_with_top_k_top_p_also_inplace_modifying_logits_(
                    logits_BlV, rng=rng, top_k=top_k or self.top_k, top_p=top_p or self.top_p, num_samples=1)[:, :, 0]
                idx_Bld = idx_Bld.reshape(tmp_bs, tmp_seq_len, -1)                          # (B, L, d_vae)

                if si < gt_leak:
                    idx_Bld = gt_ls_Bl[si]                                                   # teacher forcing
                else:
                    assert pn[0] == 1
                    idx_Bld = idx_Bld.reshape(B, pn[1], pn[2], -1)                          # (B, h, w, d_vae)
                    if self.apply_spatial_patchify:                                          # (B, 2h, 2w, d)
                        idx_Bld = F.pixel_shuffle(idx_Bld.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
                    idx_Bld = idx_Bld.unsqueeze(1)                                           # (B, 1, h', w', d)
                idx_Bl_list.append(idx_Bld)
                if capture is not None:
                    capture.setdefault('bits', []).append(idx_Bld[:, 0].detach().cpu().clone())

                codes = vae.quantizer.lfq.indices_to_codes(idx_Bld, label_type='bit_label')  # (B, d, 1, h', w')
                if si != num_scales - 1:
                    summed_codes = summed_codes + F.interpolate(codes, size=vae_scale_schedule[-1],
                                                                mode=vae.quantizer.z_interplote_up)
                    last_stage = F.interpolate(summed_codes, size=vae_scale_schedule[si + 1],
                                               mode=vae.quantizer.z_interplote_up).squeeze(-3)   # (B, d, h', w')
                    if self.apply_spatial_patchify:
                        last_stage = F.pixel_unshuffle(last_stage, 2)                           # (B, 4d, h, w)
                    last_stage = last_stage.reshape(*last_stage.shape[:2], -1).permute(0, 2, 1)  # (B, L, d_vae)
                    last_stage = self.word_embed(self.norm0_ve(last_stage))
                    last_stage = last_stage.repeat(bs // B, 1, 1)
                else:
                    summed_codes = summed_codes + codes
                ret.append(codes if returns_vemb != 0 else idx_Bld)
        finally:
            for b in self.unregistered_blocks:
                b.sa.kv_caching(False)

        if capture is not None:
            capture['summed_codes'] = summed_codes.squeeze(-3).detach().float().cpu().clone()
        if not ret_img:
            return ret, idx_Bl_list, []
        img = vae.decode(summed_codes.squeeze(-3))                          # (B, 3, H, W) in [-1, 1]
        if capture is not None:
            capture['image_float'] = img.detach().float().cpu().clone()
        img = (img + 1) / 2
        img = img.permute(0, 2, 3, 1).mul_(255).to(torch.uint8).flip(dims=(3,))   # uint8 by truncation, BGR
        return ret, idx_Bl_list, img
