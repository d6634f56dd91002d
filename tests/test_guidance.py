"""The guidance algebra and the SSG object's state: betas, caching, dtypes, errors."""
import pytest
import torch

from ssg_core import SSG, SSGError, dse, ssg_guide

SCALES = [(1, 1), (2, 2), (3, 3), (4, 4), (6, 6)]


def run(ssg, logits_per_scale, filter_inplace=False):
    ssg.reset(len(logits_per_scale))
    out = []
    for k, (lg, size) in enumerate(zip(logits_per_scale, SCALES)):
        g = ssg(k, lg, size)
        out.append(g.clone())
        if filter_inplace:  # what top-k does to the tensor the sampler holds
            g.masked_fill_(g < g.median(), -torch.inf)
    return out


def make_logits(B=2, C=16, dtype=torch.float32):
    torch.manual_seed(1)
    return [torch.randn(B, h * w, C).to(dtype) for h, w in SCALES]


def test_guide_algebra():
    l, p = torch.randn(2, 9, 5), torch.randn(2, 9, 5)
    assert torch.equal(ssg_guide(l, p, 0.5), l + (l - p) * 0.5)
    assert torch.allclose(ssg_guide(l, p, 2.0), 3 * l - 2 * p, atol=1e-6)  # two float32 orders: rtol 1e-5 covers them
    assert torch.equal(ssg_guide(l, p, 0.0), l)
    assert torch.equal(ssg_guide(l, l, 7.0), l)  # a perfect prior leaves the logits alone


def test_beta_zero_returns_input_untouched_and_caches_nothing():
    logits = make_logits()
    ssg = SSG(beta=0.0)
    ssg.reset(len(SCALES))
    for k, (lg, size) in enumerate(zip(logits, SCALES)):
        assert ssg(k, lg, size) is lg
        assert ssg._prev is None
    assert not ssg.enabled


def test_scale_zero_is_never_guided_and_later_scales_follow_the_formula():
    logits = make_logits()
    out = run(SSG(beta=0.5), logits)
    assert torch.equal(out[0], logits[0])
    for k in range(1, len(SCALES)):
        prior = dse(logits[k - 1], SCALES[k], prev_size=SCALES[k - 1])
        assert torch.equal(out[k], ssg_guide(logits[k], prior, 0.5))


def test_cache_is_a_clone_unaffected_by_inplace_filtering():
    logits = make_logits()
    clean = run(SSG(beta=0.5), [l.clone() for l in logits])
    filtered = run(SSG(beta=0.5), [l.clone() for l in logits], filter_inplace=True)
    for a, b in zip(clean, filtered):
        assert torch.equal(a, b)
        assert torch.isfinite(b).all()


def test_cache_guided_uses_the_guided_logits_as_prev():
    logits = make_logits()
    raw = run(SSG(beta=0.5, cache="raw"), logits)
    guided = run(SSG(beta=0.5, cache="guided"), logits)
    assert torch.equal(raw[1], guided[1])  # scale 0 is not guided, so both caches agree at scale 1
    prior = dse(guided[1], SCALES[2], prev_size=SCALES[1])
    assert torch.equal(guided[2], ssg_guide(logits[2], prior, 0.5))
    assert not torch.equal(raw[2], guided[2])


def test_per_scale_list_and_schedules():
    logits = make_logits()
    betas = [0, 0.5, 0, 0.25, 1.0]
    out = run(SSG(beta=betas), logits)
    assert torch.equal(out[2], logits[2])
    prior = dse(logits[2], SCALES[3], prev_size=SCALES[2])
    assert torch.equal(out[3], ssg_guide(logits[3], prior, 0.25))
    assert SSG(0.6).betas(4) == [0, 0.6, 0.6, 0.6]
    assert SSG(0.6, schedule="linear-decay").betas(4) == pytest.approx([0, 0.6, 0.4, 0.2])
    assert SSG(0.6, schedule="linear-increase").betas(4) == pytest.approx([0, 0.2, 0.4, 0.6])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_keep_their_dtype(dtype):
    ref = run(SSG(beta=0.5), make_logits())
    out = run(SSG(beta=0.5), make_logits(dtype=dtype))
    for a, b in zip(ref, out):
        assert b.dtype == dtype
        assert torch.allclose(a, b.float(), atol=0.1, rtol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    ref = run(SSG(beta=0.5), make_logits())
    out = run(SSG(beta=0.5), [l.cuda() for l in make_logits()])
    for a, b in zip(ref, out):
        assert b.device.type == "cuda"
        assert torch.allclose(a, b.cpu(), atol=1e-4)


def test_errors():
    with pytest.raises(SSGError, match="3 values but the model samples 5"):
        SSG(beta=[0, 0.5, 0.5]).reset(5)
    with pytest.raises(SSGError, match="finite"):
        SSG(beta=float("nan"))
    with pytest.raises(SSGError, match="finite"):
        SSG(beta=[0, float("inf")])
    with pytest.raises(SSGError, match="beta\\[0\\] must be 0"):
        SSG(beta=[0.5, 0.5])
    with pytest.raises(SSGError, match="schedule"):
        SSG(beta=0.5, schedule="cosine")
    with pytest.raises(SSGError, match="cache"):
        SSG(beta=0.5, cache="filtered")
    ssg = SSG(beta=0.5)
    with pytest.raises(SSGError, match="reset"):
        ssg(0, torch.randn(1, 1, 4), (1, 1))
    ssg.reset(3)
    ssg(0, torch.randn(1, 4, 4), (2, 2))
    with pytest.raises(SSGError, match="shrinking"):
        ssg(1, torch.randn(1, 1, 4), (1, 1))
    with pytest.raises(SSGError, match="do not hold"):
        ssg(1, torch.randn(1, 5, 4), (2, 2))
    with pytest.raises(SSGError, match="positive"):
        ssg(1, torch.randn(1, 4, 4), (-2, -2))
