"""This project's VAR, Infinity and HART on the golden checkpoints, sampled as the golden cases say
(shared by tests/test_integrations.py and tests/test_upstream_checkouts.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


# ---------------------------------------------------------------- VAR
def load_var(golden: Path):
    """(vae, var, spec of the SSG case) from golden/var."""
    import VAR.models as models
    case = json.loads((golden / "var" / "case.json").read_text())
    b = case["var"]["d2"]["builder"]["kwargs"]
    vae, var = models.load_vae_var(golden / "var" / "vae_tiny.pth", golden / "var" / "var_tiny_d2.pth",
                                   depth=b["depth"], patch_nums=b["patch_nums"], shared_aln=b["shared_aln"],
                                   V=b["V"], Cvae=b["Cvae"], ch=b["ch"], num_classes=b["num_classes"])
    return vae, var, next(c for c in case["cases"] if c["file"] == "expected_ssg.npz")


def var_tokens(vae, var, spec: dict, B: int = 4, ssg=None, g_seed: int | None = None) -> list[torch.Tensor]:
    """Tokens (B, p_k^2) of every scale for the golden SSG case's settings (the image is not decoded)."""
    vae.fhat_to_img = lambda f: f.new_zeros(f.shape[0], 3, 1, 1)   # an instance attribute over the method
    try:
        with torch.inference_mode():
            _, tokens = var.autoregressive_infer_cfg(
                B, torch.tensor(spec["labels"][:B]), g_seed=spec["g_seed"] if g_seed is None else g_seed,
                cfg=spec["cfg"], top_k=spec["top_k"], top_p=spec["top_p"], ssg=ssg, return_tokens=True)
    finally:
        del vae.fhat_to_img
    return tokens


# ---------------------------------------------------------------- Infinity
def load_infinity(golden: Path):
    """(model, vae, expected_ssg.npz, case.json) from golden/infinity."""
    from Infinity.infinity.models.bsq_vae.vae import vae_model
    from Infinity.infinity.models.infinity import Infinity
    g = golden / "infinity"
    case = json.loads((g / "case.json").read_text())
    b = case["vae"]["builder_args"]
    vae = vae_model(str(g / "infinity_vae_tiny.pth"), b["schedule_mode"], b["codebook_dim"], b["codebook_size"],
                    patch_size=b["patch_size"], encoder_ch_mult=b["encoder_ch_mult"],
                    decoder_ch_mult=b["decoder_ch_mult"], base_ch=case["vae"]["base_ch_override"])
    kwargs = {k: v for k, v in case["transformer"]["constructor_kwargs"].items() if k != "vae_local"}
    model = Infinity(vae, **kwargs).eval().requires_grad_(False)
    model.load_state_dict(torch.load(str(g / "infinity_tiny.pth"), weights_only=True), strict=True)
    return model, vae, np.load(g / "expected_ssg.npz"), case


def infinity_schedule(case: dict, h_div_w: float | None = None) -> list[tuple[int, int, int]]:
    """The golden schedule, or the 0.06M schedule of another aspect-ratio template (as run_infinity builds it)."""
    if h_div_w is None:
        return [tuple(int(v) for v in s) for s in case["sampling"]["scale_schedule"]]
    from Infinity.infinity.utils.dynamic_resolution import dynamic_resolution_h_w
    return [(1, int(h), int(w)) for _, h, w in dynamic_resolution_h_w[h_div_w]["0.06M"]["scales"]]


def infinity_bits(model, vae, z, case: dict, ssg=None, g_seed: int | None = None,
                  h_div_w: float | None = None) -> list[torch.Tensor]:
    """Bit labels (B, h_k, w_k, d) of every scale for the golden call's settings (no image)."""
    label = (torch.from_numpy(z["kv_compact"]), z["lens"].tolist(), torch.from_numpy(z["cu_seqlens_k"]),
             int(z["max_seqlen_k"]))
    call = dict(case["sampling"]["autoregressive_infer_cfg_kwargs"], ret_img=False)
    if g_seed is not None:
        call["g_seed"] = g_seed
    schedule = infinity_schedule(case, h_div_w)
    call["cfg_list"], call["tau_list"] = [call["cfg_list"][0]] * len(schedule), [call["tau_list"][0]] * len(schedule)
    with torch.inference_mode():
        _, idx, _ = model.autoregressive_infer_cfg(vae=vae, scale_schedule=schedule, label_B_or_BLT=label, ssg=ssg,
                                                   **call)
    return [i[:, 0] for i in idx]


# ---------------------------------------------------------------- HART
def load_hart(golden: Path):
    """(model with the EMA weights, expected.npz, expected_ssg.npz) from golden/hart."""
    from hart.modules.models.transformer import HARTForT2I
    g = golden / "hart"
    return HARTForT2I.from_pretrained(g / "checkpoint" / "llm"), dict(np.load(g / "expected.npz")), \
        dict(np.load(g / "expected_ssg.npz"))


def hart_run(model, case: dict, B: int = 2, ssg=None, final_stage: int = 0, g_seed: int | None = None):
    """(image, trace) for the golden call's inputs and seeds; final_stage=1 skips the residual diffusion."""
    torch.manual_seed(int(case["torch_seed"]))
    np.random.seed(int(case["numpy_seed"]))
    trace: dict = {}
    with torch.inference_mode():
        image = model.autoregressive_infer_cfg(
            B=B, label_B=torch.from_numpy(case["context_tensor"][:B]),
            g_seed=int(case["g_seed"]) if g_seed is None else g_seed, cfg=float(case["cfg"]),
            context_position_ids=torch.from_numpy(case["context_position_ids"][:B]),
            context_mask=torch.from_numpy(case["context_mask"][:B]), final_stage=final_stage, ssg=ssg, trace=trace)
    return image, trace
