"""Stand-in for upstream's `models/var.py`: `VAR.autoregressive_infer_cfg` has upstream's signature and
calls the module-level `sample_with_top_k_top_p_` right after CFG, on (B, pn*pn, V) logits."""
import torch
import torch.nn.functional as F
from torch import nn

from .helpers import sample_with_top_k_top_p_


class VAR(nn.Module):
    def __init__(self, vae_local, num_classes=1000, depth=16, embed_dim=16,
                 patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)):
        super().__init__()
        self.V, self.Cvae, self.num_classes = vae_local.vocab_size, vae_local.Cvae, num_classes
        self.patch_nums = tuple(patch_nums)
        self.class_emb = nn.Embedding(num_classes + 1, embed_dim)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), embed_dim)
        self.word_embed = nn.Linear(self.Cvae, embed_dim)
        self.blocks = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(depth))
        self.head = nn.Linear(embed_dim, self.V)
        self.rng = torch.Generator()
        self.vae_proxy = (vae_local,)
        self.tokens = []   # what the last call sampled, for the tests

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B, label_B, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False,
                                 ssg=None):
        rng = None
        if g_seed is not None:
            self.rng.manual_seed(g_seed)
            rng = self.rng
        if label_B is None:
            label_B = torch.multinomial(torch.ones(1, self.num_classes), B, replacement=True, generator=rng).reshape(B)
        elif isinstance(label_B, int):
            label_B = torch.full((B,), self.num_classes if label_B < 0 else label_B)
        vae, K, P = self.vae_proxy[0], len(self.patch_nums), self.patch_nums[-1]
        cond = self.class_emb(torch.cat((label_B, torch.full_like(label_B, self.num_classes))))   # (2B, C)
        x = (cond + self.lvl_embed.weight[0])[:, None]                                           # (2B, 1, C)
        f_hat = cond.new_zeros(B, self.Cvae, P, P)
        if ssg is not None:
            ssg.reset(K)
        self.tokens = []
        for si, pn in enumerate(self.patch_nums):
            ratio = si / (K - 1)
            for b in self.blocks:
                x = x + torch.tanh(b(x))
            logits_BlV = self.head(x) * 3                                                        # (2B, l, V)
            t = cfg * ratio
            logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
            if ssg is not None:  # where this project's own VAR calls it
                logits_BlV = ssg(si, logits_BlV, (pn, pn))
            idx_Bl = sample_with_top_k_top_p_(logits_BlV, rng=rng, top_k=top_k, top_p=top_p, num_samples=1)[:, :, 0]
            self.tokens.append(idx_Bl)
            if not more_smooth:
                h = vae.embedding(idx_Bl)
            else:  # reads the logits the sampler filtered in place, as upstream's Gumbel branch does
                h = logits_BlV.mul(1 + ratio).softmax(-1) @ vae.embedding.weight
            f_hat = f_hat + F.interpolate(h.transpose(1, 2).reshape(B, self.Cvae, pn, pn), size=(P, P), mode="bicubic")
            if si != K - 1:
                nxt = self.patch_nums[si + 1]
                z = F.interpolate(f_hat, size=(nxt, nxt), mode="area").flatten(2).transpose(1, 2)     # (B, l', Cvae)
                x = (self.word_embed(z).repeat(2, 1, 1) + cond[:, None] + self.lvl_embed.weight[si + 1])
        return vae.fhat_to_img(f_hat).add_(1).mul_(0.5)
