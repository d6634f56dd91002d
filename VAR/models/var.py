"""The VAR transformer (next-scale prediction) and its sampling loop, with the SSG hook.

Mirrors upstream's `models/var.py`: class `VAR`, its constructor signature, its state-dict keys
and `autoregressive_infer_cfg`. SSG enters the loop in one place, between CFG and top-k/top-p:

    logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]      # CFG
    if ssg is not None:
        logits_BlV = ssg(si, logits_BlV, (pn, pn))                 # SSG
    idx_Bl = sample_with_top_k_top_p_(logits_BlV, ...)              # filter + sample

Differences from upstream that do not change results: the model-owned generator is created on
the model's device when first needed (upstream fixes it at construction); constructors do not
draw random numbers (`init_weights(generator=...)` does); the KV cache is preallocated.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from ssg_core.errors import SSGError

from .basic_var import AdaLNBeforeHead, AdaLNSelfAttn
from .helpers import gumbel_softmax_with_rng, sample_with_top_k_top_p_, top_k_top_p_filter_
from .vqvae import VQVAE

__all__ = ["VAR", "SharedAdaLin"]


class SharedAdaLin(nn.Linear):
    """Linear D -> 6C whose output is viewed as (B, 1, 6, C) (shared AdaLN, d36)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0] // 6
        return super().forward(cond_BD).view(-1, 1, 6, C)


