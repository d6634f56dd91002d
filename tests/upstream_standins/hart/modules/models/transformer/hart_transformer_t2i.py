"""Stand-in for upstream's `hart/modules/models/transformer/hart_transformer_t2i.py`: the loop calls the
module-level `sample_with_top_k_top_p_` after CFG (scale 0 on the last text slot, top-k 600/300), then at
the last scale, after the discrete tokens, draws a continuous residual from the global generator."""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssg_core.sampling import sample_with_top_k_top_p_


class HARTForT2I(nn.Module):
    def __init__(self, context_dim=32, context_token=8, embed_dim=16, vocab_size=64, Cvae=8,
                 patch_nums=(1, 2, 3, 4, 6, 8)):
        super().__init__()
        self.config = dict(context_dim=context_dim, context_token=context_token, embed_dim=embed_dim,
                           vocab_size=vocab_size, Cvae=Cvae, patch_nums=list(patch_nums))
        self.patch_nums, self.Cvae, self.context_token = tuple(patch_nums), Cvae, context_token
        self.num_stages_minus_1 = len(self.patch_nums) - 1
        self.context_embed = nn.Linear(context_dim, embed_dim)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), embed_dim)
        self.word_embed = nn.Linear(Cvae, embed_dim)
        self.blocks = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(2))
        self.head = nn.Linear(embed_dim, vocab_size)
        self.embedding = nn.Embedding(vocab_size, Cvae)
        self.decoder = nn.Conv2d(Cvae, 3, 1)
        self.rng = torch.Generator()
        self.tokens, self.residual = [], None   # what the last call sampled, for the tests

    @classmethod
    def from_pretrained(cls, path):
        with open(os.path.join(path, "config.json")) as f:
            model = cls(**json.load(f))
        model.load_state_dict(torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu", weights_only=True))
        return model

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(self.config, f)
        torch.save(self.state_dict(), os.path.join(path, "pytorch_model.bin"))

    def _logits(self, x):
        for b in self.blocks:
            x = x + torch.tanh(b(x))
        return x, self.head(x) * 3

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B, label_B, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False,
                                 context_position_ids=None, context_mask=None, final_stage=0, num_maskgit_iters=1,
                                 ssg=None):
        rng = None
        if g_seed is not None:
            self.rng.manual_seed(g_seed)
            rng = self.rng
        K, P = len(self.patch_nums), self.patch_nums[-1]
        cond = self.context_embed(torch.cat((label_B, torch.zeros_like(label_B))))                    # (2B, T, C)
        pooled = cond.max(1).values[:, None]                                                             # (2B, 1, C)
        x = cond + self.lvl_embed.weight[0]
        f_hat = cond.new_zeros(B, self.Cvae, P, P)
        if ssg is not None:
            ssg.reset(K)
        self.tokens, ratio = [], 0.0
        for si, pn in enumerate(self.patch_nums[:-1]):
            ratio = si / self.num_stages_minus_1
            x, logits_BlV = self._logits(x)
            t = cfg * ratio
            logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
            if si == 0:
                logits_BlV = logits_BlV[:, [-1], :]
            if ssg is not None:  # where this project's own HART calls it
                logits_BlV = ssg(si, logits_BlV, (pn, pn))
            idx_Bl = sample_with_top_k_top_p_(logits_BlV, rng=rng, top_k=(600 if si < 7 else 300), top_p=top_p,
                                              num_samples=1)[:, :, 0]
            self.tokens.append(idx_Bl)
            h = (logits_BlV.mul(1 + ratio).softmax(-1) @ self.embedding.weight) if more_smooth else self.embedding(idx_Bl)
            f_hat = f_hat + F.interpolate(h.transpose(1, 2).reshape(B, self.Cvae, pn, pn), size=(P, P), mode="bicubic")
            nxt = self.patch_nums[si + 1]
            z = F.interpolate(f_hat, size=(nxt, nxt), mode="area").flatten(2).transpose(1, 2)
            x = self.word_embed(z).repeat(2, 1, 1) + pooled + self.lvl_embed.weight[si + 1]

        # last scale, MaskGIT-style: num_maskgit_iters steps, each on a part of the grid (all of it with one step)
        si, order = K - 1, np.arange(P * P)
        np.random.shuffle(order)
        tokens = f_hat.new_zeros(B, P * P, self.Cvae)
        for part in np.array_split(np.sort(order), num_maskgit_iters):
            sel = torch.from_numpy(part)
            x_sel, logits_BlV = self._logits(x[:, sel])
            t = cfg * ratio
            logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
            if ssg is not None:
                logits_BlV = ssg(si, logits_BlV, (P, P))
            idx_Bl = sample_with_top_k_top_p_(logits_BlV, rng=rng, top_k=(600 if si < 7 else 300), top_p=top_p,
                                              num_samples=1)[:, :, 0]
            self.tokens.append(idx_Bl)
            h = self.embedding(idx_Bl)
            if final_stage == 0:  # the continuous residual: global generator, conditioned on the hard tokens
                self.residual = 0.1 * torch.randn(B, len(part), self.Cvae) + 0.05 * torch.tanh(x_sel[:B, :, :self.Cvae]) * h
                h = h + self.residual
            tokens[:, sel] = h
        f_hat = f_hat + tokens.transpose(1, 2).reshape(B, self.Cvae, P, P)
        img = torch.tanh(F.interpolate(self.decoder(f_hat), scale_factor=16, mode="nearest"))
        return img.add_(1).mul_(0.5)
