"""How far each sampled token is from flipping: the margins of `torch.multinomial` draws (CPU).

`torch.multinomial(probs, 1)` computes, per row, argmax_j probs_j / E_j with E ~ Exp(1) drawn from the
generator in row-major order (torch's own implementation; the golden READMEs verified it for upstream's
runs). So a sampled token c is decided by two gaps, both in units of a logit difference:

* race margin: (l_c - log E_c) minus the largest (l_j - log E_j) over the other candidates top-k / top-p kept;
* filter margin: how far the filters are from changing the kept set in a way that changes the outcome:
  for an excluded candidate that would win if kept, max(how far it is from being admitted, how far it is
  behind c); for c, how far it is from being filtered out. top-k distances are logit gaps to the k-th (or
  (k+1)-th) largest logit; top-p distances are log((1 - top_p) / cumulative mass), to first order (a
  logit change d moves every probability by a factor within exp(+-2 d)).

A logit change d can flip a decision only where its margin is below 2 d. Used by scripts/golden_margins.py
and the golden tests; docs/reproducibility.md has the numbers.

    with spy_sampler(VAR.models.var, "sample_with_top_k_top_p_") as draws:
        var.autoregressive_infer_cfg(...)
    race, filt = decision_margins(draws[k])          # (N,) each, for the N rows of scale k
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class Draw:
    """One sampler call: its input (N, V) before filtering, the filters, the draw and its random numbers."""
    logits: torch.Tensor   # (N, V) float32, rows = batch x position (x bit for Infinity)
    top_k: int
    top_p: float
    kept: torch.Tensor     # (N, V) bool: what top-k / top-p kept
    chosen: torch.Tensor   # (N,) int64
    exp: torch.Tensor      # (N, V) float32: the Exp(1) variates torch.multinomial drew


def decision_margins(d: Draw) -> tuple[torch.Tensor, torch.Tensor]:
    """(race, filter) margins (N,) float64 of every row, in logit-difference units (inf: cannot flip)."""
    l = d.logits.double()
    N, V = l.shape
    c = d.chosen[:, None]
    inf = torch.tensor(math.inf, dtype=torch.float64)
    kept = d.kept
    score = l - d.exp.double().log()          # race score before the common normalisation
    win = score.gather(1, c)
    others = score.masked_fill(~kept, -math.inf).scatter(1, c, -math.inf)
    race = (win - others.amax(1, keepdim=True))[:, 0]

    admit = torch.full_like(l, math.inf)      # how far an excluded token is from being kept
    win_out = torch.full((N,), math.inf, dtype=torch.float64)  # how far the winner is from being dropped
    out_k = torch.zeros_like(kept)
    k = min(d.top_k, V) if d.top_k > 0 else V
    if k < V:
        top = l.topk(k + 1, dim=1).values
        out_k = l < top[:, k - 1:k]
        admit = torch.where(out_k, top[:, k - 1:k] - l, admit)
        win_out = torch.minimum(win_out, (l.gather(1, c) - top[:, k:k + 1])[:, 0])
    if d.top_p > 0:
        lk = l.masked_fill(out_k, -inf)
        ordered, order = lk.sort(dim=1)
        cum = torch.empty_like(l).scatter_(1, order, ordered.softmax(1).cumsum(1))
        thr = 1.0 - d.top_p
        admit = torch.where(~kept & ~out_k, (thr / cum).log(), admit)
        largest = lk.gather(1, c)[:, 0] >= lk.amax(1)  # the filter never drops the largest
        win_out = torch.minimum(win_out, torch.where(largest, inf, (cum.gather(1, c)[:, 0] / thr).log()))
    # an excluded token changes the outcome only if it is admitted and beats the winner
    threat = torch.maximum(admit, win - score).masked_fill(kept, math.inf).amin(1)
    return race, torch.minimum(threat, win_out)


def is_exponential_race(d: Draw) -> bool:
    """Whether argmax probs / E over the kept candidates reproduces the draw (the reading above)."""
    probs = d.logits.masked_fill(~d.kept, -math.inf).softmax(-1)
    return torch.equal((probs / d.exp).argmax(-1), d.chosen)


@contextmanager
def spy_sampler(module, attr: str):
    """Record every call of the sampler `module.attr` (signature of `ssg_core.sampling.sample_with_top_k_top_p_`)
    as a `Draw`; the call itself is unchanged. CPU generators only (the Exp(1) variates are redrawn from a
    copy of the generator's state)."""
    real, draws = getattr(module, attr), []

    def spy(logits, top_k=0, top_p=0.0, rng=None, num_samples=1):
        V = logits.shape[-1]
        state = (rng if rng is not None else torch.default_generator).get_state()
        before = logits.detach().reshape(-1, V).float().clone()
        out = real(logits, top_k=top_k, top_p=top_p, rng=rng, num_samples=num_samples)
        kept = torch.isfinite(logits.detach().reshape(-1, V)).cpu()  # the sampler filtered `logits` in place
        g = torch.Generator()
        g.set_state(state)
        exp = torch.empty_like(before).exponential_(generator=g)
        draws.append(Draw(before, int(top_k), float(top_p), kept, out[..., 0].reshape(-1).cpu(), exp))
        return out

    setattr(module, attr, spy)
    try:
        yield draws
    finally:
        setattr(module, attr, real)