class VAR(nn.Module):
    """Class-conditional next-scale autoregressive transformer over a `VQVAE`'s multi-scale tokens.

    State-dict keys (depth N): pos_start (1, l_0, C), pos_1LC (1, L, C), lvl_1L, attn_bias_for_masking,
    word_embed.*, class_emb.weight (num_classes + 1, C), lvl_embed.weight (K, C),
    [shared_ada_lin.1.* if shared_aln], blocks.{0..N-1}.*, head_nm.ada_lin.1.*, head.* .
    """

    def __init__(self, vae_local: VQVAE, num_classes: int = 1000, depth: int = 16, embed_dim: int = 1024,
                 num_heads: int = 16, mlp_ratio: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, shared_aln: bool = False,
                 cond_drop_rate: float = 0.1, attn_l2_norm: bool = False,
                 patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                 flash_if_available: bool = True, fused_if_available: bool = True):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.Cvae, self.V = vae_local.Cvae, vae_local.vocab_size
        self.depth, self.C, self.D, self.num_heads = depth, embed_dim, embed_dim, num_heads
        self.cond_drop_rate = cond_drop_rate
        self.prog_si = -1  # progressive training: not used

        self.patch_nums: tuple[int, ...] = tuple(patch_nums)
        self.L = sum(pn ** 2 for pn in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends: list[tuple[int, int]] = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn ** 2))
            cur += pn ** 2
        self.num_stages_minus_1 = len(self.patch_nums) - 1
        self.rng: torch.Generator | None = None  # created on the model's device when first needed

        # 1. input (word) embedding: VQ latent Cvae -> C
        self.vae_proxy: tuple[VQVAE] = (vae_local,)  # a tuple keeps the VAE out of this module's state dict
        self.vae_quant_proxy = (vae_local.quantize,)
        self.word_embed = nn.Linear(self.Cvae, self.C)

        # 2. class embedding (row num_classes is the unconditional class) and start position
        self.num_classes = num_classes
        self.class_emb = nn.Embedding(self.num_classes + 1, self.C)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, self.C))

        # 3. absolute positions, scale by scale, and the level embedding
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, self.C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), self.C)

        # 4. backbone
        self.shared_ada_lin = (nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(self.D, 6 * self.C))
                               if shared_aln else nn.Identity())
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        self.drop_path_rate = drop_path_rate
        # stochastic depth rates rising linearly (only active in train mode)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(cond_dim=self.D, shared_aln=shared_aln, block_idx=block_idx, embed_dim=self.C,
                          norm_layer=norm_layer, num_heads=num_heads, mlp_ratio=mlp_ratio, drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=dpr[block_idx],
                          last_drop_p=0 if block_idx == 0 else dpr[block_idx - 1], attn_l2_norm=attn_l2_norm,
                          flash_if_available=flash_if_available, fused_if_available=fused_if_available)
            for block_idx in range(depth)
        ])

        # 5. training mask (block-causal over scales); inference uses the KV cache instead
        self.register_buffer("lvl_1L", torch.zeros(1, self.L, dtype=torch.long))
        self.register_buffer("attn_bias_for_masking", torch.zeros(1, 1, self.L, self.L))
        self.reset_buffers()

        # 6. head
        self.head_nm = AdaLNBeforeHead(self.C, self.D, norm_layer=norm_layer)
        self.head = nn.Linear(self.C, self.V)

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """(Re)compute the constant buffers in place (after `to_empty` they hold garbage)."""
        d = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(self.patch_nums)]).view(1, self.L, 1)
        dT = d.transpose(1, 2)  # (1, 1, L)
        self.lvl_1L.copy_(dT[:, 0])
        self.attn_bias_for_masking.copy_(torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, self.L, self.L))
        for b in self.blocks:
            b.attn.zero_k_bias.zero_()

    # ------------------------------------------------------------------------------------------
    def get_logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, l, C) -> logits (B, l, V) in float32."""
        return self.head(self.head_nm(h.float(), cond_BD).float()).float()

    def _model_rng(self) -> torch.Generator:
        device = self.lvl_1L.device
        if self.rng is None or self.rng.device != device:
            self.rng = torch.Generator(device=device)
        return self.rng

    def _check_labels(self, B: int, label_B) -> torch.Tensor | None:
        device = self.lvl_1L.device
        if label_B is None:
            return None
        if isinstance(label_B, bool):
            raise SSGError(f"class label must be an int or a tensor, got {label_B!r}")
        if isinstance(label_B, int):  # upstream: B copies; a negative int means the unconditional class
            if label_B >= self.num_classes:
                raise SSGError(f"unknown class id {label_B}: this model has classes 0..{self.num_classes - 1}")
            return torch.full((B,), self.num_classes if label_B < 0 else label_B, dtype=torch.long, device=device)
        labels = torch.as_tensor(label_B)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1 or labels.numel() != B:
            raise SSGError(f"labels must be B={B} integer class ids, got shape {tuple(labels.shape)} {labels.dtype}")
        # as upstream, a tensor may hold the null class (num_classes): that row is sampled unconditionally
        bad = labels[(labels < 0) | (labels > self.num_classes)]
        if bad.numel():
            raise SSGError(f"unknown class id {int(bad[0])}: this model has classes 0..{self.num_classes - 1} "
                           f"(and {self.num_classes}, the unconditional class, in a label tensor)")
        return labels.to(device=device, dtype=torch.long)

    def _generators(self, B: int, g_seed) -> tuple[torch.Generator | None, list[torch.Generator] | None]:
        """(shared generator or None, per-image generators or None) for `g_seed`."""
        if g_seed is None:
            return None, None
        if isinstance(g_seed, (list, tuple)):
            if len(g_seed) != B:
                raise SSGError(f"g_seed has {len(g_seed)} seeds for a batch of B={B}")
            device = self.lvl_1L.device
            return None, [torch.Generator(device=device).manual_seed(int(s)) for s in g_seed]
        rng = self._model_rng()
        rng.manual_seed(int(g_seed))
        return rng, None

    @staticmethod
    def _sample_per_image(logits_BlV: torch.Tensor, rngs: list[torch.Generator], top_k: int, top_p: float) -> torch.Tensor:
        """Filter `logits_BlV` (B, l, V) in place and draw image b's tokens from `rngs[b]` -> (B, l) int64.

        The filter is row-wise, so filtering the batch at once equals filtering image by image; each image
        then draws its (l, V) problem from its own generator, exactly what a batch of one with
        g_seed=<its seed> draws."""
        top_k_top_p_filter_(logits_BlV, top_k, top_p)
        probs = logits_BlV.softmax(dim=-1)
        return torch.stack([torch.multinomial(probs[b], num_samples=1, replacement=True, generator=g)[:, 0]
                            for b, g in enumerate(rngs)])

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B: int | torch.Tensor | None, g_seed=None, cfg: float = 1.5,
                                 top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False, *, ssg=None,
                                 return_tokens: bool = False):
        """Sample B images with classifier-free guidance, scale by scale.

        Args:
            B: batch size.
            label_B: (B,) int64 class ids in [0, num_classes), an int (B copies; negative = unconditional),
                or None (drawn uniformly from the generator).
            g_seed: None (global generator), an int (re-seeds the model's own generator: upstream), or a
                list of B ints (image b draws from its own generator, so it does not depend on the batch).
            cfg: guidance at the last scale; scale k uses t = cfg * k / (K - 1), logits (1 + t) c - t u.
            top_k, top_p: upstream's filters (0 = off). more_smooth: Gumbel-softmax code mixing (visuals only).
            ssg: an `ssg_core.SSG` (or None), applied to the post-CFG logits before filtering.
            return_tokens: also return the sampled indices, one (B, p_k * p_k) int64 tensor per scale.
        Returns:
            image (B, 3, 16P, 16P) in [0, 1], or (image, tokens) with `return_tokens`.
        """
        if not isinstance(B, int) or isinstance(B, bool) or B < 1:
            raise SSGError(f"batch size must be a positive int, got {B!r}")
        rng, rngs = self._generators(B, g_seed)
        label_B = self._check_labels(B, label_B)
        if label_B is None:
            uniform = torch.full((1, self.num_classes), 1.0 / self.num_classes, device=self.lvl_1L.device)
            if rngs is None:
                label_B = torch.multinomial(uniform, num_samples=B, replacement=True, generator=rng).reshape(B)
            else:
                label_B = torch.cat([torch.multinomial(uniform, num_samples=1, replacement=True, generator=g).reshape(1)
                                     for g in rngs])
        if ssg is not None:
            ssg.reset(len(self.patch_nums))

        sos = cond_BD = self.class_emb(torch.cat((label_B, torch.full_like(label_B, fill_value=self.num_classes)), dim=0))
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        next_token_map = (sos.unsqueeze(1).expand(2 * B, self.first_l, -1)
                          + self.pos_start.expand(2 * B, self.first_l, -1) + lvl_pos[:, :self.first_l])
        cur_L = 0
        P = self.patch_nums[-1]
        f_hat = sos.new_zeros(B, self.Cvae, P, P)
        quant = self.vae_quant_proxy[0]
        tokens: list[torch.Tensor] = []

        for b in self.blocks:
            b.attn.kv_caching(True, max_len=self.L)
        try:
            for si, pn in enumerate(self.patch_nums):
                ratio = si / self.num_stages_minus_1
                cur_L += pn * pn
                cond_BD_or_gss = self.shared_ada_lin(cond_BD)
                x = next_token_map
                for b in self.blocks:
                    x = b(x=x, cond_BD=cond_BD_or_gss, attn_bias=None)
                logits_BlV = self.get_logits(x, cond_BD)  # (2B, l, V)

                t = cfg * ratio
                logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]  # (B, l, V)
                if ssg is not None:
                    logits_BlV = ssg(si, logits_BlV, (pn, pn))  # SSG hook: after CFG, before top-k/top-p

                if rngs is None:  # upstream: one multinomial over the (B*l, V) matrix, through the module-level
                    # name upstream's loop uses, so ssg_core.integrations.enable_ssg can hook it here as there
                    idx_Bl = sample_with_top_k_top_p_(logits_BlV, rng=rng, top_k=top_k, top_p=top_p, num_samples=1)[:, :, 0]
                else:
                    idx_Bl = self._sample_per_image(logits_BlV, rngs, top_k, top_p)  # (B, l)
                tokens.append(idx_Bl)
                if not more_smooth:  # the default (FID) case
                    h_BChw = quant.embedding(idx_Bl)  # (B, l, Cvae)
                else:  # visualisation only: soft code mixture from the filtered logits
                    gum_t = max(0.27 * (1 - ratio * 0.95), 0.005)
                    scaled = logits_BlV.mul(1 + ratio)
                    if rngs is None:
                        soft = gumbel_softmax_with_rng(scaled, tau=gum_t, dim=-1, rng=rng)
                    else:
                        soft = torch.cat([gumbel_softmax_with_rng(scaled[b:b + 1], tau=gum_t, dim=-1, rng=g)
                                          for b, g in enumerate(rngs)])
                    h_BChw = soft @ quant.embedding.weight.unsqueeze(0)

                h_BChw = h_BChw.transpose_(1, 2).reshape(B, self.Cvae, pn, pn)
                f_hat, next_token_map = quant.get_next_autoregressive_input(si, len(self.patch_nums), f_hat, h_BChw)
                if si != self.num_stages_minus_1:  # input of the next scale, shared by both CFG halves
                    next_token_map = next_token_map.view(B, self.Cvae, -1).transpose(1, 2)
                    next_token_map = self.word_embed(next_token_map) + lvl_pos[:, cur_L:cur_L + self.patch_nums[si + 1] ** 2]
                    next_token_map = next_token_map.repeat(2, 1, 1)
        finally:
            for b in self.blocks:
                b.attn.kv_caching(False)

        img = self.vae_proxy[0].fhat_to_img(f_hat).add_(1).mul_(0.5)  # [-1, 1] -> [0, 1]
        return (img, tokens) if return_tokens else img

    # ------------------------------------------------------------------------------------------
    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher forcing (training): labels (B,), inputs (B, L - l_0, Cvae) -> logits (B, L, V).

        As upstream, labels are replaced by the unconditional class with probability
        `cond_drop_rate` (drawn from the global generator), also in eval mode.
        """
        bg, ed = self.begin_ends[self.prog_si] if self.prog_si >= 0 else (0, self.L)
        B = x_BLCv_wo_first_l.shape[0]
        with torch.autocast(device_type=x_BLCv_wo_first_l.device.type, enabled=False):
            label_B = torch.where(torch.rand(B, device=label_B.device) < self.cond_drop_rate, self.num_classes, label_B)
            sos = cond_BD = self.class_emb(label_B)
            sos = sos.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
            if self.prog_si == 0:
                x_BLC = sos
            else:
                x_BLC = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
            x_BLC += self.lvl_embed(self.lvl_1L[:, :ed].expand(B, -1)) + self.pos_1LC[:, :ed]

        attn_bias = self.attn_bias_for_masking[:, :, :ed, :ed]
        cond_BD_or_gss = self.shared_ada_lin(cond_BD)
        temp = x_BLC.new_ones(8, 8)
        main_type = torch.matmul(temp, temp).dtype  # the autocast dtype, if any
        x_BLC = x_BLC.to(dtype=main_type)
        cond_BD_or_gss = cond_BD_or_gss.to(dtype=main_type)
        attn_bias = attn_bias.to(dtype=main_type)
        for b in self.blocks:
            x_BLC = b(x=x_BLC, cond_BD=cond_BD_or_gss, attn_bias=attn_bias)
        x_BLC = self.get_logits(x_BLC.float(), cond_BD)
        if self.prog_si == 0:  # keep word_embed in the autograd graph
            x_BLC[0, 0, 0] += self.word_embed.weight[0, 0] * 0 + self.word_embed.bias[0] * 0
        return x_BLC

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = 0.02, conv_std_or_gain: float = 0.02,
                     generator: torch.Generator | None = None) -> None:
        """Upstream's initialisation (trunc-normal linears/embeddings, scaled head and AdaLN gates).

        Also sets the tensors upstream initialises in its constructors (positions, `ada_gss`,
        attention scale and biases). Draws from `generator` (the global one if None).
        """
        if init_std < 0:
            init_std = (1 / self.C / 3) ** 0.5
        tn = partial(nn.init.trunc_normal_, mean=0.0, generator=generator)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                tn(m.weight, std=init_std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                tn(m.weight, std=init_std)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()
        ctor_std = math.sqrt(1 / self.C / 3)  # upstream's constructor std for positions
        tn(self.pos_start, std=ctor_std)
        tn(self.pos_1LC, std=ctor_std)
        if init_head >= 0:
            self.head.weight.mul_(init_head)
            self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        depth = len(self.blocks)
        for sab in self.blocks:
            sab.attn.proj.weight.div_(math.sqrt(2 * depth))
            sab.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            if sab.attn.attn_l2_norm:
                sab.attn.scale_mul_1H11.fill_(math.log(4.0))
            sab.attn.q_bias.zero_()
            sab.attn.v_bias.zero_()
            if sab.shared_aln:
                sab.ada_gss.normal_(generator=generator).div_(self.C ** 0.5)
                sab.ada_gss[:, :, 2:].mul_(init_adaln)
                sab.ada_gss[:, :, :2].mul_(init_adaln_gamma)
            else:
                sab.ada_lin[-1].weight[2 * self.C:].mul_(init_adaln)
                sab.ada_lin[-1].weight[:2 * self.C].mul_(init_adaln_gamma)
                sab.ada_lin[-1].bias.zero_()
        self.reset_buffers()

    def extra_repr(self) -> str:
        return f"patch_nums={self.patch_nums}, depth={self.depth}, C={self.C}, heads={self.num_heads}"
