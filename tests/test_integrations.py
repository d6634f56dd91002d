"""`ssg_core.integrations.enable_ssg`: SSG inside an unmodified upstream sampling loop.

Two kinds of subjects, neither needing upstream code:
* the upstream-shaped stand-ins in `tests/upstream_standins` (same module paths, names, signatures and
  sampler calls as upstream's loops, tiny random networks): every SSG option, non-square schedules,
  restoring, refusals;
* this project's own VAR, Infinity and HART, which mirror upstream's module paths and names, on the
  golden checkpoints: the golden SSG reference reproduced through `enable_ssg`, and tokens identical
  to `ssg=` for per-scale beta lists with zeros mid-schedule and every option.
Real upstream checkouts: tests/test_upstream_checkouts.py (when SSG_UPSTREAM_* point to them).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch

from ssg_core import SSG
from ssg_core.errors import SSGError
from ssg_core.integrations import enable_ssg

import golden_models
import upstream_standins.infinity.models.infinity as standin_infinity
import upstream_standins.models as standin_models
import upstream_standins.models.var as standin_var
from upstream_standins.hart.modules.models.transformer import HARTForT2I as StandinHART
from upstream_standins.infinity.models.bsq_vae.vae import vae_model as standin_vae_model


def zeros_mid(K: int, beta: float = 0.5) -> list[float]:
    """A per-scale list with zeros mid-schedule: 0 at scale 0 and at every third scale, beta elsewhere."""
    return [0.0] + [0.0 if k % 3 == 0 else beta for k in range(1, K)]


# Every SSG option appears in at least one configuration; a config is a function of the number of scales.
CONFIGS = {
    "constant": lambda K: dict(beta=0.5),
    "list-bicubic-norescale-guided": lambda K: dict(beta=zeros_mid(K), mode="bicubic", rescale=False, cache="guided"),
    "decay-interp-area": lambda K: dict(beta=0.4, schedule="linear-decay", prior="interp", mode="area"),
    "increase-nearest": lambda K: dict(beta=0.7, schedule="linear-increase", mode="nearest"),
}


# ---------------------------------------------------------------- stand-ins
@pytest.fixture(scope="module")
def svar():
    torch.manual_seed(0)
    return standin_models.build_vae_var("cpu", V=64, Cvae=8, ch=16, patch_nums=(1, 2, 3, 4, 6), num_classes=10, depth=2)


def _svar_call(var, ssg=None, more_smooth=False):
    img = var.autoregressive_infer_cfg(3, torch.tensor([1, 2, 7]), g_seed=3, cfg=2.0, top_k=20, top_p=0.9,
                                       more_smooth=more_smooth, **({"ssg": ssg} if ssg is not None else {}))
    return img, [t.clone() for t in var.tokens]


@pytest.mark.parametrize("config, more_smooth", [(c, False) for c in CONFIGS] + [("constant", True)])
def test_standin_var_equals_direct_ssg(svar, config, more_smooth):
    """more_smooth reads the logits after the sampler filtered them: the hook guides them in place."""
    _, var = svar
    kw = CONFIGS[config](len(var.patch_nums))
    img_ref, tok_ref = _svar_call(var, SSG(**kw), more_smooth)
    with enable_ssg(var, SSG(**kw)):
        img, tok = _svar_call(var, None, more_smooth)
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_ref)) and torch.equal(img, img_ref)
    _, tok_plain = _svar_call(var, None, more_smooth)
    assert sum(int((a != b).sum()) for a, b in zip(tok, tok_plain)) > 0  # SSG did steer the sampling


def test_beta_zero_is_the_plain_sampling(svar):
    _, var = svar
    img_plain, tok_plain = _svar_call(var)
    with enable_ssg(var, SSG(beta=0.0)):
        img, tok = _svar_call(var)
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_plain)) and torch.equal(img, img_plain)


SCHEDULES = {
    "square": [(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4), (1, 6, 6)],
    "non-square": [(1, 1, 1), (1, 2, 3), (1, 3, 5), (1, 4, 8), (1, 5, 9)],   # upstream's first scale is 1x1
    "tall": [(1, 1, 1), (1, 3, 2), (1, 5, 3), (1, 7, 4)],
}


@pytest.fixture(scope="module")
def sinf():
    torch.manual_seed(1)
    vae = standin_vae_model("", "dynamic", 6, 2 ** 6)
    model = standin_infinity.Infinity(vae, text_channels=32, embed_dim=16).eval()
    lens = [3, 5]
    kv = torch.randn(sum(lens), 32)
    label = (kv, lens, torch.tensor([0, 3, 8], dtype=torch.int32), max(lens))
    return model, vae, label


def _sinf_call(sinf, schedule, ssg=None, **kw):
    model, vae, label = sinf
    K = len(schedule)
    args = dict(vae=vae, scale_schedule=schedule, label_B_or_BLT=label, B=2, g_seed=5, cfg_list=[3.0] * K,
                tau_list=[0.5] * K, top_k=900, top_p=0.97, returns_vemb=1, cfg_insertion_layer=[0], vae_type=6,
                ret_img=True)
    args.update(kw)
    _, idx, img = model.autoregressive_infer_cfg(**args, **({"ssg": ssg} if ssg is not None else {}))
    return [i.clone() for i in idx], img


@pytest.mark.parametrize("config, schedule", [("constant", "square"), ("list-bicubic-norescale-guided", "non-square"),
                                              ("decay-interp-area", "tall"), ("increase-nearest", "non-square")])
def test_standin_infinity_equals_direct_ssg(sinf, config, schedule):
    """The hook sees (B, h*w*d, 2) views and guides the (B, h*w, 2d) layout the direct call guides."""
    sched = SCHEDULES[schedule]
    kw = CONFIGS[config](len(sched))
    bits_ref, img_ref = _sinf_call(sinf, sched, SSG(**kw))
    with enable_ssg(sinf[0], SSG(**kw)):
        bits, img = _sinf_call(sinf, sched)
    assert all(torch.equal(a, b) for a, b in zip(bits, bits_ref)) and torch.equal(img, img_ref)
    bits_plain, _ = _sinf_call(sinf, sched)
    assert sum(int((a != b).sum()) for a, b in zip(bits, bits_plain)) > 0


def test_standin_infinity_token_logits_without_bit_labels(sinf):
    """use_bit_label=0: the sampler receives (B, h*w, V) token logits, which the hook guides as they are."""
    model, vae, label = sinf
    torch.manual_seed(3)
    tokens_model = standin_infinity.Infinity(vae, text_channels=32, embed_dim=16, use_bit_label=0).eval()
    sched, runs = SCHEDULES["non-square"], []
    for ssg, hooked in ((SSG(beta=0.5), False), (SSG(beta=0.5), True), (None, False)):
        with enable_ssg(tokens_model, ssg) if hooked else contextlib.nullcontext():
            runs.append(_sinf_call((tokens_model, vae, label), sched, None if hooked else ssg, ret_img=False)[0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert any(not torch.equal(a, b) for a, b in zip(runs[1], runs[2]))


def test_standin_infinity_trunk_scale_and_cfg_one(sinf):
    """trunk_scale stops the loop early (fewer sampler calls); cfg 1 at a scale skips CFG there."""
    sched = SCHEDULES["non-square"]
    extra = dict(trunk_scale=3, cfg_list=[3.0, 1.0, 3.0, 3.0, 3.0])
    bits_ref, _ = _sinf_call(sinf, sched, SSG(beta=0.6), **extra, ret_img=False)
    with enable_ssg(sinf[0], SSG(beta=0.6)):
        bits, _ = _sinf_call(sinf, sched, **extra, ret_img=False)
    assert len(bits) == 3 and all(torch.equal(a, b) for a, b in zip(bits, bits_ref))


@pytest.fixture(scope="module")
def shart():
    torch.manual_seed(2)
    model = StandinHART(context_dim=32, context_token=8).eval()
    ctx = torch.randn(2, 8, 32)
    return model, ctx


def _shart_call(shart, ssg=None, **kw):
    model, ctx = shart
    torch.manual_seed(0)   # the residual draws from the global generator, as upstream's diffusion head
    np.random.seed(0)
    img = model.autoregressive_infer_cfg(B=2, label_B=ctx, g_seed=1, cfg=4.5, **kw,
                                         **({"ssg": ssg} if ssg is not None else {}))
    return img, [t.clone() for t in model.tokens], model.residual.clone()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_standin_hart_equals_direct_ssg_and_leaves_the_residual_alone(shart, config):
    kw = CONFIGS[config](len(shart[0].patch_nums))
    img_ref, tok_ref, res_ref = _shart_call(shart, SSG(**kw))
    with enable_ssg(shart[0], SSG(**kw)):
        img, tok, res = _shart_call(shart)
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_ref))
    assert torch.equal(res, res_ref) and torch.equal(img, img_ref)


def test_hart_maskgit_steps_are_refused(shart):
    with enable_ssg(shart[0], SSG(beta=0.5)), pytest.raises(SSGError, match="num_maskgit_iters=2"):
        _shart_call(shart, num_maskgit_iters=2)


# ---------------------------------------------------------------- restoring and refusing
def _assert_restored(model, namespace, name, original):
    assert namespace[name] is original
    assert "autoregressive_infer_cfg" not in vars(model)


def test_everything_is_restored_on_exit_and_on_errors(svar):
    _, var = svar
    original = standin_var.sample_with_top_k_top_p_
    with enable_ssg(var, SSG(beta=0.5)) as m:
        assert m is var and standin_var.sample_with_top_k_top_p_ is not original
        assert "autoregressive_infer_cfg" in vars(var)
    _assert_restored(var, vars(standin_var), "sample_with_top_k_top_p_", original)
    with pytest.raises(KeyError), enable_ssg(var, SSG(beta=0.5)):   # an error in the block
        raise KeyError("boom")
    _assert_restored(var, vars(standin_var), "sample_with_top_k_top_p_", original)
    with pytest.raises(SSGError, match="beta list has 3 values"), enable_ssg(var, SSG(beta=[0, 0.5, 0.5])):
        _svar_call(var)                                              # refused before sampling
    _assert_restored(var, vars(standin_var), "sample_with_top_k_top_p_", original)


def test_restored_when_the_sampler_raises_mid_call(svar, monkeypatch):
    _, var = svar
    calls = []

    def failing(logits, **kw):
        calls.append(logits.shape[1])
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return standin_models.helpers.sample_with_top_k_top_p_(logits, **kw)

    monkeypatch.setattr(standin_var, "sample_with_top_k_top_p_", failing)
    with pytest.raises(RuntimeError, match="simulated"), enable_ssg(var, SSG(beta=0.5)):
        _svar_call(var)
    _assert_restored(var, vars(standin_var), "sample_with_top_k_top_p_", failing)
    assert calls == [1, 4, 9]
    monkeypatch.undo()
    with enable_ssg(var, SSG(beta=0.5)):   # usable again afterwards, and the SSG state starts fresh
        img, tok = _svar_call(var)
    img_ref, tok_ref = _svar_call(var, SSG(beta=0.5))
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_ref))


def test_other_instances_of_the_class_are_untouched(svar):
    vae, var = svar
    torch.manual_seed(7)
    other = standin_var.VAR(vae, num_classes=10, depth=2, patch_nums=(1, 2, 3, 4, 6))
    img_plain, tok_plain = _svar_call(other)
    with enable_ssg(var, SSG(beta=0.5)):
        img, tok = _svar_call(other)
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_plain)) and torch.equal(img, img_plain)


def test_nested_use_on_one_module_is_refused(svar):
    vae, var = svar
    other = standin_var.VAR(vae, num_classes=10, depth=2, patch_nums=(1, 2, 3, 4, 6))
    with enable_ssg(var, SSG(beta=0.5)):
        for model in (var, other):
            with pytest.raises(SSGError, match="already patched by another enable_ssg") as e:
                with enable_ssg(model, SSG(beta=0.2)):
                    pass
            assert "\n" not in str(e.value)
        img, tok = _svar_call(var)   # the outer context still works
    img_ref, tok_ref = _svar_call(var, SSG(beta=0.5))
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_ref))


def test_overlapping_calls_are_refused(svar, monkeypatch):
    """A call of the same model while one runs (from the loop itself, or from another thread) is refused."""
    _, var = svar
    errors = []
    real = standin_var.sample_with_top_k_top_p_

    def nested(logits, **kw):
        if not errors:
            for run in (lambda: _svar_call(var), lambda: _in_thread(lambda: _svar_call(var))):
                try:
                    run()
                except SSGError as e:
                    errors.append(str(e))
        return real(logits, **kw)

    monkeypatch.setattr(standin_var, "sample_with_top_k_top_p_", nested)
    with enable_ssg(var, SSG(beta=0.5)):
        img, tok = _svar_call(var)
    monkeypatch.undo()
    assert len(errors) == 2 and all("already running under this context" in e for e in errors)
    img_ref, tok_ref = _svar_call(var, SSG(beta=0.5))   # the first call was not disturbed
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_ref))


def _in_thread(fn):
    box = {}

    def run():
        try:
            box["out"] = fn()
        except BaseException as e:   # re-raised in the caller's thread
            box["err"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def test_other_threads_sampling_other_models_are_untouched(svar):
    vae, var = svar
    torch.manual_seed(7)
    other = standin_var.VAR(vae, num_classes=10, depth=2, patch_nums=(1, 2, 3, 4, 6))
    _, tok_plain = _svar_call(other)
    with enable_ssg(var, SSG(beta=0.5)):
        _, tok = _in_thread(lambda: _svar_call(other))
    assert all(torch.equal(a, b) for a, b in zip(tok, tok_plain))


# a checkout whose structure differs: the loop below calls a renamed sampler, or the sampler in another way
def renamed_sampler(logits, **kw):
    return standin_models.helpers.sample_with_top_k_top_p_(logits, **kw)


sample_with_top_k_top_p_ = standin_models.helpers.sample_with_top_k_top_p_


class RenamedSampler(standin_var.VAR):
    def autoregressive_infer_cfg(self, B, label_B, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False):
        return renamed_sampler(torch.zeros(B, 1, self.V))


class FlatCall(standin_var.VAR):
    def autoregressive_infer_cfg(self, B, label_B, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False):
        return [sample_with_top_k_top_p_(torch.zeros(1, B * pn * pn, self.V)) for pn in self.patch_nums]


class TooFewCalls(standin_var.VAR):
    def autoregressive_infer_cfg(self, B, label_B, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False):
        return [sample_with_top_k_top_p_(torch.zeros(B, pn * pn, self.V)) for pn in self.patch_nums[:2]]


sample_with_top_k_top_p_also_inplace_modifying_logits_ = standin_infinity.sample_with_top_k_top_p_also_inplace_modifying_logits_


class NoSchedule(standin_infinity.Infinity):
    def autoregressive_infer_cfg(self, vae=None, label_B_or_BLT=None, B=1):
        return sample_with_top_k_top_p_also_inplace_modifying_logits_(torch.zeros(B, 2, 2))


class Unrelated(torch.nn.Module):
    pass


@pytest.mark.parametrize("make, message", [
    (lambda vae: RenamedSampler(vae, num_classes=10, depth=1), "does not call a module-level `sample_with_top_k_top_p_`"),
    (lambda vae: NoSchedule(None), "has no argument scale_schedule"),
    (lambda vae: Unrelated(), "is not one of the supported models"),
])
def test_unexpected_structure_is_one_line_naming_the_upstream_commit(svar, make, message):
    model = make(svar[0])
    with pytest.raises(SSGError, match=message) as e:
        with enable_ssg(model, SSG(beta=0.5)):
            pass
    assert "\n" not in str(e.value)
    if not isinstance(model, Unrelated):
        assert ("78b9539" if isinstance(model, standin_var.VAR) else "4c27bbb") in str(e.value)


@pytest.mark.parametrize("cls, message", [
    (FlatCall, r"scale 0 \(1x1\): `sample_with_top_k_top_p_` received logits \(1, 3, 64\), expected \(B, 1, V\)"),
    (TooFewCalls, "was called 2 times for 5 scales"),
])
def test_a_sampler_call_that_does_not_fit_is_refused(svar, cls, message):
    model = cls(svar[0], num_classes=10, depth=1, patch_nums=(1, 2, 3, 4, 6))
    with pytest.raises(SSGError, match=message) as e:
        with enable_ssg(model, SSG(beta=0.5)):
            model.autoregressive_infer_cfg(3, None)
    assert "78b9539" in str(e.value) and "\n" not in str(e.value)
    assert globals()["sample_with_top_k_top_p_"] is standin_models.helpers.sample_with_top_k_top_p_
    assert "autoregressive_infer_cfg" not in vars(model)


def test_ssg_argument_inside_enable_ssg_is_refused(svar):
    with enable_ssg(svar[1], SSG(beta=0.5)), pytest.raises(SSGError, match="also passes ssg="):
        _svar_call(svar[1], SSG(beta=0.5))


def test_not_an_ssg_object_is_refused(svar):
    with pytest.raises(SSGError, match="expected an ssg_core.SSG"), enable_ssg(svar[1], 0.5):
        pass


# ---------------------------------------------------------------- this project's models, golden checkpoints
@pytest.fixture(scope="module")
def our_var(golden_dir):
    return golden_models.load_var(golden_dir)


def test_our_var_reproduces_the_golden_ssg_reference(our_var, golden_dir):
    import VAR.models.var as var_module
    vae, var, spec = our_var
    expected = np.load(golden_dir / "var" / "expected_ssg.npz")
    original = var_module.sample_with_top_k_top_p_
    with enable_ssg(var, SSG(beta=spec["ssg_beta"])):
        tokens = golden_models.var_tokens(vae, var, spec)
    for k, t in enumerate(tokens):
        np.testing.assert_array_equal(t.numpy(), expected[f"tokens_s{k}"], err_msg=f"tokens of scale {k}")
    _assert_restored(var, vars(var_module), "sample_with_top_k_top_p_", original)


def test_our_var_g_seed_list_is_refused(our_var):
    with enable_ssg(our_var[1], SSG(beta=0.5)), pytest.raises(SSGError, match="pass ssg= to this project's VAR"):
        our_var[1].autoregressive_infer_cfg(2, torch.tensor([1, 2]), g_seed=[1, 2])


@pytest.mark.parametrize("config", ["list-bicubic-norescale-guided"])   # the other options: stand-ins above
def test_our_var_enable_ssg_equals_ssg_argument(our_var, config):
    vae, var, spec = our_var
    kw = CONFIGS[config](len(var.patch_nums))
    ref = golden_models.var_tokens(vae, var, spec, B=1, ssg=SSG(**kw))
    with enable_ssg(var, SSG(**kw)):
        tokens = golden_models.var_tokens(vae, var, spec, B=1)
    assert all(torch.equal(a, b) for a, b in zip(tokens, ref))


@pytest.fixture(scope="module")
def our_infinity(golden_dir):
    return golden_models.load_infinity(golden_dir)


def test_our_infinity_reproduces_the_golden_ssg_reference(our_infinity):
    import Infinity.infinity.models.infinity as inf_module
    z = our_infinity[2]
    name = "sample_with_top_k_top_p_also_inplace_modifying_logits_"
    original = getattr(inf_module, name)
    with enable_ssg(our_infinity[0], SSG(beta=[float(b) for b in z["beta_list"]])):
        bits = golden_models.infinity_bits(*our_infinity)
    for k, b in enumerate(bits):
        np.testing.assert_array_equal(b.numpy(), z[f"bits_{k}"], err_msg=f"bits of scale {k}")
    _assert_restored(our_infinity[0], vars(inf_module), name, original)


@pytest.mark.parametrize("config, h_div_w", [("list-bicubic-norescale-guided", None), ("decay-interp-area", 0.5)])
def test_our_infinity_enable_ssg_equals_ssg_argument(our_infinity, config, h_div_w):
    """Also on a non-square schedule: the 0.06M schedule of the h/w = 0.5 template, last grid 11x22."""
    kw = CONFIGS[config](len(golden_models.infinity_schedule(our_infinity[3], h_div_w)))
    ref = golden_models.infinity_bits(*our_infinity, ssg=SSG(**kw), h_div_w=h_div_w)
    with enable_ssg(our_infinity[0], SSG(**kw)):
        bits = golden_models.infinity_bits(*our_infinity, h_div_w=h_div_w)
    assert all(torch.equal(a, b) for a, b in zip(bits, ref))


@pytest.fixture(scope="module")
def our_hart(golden_dir):
    return golden_models.load_hart(golden_dir)


def test_our_hart_reproduces_the_golden_ssg_reference_with_the_residual(our_hart):
    import hart.modules.models.transformer.hart_transformer_t2i as hart_module
    model, case, expected = our_hart
    original = hart_module.sample_with_top_k_top_p_
    with enable_ssg(model, SSG(beta=[float(b) for b in expected["ssg_beta"]])):
        image, trace = golden_models.hart_run(model, case)
    for k, t in enumerate(trace["tokens"]):
        np.testing.assert_array_equal(t.numpy(), expected[f"tokens_s{k}"], err_msg=f"tokens of scale {k}")
    # the residual diffusion ran untouched on those tokens; bounds from the golden README ("What must match")
    np.testing.assert_allclose(trace["residual"][0].numpy(), expected["residual"], rtol=0, atol=1e-2)
    np.testing.assert_allclose(image.numpy(), expected["image"], rtol=0, atol=1e-3)
    _assert_restored(model, vars(hart_module), "sample_with_top_k_top_p_", original)


@pytest.mark.parametrize("config", ["list-bicubic-norescale-guided"])
def test_our_hart_enable_ssg_equals_ssg_argument(our_hart, monkeypatch, config):
    model, case, _ = our_hart
    monkeypatch.setattr(model.vae_proxy[0], "fhat_to_img", lambda f: f.new_zeros(f.shape[0], 3, 1, 1))  # no decoding
    kw = CONFIGS[config](len(model.patch_nums))
    _, ref = golden_models.hart_run(model, case, B=1, ssg=SSG(**kw), final_stage=1)
    with enable_ssg(model, SSG(**kw)):
        _, trace = golden_models.hart_run(model, case, B=1, final_stage=1)
    assert all(torch.equal(a, b) for a, b in zip(trace["tokens"], ref["tokens"]))


def test_our_hart_maskgit_steps_are_refused_before_sampling(our_hart):
    with enable_ssg(our_hart[0], SSG(beta=0.5)), pytest.raises(SSGError, match="num_maskgit_iters=2"):
        our_hart[0].autoregressive_infer_cfg(B=1, label_B=torch.zeros(1, 300, 1536), num_maskgit_iters=2)
