"""The offline demo model: a small VAR (VQVAE + next-scale transformer) trained on sklearn's digits.

Same classes as the ImageNet models (`VAR.models.VQVAE`, `VAR.models.VAR`), small config:

* data: `sklearn.datasets.load_digits` (1797 grey 8x8 images, 10 classes), bicubic-upsampled
  to 16x16, replicated to 3 channels, scaled to [-1, 1] (ink is bright);
* VQVAE: f2 (ch_mult=(1, 1), so a 16x16 image gives an 8x8 latent), ch=32, Cvae=16,
  vocabulary 256, the multi-scale residual quantizer over `PATCH_NUMS` (6 scales). 16x16
  rather than 32x32 because the full-resolution convolutions dominate CPU training time and
  the data hold only 8x8 pixels of information anyway;
* VAR: depth 4, width 64, 1 head of 64, class-conditional with 10 classes (+ the null class).

The sizes are what trains in about ten minutes on two shared CPU cores.

`load_demo(device)` returns the shipped checkpoint (`assets/demo/`) in eval mode; the sampler
uses it for `--model demo`. `load_classifier(device)` returns the digits classifier that the
evaluation (`scripts/demo_eval.py`) uses for features and accuracy. Training: `VAR/train_demo.py`.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssg_core.errors import SSGError

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "demo"
VAE_CKPT = ASSETS / "vae_demo.safetensors"
VAR_CKPT = ASSETS / "var_demo.safetensors"
CLASSIFIER_CKPT = ASSETS / "classifier_demo.safetensors"
RECOMMENDED = ASSETS / "eval" / "recommended.json"  # the SSG setting `VAR/sample_ssg.py --model demo` uses without --beta
DIGITS_COPY = ASSETS / "digits_8x8.npz"  # sklearn's digits (UCI optdigits, CC BY 4.0), for installs without sklearn

IMAGE_SIZE = 16
PATCH_NUMS = (1, 2, 3, 4, 6, 8)
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(i) for i in range(NUM_CLASSES))

# VQVAE constructor arguments (upstream signature) plus the two decoder/encoder shape knobs that
# upstream hard-codes (ch_mult=(1,1,2,2,4), num_res_blocks=2): the demo needs f2, not f16.
VAE_CONFIG = dict(vocab_size=256, z_channels=16, ch=32, dropout=0.0, beta=0.25, using_znorm=False,
                  quant_conv_ks=3, quant_resi=0.5, share_quant_resi=4, default_qresi_counts=0)
VAE_CH_MULT = (1, 1)
VAE_NUM_RES_BLOCKS = 1
# VAR constructor arguments (upstream signature); head dim 64 as in every released model.
VAR_CONFIG = dict(num_classes=NUM_CLASSES, depth=4, embed_dim=64, num_heads=1, mlp_ratio=4.0, drop_rate=0.0,
                  attn_drop_rate=0.0, drop_path_rate=0.0, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1,
                  attn_l2_norm=True, flash_if_available=False, fused_if_available=False)
# Sampling defaults for the demo: upstream's cfg/top-p; top-k 900 exceeds the 256-entry vocabulary
# (the shared filter clamps it to V, i.e. no top-k filtering), so it is stated as 0 here.
SAMPLING_DEFAULTS = dict(cfg=1.5, top_k=0, top_p=0.96, more_smooth=False)


# ---------------------------------------------------------------- data
def load_digits_images(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 sklearn digits as images (N, 3, size, size) float32 in [-1, 1] and labels (N,) int64.

    8x8 values 0..16 -> /16 -> bicubic upsampling (align_corners=False) -> clamp to [0, 1] -> [-1, 1].
    The pixels come from `assets/demo/digits_8x8.npz`, an exact copy of scikit-learn's data set
    (so the demo's scoring works after a plain `pip install -e .`), else from scikit-learn.
    """
    images8, labels = load_digits_8x8()
    x = torch.from_numpy(images8).float().div(16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = x.mul(2).sub(1).expand(-1, 3, -1, -1).contiguous()
    return x, torch.from_numpy(labels).long()


@functools.lru_cache(maxsize=1)
def load_digits_8x8() -> tuple["np.ndarray", "np.ndarray"]:
    """sklearn's digits: images (1797, 8, 8) with integer values 0..16, labels (1797,) 0..9, as uint8.

    Read from the shipped copy (identical, checked by the tests; no sklearn import needed), else
    from `sklearn.datasets.load_digits`.
    """
    import numpy as np
    if DIGITS_COPY.is_file():
        with np.load(DIGITS_COPY) as z:
            return z["images"], z["labels"]
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SSGError(f"the digits data need {DIGITS_COPY} or scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.uint8)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of (B, C, H, W) by up to `max_shift` pixels in x and y (background -1 fills in)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


def train_test_split(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random split of range(n) into (train_idx, test_idx)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


# ---------------------------------------------------------------- classifier
class DigitsClassifier(nn.Module):
    """Small CNN on (B, 3, 16, 16) images in [-1, 1] (channels are averaged to grey; other sizes are resized).

    `features(x)` -> (B, 128): the penultimate activations, used for the Frechet distance and
    precision/recall; `forward(x)` -> (B, 10) logits, used for class-conditional accuracy.
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (IMAGE_SIZE // 8) ** 2, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        h = x.mean(dim=1, keepdim=True)                     # (B, 1, 16, 16)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)          # (B, 32, 8, 8)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)          # (B, 64, 4, 4)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)          # (B, 64, 2, 2)
        return F.relu(self.fc1(h.flatten(1)))               # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def load_classifier(device: str | torch.device = "cpu") -> DigitsClassifier:
    """The shipped digits classifier (eval mode, no grads)."""
    from ssg_core.hub import load_state_dict, load_strict
    _require(CLASSIFIER_CKPT)
    clf = DigitsClassifier()
    load_strict(clf, {k: v.float() for k, v in load_state_dict(CLASSIFIER_CKPT).items()}, "digits classifier checkpoint")
    return clf.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------- model
def build_demo(device: str | torch.device = "cpu", seed: int | None = 0, test_mode: bool = True):
    """Build the demo (vae, var) with the demo config; random init from `seed` (None: global RNG).

    `test_mode=True` returns them in eval mode without grads (for loading a checkpoint);
    `test_mode=False` leaves both trainable.
    """
    from VAR.models.basic_vae import Decoder, Encoder
    from VAR.models.var import VAR
    from VAR.models.vqvae import VQVAE

    if seed is not None:
        torch.manual_seed(seed)
    vae = VQVAE(**VAE_CONFIG, v_patch_nums=PATCH_NUMS, test_mode=False)
    # Upstream's VQVAE hard-codes an f16 encoder/decoder; swap in the same classes at f2.
    dd = dict(dropout=VAE_CONFIG["dropout"], ch=VAE_CONFIG["ch"], z_channels=VAE_CONFIG["z_channels"], in_channels=3,
              ch_mult=VAE_CH_MULT, num_res_blocks=VAE_NUM_RES_BLOCKS, using_sa=True, using_mid_sa=True)
    vae.encoder = Encoder(double_z=False, **dd)
    vae.decoder = Decoder(**dd)
    vae.downsample = 2 ** (len(VAE_CH_MULT) - 1)
    var = VAR(vae, patch_nums=PATCH_NUMS, **VAR_CONFIG)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    vae, var = vae.to(device), var.to(device)
    if test_mode:
        for m in (vae, var):
            m.eval().requires_grad_(False)
    return vae, var


def _require(path: Path) -> None:
    if not path.is_file():
        raise SSGError(f"demo checkpoint {path} is missing; it ships with the repository "
                       f"(re-create it with `python VAR/train_demo.py`)")


def load_demo(device: str | torch.device = "cpu"):
    """The shipped demo model: (vae, var) on `device`, eval mode, no grads, weights loaded strictly."""
    from ssg_core.hub import load_state_dict, load_strict
    for p in (VAE_CKPT, VAR_CKPT):
        _require(p)
    vae, var = build_demo("cpu", seed=None, test_mode=True)
    load_strict(vae, _to_model_dtypes(load_state_dict(VAE_CKPT), vae), "demo VQVAE checkpoint")
    load_strict(var, _to_model_dtypes(load_state_dict(VAR_CKPT), var), "demo VAR checkpoint")
    return vae.to(device).eval(), var.to(device).eval()


def load_recommended(path: Path | None = None) -> dict:
    """The recommended SSG setting for the demo (`assets/demo/eval/recommended.json`): its "ssg" entry holds
    beta, schedule, last_scales or from_scale, and the resulting per-scale "betas"; the rest records the
    sampling settings, the supporting numbers and the commands that reproduce them (docs/demo.md)."""
    import json
    path = RECOMMENDED if path is None else path
    try:
        rec = json.loads(Path(path).read_text())
        ssg = rec["ssg"]
        assert isinstance(ssg["betas"], list) and len(ssg["betas"]) == len(PATCH_NUMS)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise SSGError(f"{path} is missing or not a recommended-setting file; restore it from the repository") from None
    return rec


def _to_model_dtypes(sd: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Cast the (fp16-stored) tensors back to the module's own dtypes."""
    own = module.state_dict()
    return {k: (v.to(own[k].dtype) if k in own else v) for k, v in sd.items()}


def save_half(module: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a module's state dict as safetensors, floating tensors in fp16 (the shipped format), atomically."""
    from safetensors.torch import save
    from ssg_core.evaluation import _atomic_write
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in module.state_dict().items()}
    data = save(sd, metadata=metadata)
    _atomic_write(Path(path), lambda f: f.write(data))


# ---------------------------------------------------------------- sampling and scoring helpers
class LogitsHook:
    """A drop-in for the `ssg=` argument of `VAR.autoregressive_infer_cfg`, for experiments.

    Per scale k it applies, in this order: SSG (if `ssg` is given), then division by
    `temperature` (upstream VAR has no temperature; the paper sweeps one, so it is applied here,
    after SSG and before top-k/top-p), then `on_logits(k, logits, (h, w))` if given (e.g. to
    record a spectrum). Works with any VAR model, not only the demo.
    """

    def __init__(self, ssg=None, temperature: float = 1.0, on_logits=None):
        if not temperature > 0:
            raise SSGError(f"temperature must be positive, got {temperature}")
        self.ssg, self.temperature, self.on_logits = ssg, float(temperature), on_logits

    def reset(self, num_scales: int) -> None:
        if self.ssg is not None:
            self.ssg.reset(num_scales)

    def __call__(self, k: int, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.ssg is not None:
            logits = self.ssg(k, logits, size)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.on_logits is not None:
            self.on_logits(k, logits, size)
        return logits


@torch.no_grad()
def sample(var, labels: torch.Tensor, seed: int, hook=None, cfg: float = SAMPLING_DEFAULTS["cfg"],
           top_k: int = SAMPLING_DEFAULTS["top_k"], top_p: float = SAMPLING_DEFAULTS["top_p"],
           batch_size: int = 250, first_index: int = 0) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for class ids `labels` (N,).

    Image i draws from its own generator seeded with `image_seed(seed, first_index + i)`, so it
    does not depend on the batch size, and two settings with the same seed share their noise.
    """
    from ssg_core.evaluation import image_seed
    out = []
    for i in range(0, len(labels), batch_size):
        lab = labels[i:i + batch_size].to(var.lvl_1L.device)
        seeds = [image_seed(seed, first_index + j) for j in range(i, i + len(lab))]
        out.append(var.autoregressive_infer_cfg(len(lab), lab, g_seed=seeds, cfg=cfg, top_k=top_k, top_p=top_p,
                                                more_smooth=False, ssg=hook).float().cpu())
    return torch.cat(out)


class DigitsScorer:
    """Scores generated digits with the shipped classifier against the real data set.

    `score(images, labels)` with images (N, 3, H, W) in [0, 1] and requested classes (N,) ->
    dict(fd, accuracy, classifier_score, precision, recall).
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.clf = load_classifier(self.device)
        real, self.real_labels = load_digits_images()
        self.real_images = real
        self.real_feats = self.features(real)

    @torch.no_grad()
    def features(self, images_pm1: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.clf.features(images_pm1[i:i + 512].to(self.device)).cpu()
                          for i in range(0, len(images_pm1), 512)])

    @torch.no_grad()
    def score(self, images01: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return self.score_features(self.features(images01.float() * 2 - 1), labels)

    @torch.no_grad()
    def score_features(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """The metrics from the classifier features (N, 128) of the generated images (e.g. gathered from
        several processes) and their requested classes (N,)."""
        from VAR import metrics
        logits = self.clf.fc2(feats.to(self.device)).cpu()
        p, r = metrics.precision_recall(self.real_feats, feats, k=3)
        return {"fd": metrics.frechet_distance(self.real_feats, feats),
                "accuracy": metrics.class_accuracy(logits, labels),
                "classifier_score": metrics.classifier_score(logits.softmax(-1)),
                "precision": p, "recall": r}
