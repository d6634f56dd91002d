"""Token sampling shared by the three models: the upstream top-k / top-p filter and draw.

VAR, Infinity and HART all sample with the same in-place rule (upstream names it
`sample_with_top_k_top_p_`), so it lives here once. Each model calls it at exactly one
place, after CFG and after `ssg_core.SSG`.
"""
from __future__ import annotations

import torch


def top_k_top_p_filter_(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Filter `logits` (..., V) in place, upstream's rule, and return it.

    top-k: every logit strictly below the k-th largest of its row becomes -inf (ties kept).
    top-p: on the top-k-filtered row, sorted ascending, every entry whose inclusive softmax
    cumsum is <= 1 - top_p is removed, never the largest; the kept set is the smallest
    top set with mass >= top_p.
    """
    V = logits.shape[-1]
    if top_k > 0:
        thr = logits.topk(min(top_k, V), dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < thr, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits.masked_fill_(remove.scatter(sorted_idx.ndim - 1, sorted_idx, remove), -torch.inf)
    return logits


def sample_with_top_k_top_p_(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                             rng: torch.Generator | None = None, num_samples: int = 1) -> torch.Tensor:
    """Filter `logits` (B, l, V) in place, then draw `num_samples` tokens per position.

    Returns (B, l, num_samples) int64. One `torch.multinomial` call over the (B*l, V) matrix,
    with replacement, so the random stream is consumed exactly as upstream's.
    """
    B, l, V = logits.shape
    top_k_top_p_filter_(logits, top_k, top_p)
    replacement = num_samples >= 0
    num_samples = abs(num_samples)
    probs = logits.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=num_samples, replacement=replacement, generator=rng).view(B, l, num_samples)


def gumbel_noise(shape_like: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    """Gumbel(0, 1) noise shaped like `shape_like`, drawn as upstream does: -log(Exp(1))."""
    return -torch.empty_like(shape_like, memory_format=torch.legacy_contiguous_format).exponential_(generator=rng).log()
