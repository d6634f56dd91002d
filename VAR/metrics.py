"""Sample-quality metrics on classifier features: Frechet distance, precision/recall, accuracy.

Model-agnostic and torch-free apart from accepting tensors: everything is computed in
float64 numpy. Used by `scripts/demo_eval.py` with the digits classifier's features
(`VAR.demo.DigitsClassifier.features`), the same recipe as FID with Inception features.

* `frechet_distance(a, b)`: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) of the two
  feature sets' Gaussian fits (the FID formula).
* `precision_recall(real, fake, k=3)`: Kynkaenniemi et al. (2019) k-NN manifold estimate:
  precision = share of fake samples inside the real manifold (the union of balls around each
  real sample reaching its k-th nearest real neighbour), recall = the converse.
* `class_accuracy(logits, labels)`: share of samples the classifier assigns to the requested class.
"""
from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected features of shape (N, D), got {x.shape}")
    return x


def feature_stats(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), float64."""
    f = _as_float64(feats)
    if f.shape[0] < 2:
        raise ValueError("need at least 2 samples for a covariance")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^{1/2}) is computed as Tr((S1^{1/2} S2 S1^{1/2})^{1/2}): the inner matrix is
    symmetric PSD, so an eigendecomposition is exact and stable (no complex sqrtm residue).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    r1 = _sqrtm_psd(s1)
    inner = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(w, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance(feats1: ArrayLike, feats2: ArrayLike) -> float:
    """Frechet distance between the Gaussian fits of two (N, D) feature sets."""
    return frechet_distance_from_stats(*feature_stats(feats1), *feature_stats(feats2))


def _pairwise_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Na, D), (Nb, D) -> (Na, Nb) Euclidean distances."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of every row of x to its k-th nearest other row, (N,)."""
    d = _pairwise_dist(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def _coverage(manifold: np.ndarray, radii: np.ndarray, probes: np.ndarray) -> float:
    d = _pairwise_dist(probes, manifold)  # (Np, Nm)
    return float((d <= radii[None, :]).any(axis=1).mean())


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall of `fake` (N_f, D) against `real` (N_r, D) features."""
    r, f = _as_float64(real), _as_float64(fake)
    if min(len(r), len(f)) <= k:
        raise ValueError(f"need more than k={k} samples in each set")
    precision = _coverage(r, _knn_radii(r, k), f)
    recall = _coverage(f, _knn_radii(f, k), r)
    return precision, recall


def class_accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Share of rows whose argmax over (N, num_classes) `logits` equals `labels` (N,)."""
    lg = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    lb = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return float((lg.argmax(axis=1) == lb).mean())


def classifier_score(probs: ArrayLike, eps: float = 1e-12) -> float:
    """Inception-Score formula on any classifier: exp(mean_x KL(p(y|x) || p(y))), probs (N, num_classes).

    1 when every prediction is the same distribution; num_classes for confident, balanced predictions.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))
