"""Stand-in for upstream's `infinity/models/infinity.py`: `Infinity.autoregressive_infer_cfg` has upstream's
signature; after temperature and CFG it reshapes the (B, h*w, 2d) bit logits to (B, h*w*d, 2) and calls the
module-level `sample_with_top_k_top_p_also_inplace_modifying_logits_` on them."""
import torch
import torch.nn.functional as F
from torch import nn

from ssg_core.sampling import sample_with_top_k_top_p_


class Infinity(nn.Module):
    def __init__(self, vae_local=None, text_channels=32, text_maxlen=512, embed_dim=16, depth=2, use_bit_label=1,
                 top_k=0, top_p=0.0, **unused):
        super().__init__()
        d = vae_local.codebook_dim if vae_local is not None else 4
        self.d_vae, self.use_bit_label, self.top_k, self.top_p = d, use_bit_label, top_k, top_p
        self.text_proj_for_sos = nn.Linear(text_channels, embed_dim)
        self.lvl_embed = nn.Embedding(16, embed_dim)
        self.word_embed = nn.Linear(d, embed_dim)
        self.blocks = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(depth))
        self.head = nn.Linear(embed_dim, 2 * d)
        self.rng = torch.Generator()
        self.bits = []   # what the last call sampled, for the tests

    @torch.no_grad()
    def autoregressive_infer_cfg(self, vae=None, scale_schedule=None, label_B_or_BLT=None, B=1,
                                 negative_label_B_or_BLT=None, force_gt_Bhw=None, g_seed=None, cfg_list=[],
                                 tau_list=[], cfg_sc=3, top_k=0, top_p=0.0, returns_vemb=0, ratio_Bl1=None, gumbel=0,
                                 norm_cfg=False, cfg_exp_k=0.0, cfg_insertion_layer=[-5], vae_type=0,
                                 softmax_merge_topk=-1, ret_img=False, trunk_scale=1000, gt_leak=0, gt_ls_Bl=None,
                                 inference_mode=False, save_img_path=None, sampling_per_bits=1, ssg=None):
        rng = None
        if g_seed is not None:
            self.rng.manual_seed(g_seed)
            rng = self.rng
        kv_compact, lens, cu_seqlens_k, max_seqlen_k = label_B_or_BLT
        text = torch.stack([kv_compact[cu_seqlens_k[i]:cu_seqlens_k[i + 1]].mean(0) for i in range(B)])   # (B, Ct)
        bs = 2 * B if any(c != 1 for c in cfg_list) else B
        if bs == 2 * B:
            text = torch.cat((text, torch.zeros_like(text)))
        cond = self.text_proj_for_sos(text)                                                           # (bs, C)
        d, (H, W) = self.d_vae, scale_schedule[-1][1:]
        x = (cond + self.lvl_embed.weight[0])[:, None]
        summed_codes = cond.new_zeros(B, d, H, W)
        ret, idx_Bl_list = [], []
        if ssg is not None:
            ssg.reset(len(scale_schedule))
        for si, pn in enumerate(scale_schedule):
            cfg = cfg_list[si]
            if si >= trunk_scale:
                break
            for b in self.blocks:
                x = x + torch.tanh(b(x))
            if cfg != 1 and 0 in cfg_insertion_layer:
                logits_BlV = (self.head(x) * 3).mul(1 / tau_list[si])
                logits_BlV = cfg * logits_BlV[:B] + (1 - cfg) * logits_BlV[B:]
            else:
                logits_BlV = (self.head(x[:B]) * 3).mul(1 / tau_list[si])
            if ssg is not None:  # where this project's own Infinity calls it: (B, h*w, 2d), before the reshape
                logits_BlV = ssg(si, logits_BlV, (pn[1], pn[2]))
            if self.use_bit_label:
                tmp_bs, tmp_seq_len = logits_BlV.shape[:2]
                logits_BlV = logits_BlV.reshape(tmp_bs, -1, 2)
                idx_Bld = sample_with_top_k_top_p_also_inplace_modifying_logits_(
                    logits_BlV, rng=rng, top_k=top_k or self.top_k, top_p=top_p or self.top_p, num_samples=1)[:, :, 0]
                idx_Bld = idx_Bld.reshape(B, pn[1], pn[2], -1)
            else:   # one of 2d classes per token, on the (B, h*w, V) logits; its binary digits serve as the bits
                idx_Bl = sample_with_top_k_top_p_also_inplace_modifying_logits_(
                    logits_BlV, rng=rng, top_k=top_k or self.top_k, top_p=top_p or self.top_p, num_samples=1)[:, :, 0]
                idx_Bld = (idx_Bl[..., None] >> torch.arange(d)) & 1
                idx_Bld = idx_Bld.reshape(B, pn[1], pn[2], -1)
            idx_Bl_list.append(idx_Bld.unsqueeze(1))
            codes = (idx_Bld.float() * 2 - 1).permute(0, 3, 1, 2)                                      # (B, d, h, w)
            if si != len(scale_schedule) - 1:
                summed_codes = summed_codes + F.interpolate(codes, size=(H, W), mode="bilinear")
                z = F.interpolate(summed_codes, size=scale_schedule[si + 1][1:], mode="area").flatten(2).transpose(1, 2)
                x = self.word_embed(z).repeat(bs // B, 1, 1) + cond[:, None] + self.lvl_embed.weight[si + 1]
            else:
                summed_codes = summed_codes + codes
            ret.append(codes)
        self.bits = [i[:, 0] for i in idx_Bl_list]
        if not ret_img:
            return ret, idx_Bl_list, []
        img = (vae.decode(summed_codes) + 1) / 2
        img = img.permute(0, 2, 3, 1).mul_(255).to(torch.uint8).flip(dims=(3,))   # uint8 BGR, as upstream
        return ret, idx_Bl_list, img


def sample_with_top_k_top_p_also_inplace_modifying_logits_(logits_BlV, top_k=0, top_p=0.0, rng=None, num_samples=1):
    return sample_with_top_k_top_p_(logits_BlV, top_k=top_k, top_p=top_p, rng=rng, num_samples=num_samples)
