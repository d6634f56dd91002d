"""HART text-to-image transformer and its sampling loop (`HARTForT2I.autoregressive_infer_cfg`).

A VAR-style next-scale transformer over a hybrid tokenizer: K scales of discrete tokens (CFG on the
logits, top-k 600/300) and, at the last scale, a continuous residual from a small diffusion head.
The text condition is a T-token prefix (the 1x1 scale is predicted from the last text slot) and,
max-pooled, the AdaLN source. SSG hooks in at one place: on the post-CFG discrete logits, before
top-k/top-p; the residual diffusion is untouched.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from ssg_core.errors import SSGError
from ssg_core.hub import load_state_dict, load_strict
from ssg_core.sampling import gumbel_noise, sample_with_top_k_top_p_

from hart.modules.diffusion.diffloss import DiffLoss
from hart.modules.models.autoencoder import HARTAutoEncoder, HARTAutoEncoderWithDisc
from hart.modules.models.loading import find_weight_file, read_config
from hart.modules.networks.basic_hart import (AdaLNBeforeHead, AdaLNSelfAttn, LlamaRMSNorm, context_pooling,
                                              get_position_ids, rope_1d, rope_2d)

from .configuration import HARTForT2IConfig

__all__ = ["HARTForT2I"]


def _check_config(config: HARTForT2IConfig) -> None:
    """Reject configurations whose code paths are not part of the released model (one clear line each)."""
    unsupported = {
        "attn_type": (config.attn_type, "llama"), "shared_aln": (config.shared_aln, False),
        "disable_aln": (config.disable_aln, False), "use_timestep_embed": (config.use_timestep_embed, False),
        "use_cross_attn": (config.use_cross_attn, False),
    }
    for name, (value, wanted) in unsupported.items():
        if value != wanted:
            raise SSGError(f"transformer config: {name}={value!r} is not supported (the released model uses {wanted!r})")
    if config.mlp_type not in ("llama", "gpt2"):
        raise SSGError(f"transformer config: unknown mlp_type {config.mlp_type!r}")
    if config.sep_aln_pooling_mode not in ("max", "avg"):
        raise SSGError(f"transformer config: unknown sep_aln_pooling_mode {config.sep_aln_pooling_mode!r}")
    if config.embed_dim % config.num_heads or (config.embed_dim // config.num_heads) % 4:
        raise SSGError(f"transformer config: embed_dim {config.embed_dim} / num_heads {config.num_heads} must give a "
                       f"head width divisible by 4 (2-D RoPE)")
    if len(config.patch_nums) < 2:
        raise SSGError("transformer config: patch_nums needs at least two scales")


def tokenizer_folder(config: HARTForT2IConfig) -> str:
    """Where upstream finds the tokenizer: `config.vae_path`, else the folder `tokenizer` beside llm/."""
    return config.vae_path or os.path.join(os.path.dirname(str(config._name_or_path).rstrip("/")), "tokenizer")


class HARTForT2I(nn.Module):
    """The HART transformer with its residual diffusion head; the tokenizer is held outside the state dict.

    State-dict keys are upstream's (97 tensors for depth 2): `word_embed`, `context_embed`, `lvl_embed`,
    `blocks.{i}.*`, `head_nm`, `head`, `decoder_norm`, `diffloss.net.*`, and the persistent buffers
    `lvl_1L` (1, S) and `attn_bias_for_masking` (1, 1, S, S), S = T + sum_{k>=1} pn_k^2, both derived here.
    """

    config_class = HARTForT2IConfig

    def __init__(self, config: HARTForT2IConfig, vae: HARTAutoEncoder | None = None):
        super().__init__()
        _check_config(config)
        self.config = config
        if vae is None:
            vae = HARTAutoEncoderWithDisc.from_pretrained(tokenizer_folder(config)).vae
        # a tuple, so that the tokenizer is no sub-module: not in the state dict, not moved by .to()
        self.vae_proxy: tuple[HARTAutoEncoder] = (vae,)
        self.vae_quant_proxy = (vae.quantize,)
        self.Cvae, self.V = vae.Cvae, vae.V
        self.patch_nums: tuple[int, ...] = tuple(config.patch_nums)
        self.context_token = config.context_token
        self.num_stages_minus_1 = len(self.patch_nums) - 1
        self.C = self.D = config.embed_dim
        self.num_heads = config.num_heads
        self.sep_aln_pooling_mode = config.sep_aln_pooling_mode

        C = self.C
        self.word_embed = nn.Linear(self.Cvae, C)
        self.context_embed = nn.Linear(config.context_dim, C)
        # context_norm_scale is ignored, as upstream: its llama-type norm swallows the `scale` argument (weight
        # initialised to ones, then loaded from the checkpoint anyway)
        self.context_norm = (LlamaRMSNorm(config.context_dim, eps=config.norm_eps) if config.use_context_norm
                             else nn.Identity())
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(C, self.D, config.num_heads, config.mlp_ratio, config.norm_eps, config.attn_l2_norm,
                          config.mlp_type) for _ in range(config.depth)])

        # level of every sequence position: 0 for the T text slots, k for scale k >= 1 (scale 0 has no slot)
        lengths = [config.context_token] + [pn * pn for pn in self.patch_nums[1:]]
        d = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)]).view(1, -1, 1)
        dT = d.transpose(1, 2)
        self.register_buffer("lvl_1L", dT[:, 0].contiguous())
        # training's block-causal mask; unused at inference, kept because the checkpoints carry it
        self.register_buffer("attn_bias_for_masking",
                             torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, d.shape[1], d.shape[1]))

        self.head_nm = AdaLNBeforeHead(C, self.D, config.norm_eps)
        self.head = nn.Linear(C, self.V)
        self.decoder_norm = LlamaRMSNorm(C, eps=config.norm_eps)
        self.diffloss = DiffLoss(target_channels=self.Cvae, z_channels=C, width=config.diff_width,
                                 depth=config.diff_depth, num_sampling_steps=config.num_sampling_steps,
                                 sampler=config.sampler)
        self.rng: torch.Generator | None = None

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, use_ema: bool = True,
                        vae: HARTAutoEncoder | None = None, *, trust_pickle: bool = False) -> "HARTForT2I":
        """Build from `model_path/config.json` (the release's `llm/` folder) and load its weights strictly.

        use_ema: load `ema_model.bin` (upstream samples with the EMA weights by default), else the
        non-EMA `pytorch_model.bin` / `model.safetensors`. The tokenizer comes from `vae` or, as upstream,
        from `config.vae_path` or the sibling folder `tokenizer`. Returns the model in eval mode.
        `trust_pickle` (both folders): see `ssg_core.hub.load_state_dict` (off: a file that could run code is refused).
        """
        config = read_config(model_path, cls.config_class)
        _check_config(config)  # before the tokenizer is read
        if vae is None:
            vae = HARTAutoEncoderWithDisc.from_pretrained(tokenizer_folder(config), trust_pickle=trust_pickle).vae
        model = cls(config, vae=vae)
        wfile = find_weight_file(model_path, ("ema_model.bin",) if use_ema else ("pytorch_model.bin", "model.safetensors"))
        load_strict(model, load_state_dict(wfile, trust_pickle=trust_pickle), f"transformer weights {wfile}")
        return model.eval().requires_grad_(False)

    def vae_to(self, device: torch.device | str) -> "HARTForT2I":
        """Move the tokenizer (not a sub-module, see `vae_proxy`) to `device`."""
        self.vae_proxy[0].to(device)
        return self

    # ------------------------------------------------------------------------------------------- pieces
    def get_logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """(2B, L, C) -> (2B, L, V) float32."""
        return self.head(self.head_nm(h, cond_BD)).float()

    def _blocks(self, x: torch.Tensor, cond_BD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cond_BD, rope)
        return x

    def _generator(self, device: torch.device, g_seed: int | None) -> torch.Generator | None:
        if g_seed is None:
            return None
        if self.rng is None or self.rng.device != device:
            self.rng = torch.Generator(device=device)
        self.rng.manual_seed(int(g_seed))
        return self.rng

    def _check_inputs(self, B: int, label_B: torch.Tensor, context_position_ids, context_mask):
        T, Dc = self.context_token, self.config.context_dim
        if not isinstance(label_B, torch.Tensor) or tuple(label_B.shape) != (B, T, Dc):
            raise SSGError(f"context tensor must have shape ({B}, {T}, {Dc}) (B prompts x context_token x context_dim), "
                           f"got {tuple(getattr(label_B, 'shape', ()))}; max_token_length must equal context_token")
        if context_mask is None:
            context_mask = torch.ones(B, T, dtype=torch.bool, device=label_B.device)
        if context_position_ids is None:
            context_position_ids = context_mask.long().cumsum(1) - 1
        for name, t in (("context_mask", context_mask), ("context_position_ids", context_position_ids)):
            if tuple(t.shape) != (B, T):
                raise SSGError(f"{name} must have shape ({B}, {T}), got {tuple(t.shape)}")
        return context_position_ids, context_mask.bool()

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B: torch.Tensor, g_seed: int | None = None, cfg: float = 1.5,
                                 top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
                                 context_position_ids: torch.Tensor | None = None,
                                 context_mask: torch.Tensor | None = None, final_stage: int = 0,
                                 num_maskgit_iters: int = 1, ssg=None, trace: dict | None = None) -> torch.Tensor:
        """Sample B images for the text condition `label_B` (B, T, context_dim) float32.

        context_position_ids (B, T) int64: cumsum(mask) - 1; context_mask (B, T) bool (True = real token).
        cfg: guidance t_k = cfg * k/(K-1) on the logits (the last scale reuses t_{K-2}, also used for the
        residual diffusion). top_k is ignored, as upstream: top-k is 600 for scales 0-6 and 300 after.
        more_smooth: Gumbel-soft codebook mixtures instead of hard embeddings (not for FID).
        final_stage != 0: no residual diffusion (discrete-only image).
        ssg: an `ssg_core.SSG` (or None): called as `ssg(k, logits (B, pn*pn, V), (pn, pn))` after CFG.
        trace: optional dict filled with per-scale `tokens`, `logits` (post-CFG, pre-SSG), `guided`
        (what the sampler receives), `fhat_scales` (the accumulated latent (B, Cvae, P, P) after each scale,
        for coarse-to-fine pictures), and `fhat`, `residual`; for tests and analysis.
        Returns images (B, 3, H, W) in [0, 1].
        """
        if num_maskgit_iters != 1:
            raise SSGError("num_maskgit_iters != 1 is not supported (upstream's default and only released setting is 1)")
        context_position_ids, context_mask = self._check_inputs(B, label_B, context_position_ids, context_mask)
        device = label_B.device
        rng = self._generator(device, g_seed)
        patch_nums, K, hd = self.patch_nums, len(self.patch_nums), self.C // self.num_heads
        vae, quant = self.vae_proxy[0], self.vae_quant_proxy[0]
        codebook = quant.embedding.weight  # (V, Cvae)

        # CFG batch [cond; uncond]: the unconditional text is all-zero hidden states at position 0
        ctx2 = torch.cat([label_B, torch.zeros_like(label_B)])
        pos2 = torch.cat([context_position_ids, torch.zeros_like(context_position_ids)])  # (2B, T)
        mask2 = torch.cat([context_mask, torch.zeros_like(context_mask)])
        mask2[B:, 0] = True
        cond = self.context_embed(self.context_norm(ctx2))  # (2B, T, C)
        cond_pool = context_pooling(cond, mask2, mode=self.sep_aln_pooling_mode)  # (2B, C): AdaLN of the blocks
        cond_head = context_pooling(cond, mode="max")  # (2B, C): the head always max-pools

        T = self.context_token
        x = cond + self.lvl_embed(self.lvl_1L[:, :T].expand(2 * B, -1))  # (2B, T, C)
        f_hat = cond.new_zeros(B, self.Cvae, patch_nums[-1], patch_nums[-1])
        image_offset = pos2[:, -1:].unsqueeze(-1)  # (2B, 1, 1): last text position, added to both grid coordinates
        if ssg is not None:
            ssg.reset(K)
        for b in self.blocks:
            b.attn.kv_caching(True)

        cur_L, ratio = T, 0.0
        for si, pn in enumerate(patch_nums):
            last = si == K - 1
            if not last:
                ratio = si / self.num_stages_minus_1  # the last scale keeps the previous ratio (upstream)
            rope = (rope_1d(pos2, hd) if si == 0 else
                    rope_2d(get_position_ids(2 * B, patch_nums, device, si) + image_offset, hd))
            h = self._blocks(x, cond_pool, rope)  # (2B, L, C)
            logits_BlV = self.get_logits(h, cond_head)
            t = cfg * ratio
            logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]  # (B, L, V)
            if si == 0:
                logits_BlV = logits_BlV[:, -1:, :]  # the 1x1 token comes from the last text slot
            _record(trace, "logits", logits_BlV)
            if ssg is not None:
                logits_BlV = ssg(si, logits_BlV, (pn, pn))  # SSG: guided post-CFG logits, before top-k/top-p
            _record(trace, "guided", logits_BlV)
            if last:
                for _ in range(B):  # upstream draws a MaskGIT order per image (no effect with one iteration)
                    np.random.shuffle(np.arange(pn * pn))
            idx_Bl = sample_with_top_k_top_p_(logits_BlV, top_k=600 if si < 7 else 300, top_p=top_p, rng=rng,
                                              num_samples=1)[:, :, 0]  # filters logits_BlV in place
            _record(trace, "tokens", idx_Bl)
            if more_smooth:
                tau = max(0.27 * (1 - ratio * 0.95), 0.005)
                scores = logits_BlV.mul(1 + ratio)
                soft = ((scores + gumbel_noise(scores, rng)) / tau).softmax(dim=-1)
                emb_BlC = soft @ codebook.unsqueeze(0)
            else:
                emb_BlC = quant.embedding(idx_Bl)  # (B, l, Cvae)

            if not last:
                h_BChw = emb_BlC.transpose(1, 2).reshape(B, self.Cvae, pn, pn)
                f_hat, next_BChw = quant.get_next_autoregressive_input(si, K, f_hat, h_BChw, patch_nums)
                _record(trace, "fhat_scales", f_hat)
                next_pn = patch_nums[si + 1]
                x = self.word_embed(next_BChw.view(B, self.Cvae, -1).transpose(1, 2))
                x = (x + self.lvl_embed(self.lvl_1L[:, cur_L:cur_L + next_pn * next_pn])).repeat(2, 1, 1)
                cur_L += next_pn * next_pn
                continue

            # last scale: discrete embedding + continuous residual, added to f_hat directly (no phi, no resize)
            if final_stage == 0:
                hard = self.word_embed(quant.embedding(idx_Bl)).repeat(2, 1, 1)  # the residual sees the hard ids
                z = self.decoder_norm(h + hard)  # (2B, l, C)
                residual = self.diffloss.sample(z.reshape(-1, self.C), cfg=t)  # (2B*l, Cvae), rows [cond; uncond]
                residual = residual[: B * pn * pn].view(B, pn * pn, self.Cvae) * 0.6  # vae_scale
                _record(trace, "residual", residual)
                emb_BlC = emb_BlC + residual
            f_hat.add_(emb_BlC.transpose(1, 2).reshape(B, self.Cvae, pn, pn))
            _record(trace, "fhat_scales", f_hat)

        for b in self.blocks:
            b.attn.kv_caching(False)
        _record(trace, "fhat", f_hat)
        return vae.fhat_to_img(f_hat).add_(1).mul_(0.5)


def _record(trace: dict | None, key: str, value: torch.Tensor) -> None:
    """Append a detached copy of `value` to `trace[key]` (no-op without a trace)."""
    if trace is not None:
        trace.setdefault(key, []).append(value.detach().clone())
