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


# ---------------------------------------------------------------- guided windows and schedule shapes
def _scale_counts() -> dict[str, int]:
    """K of every model's scale schedule, read from the models' own tables (HART's release config is not in
    the repository: its 14 scales (1,2,3,4,5,7,9,12,16,21,27,36,48,64) are from specs/hart.md, section 1)."""
    from Infinity.infinity.utils.dynamic_resolution import PN_LENGTHS, get_scale_schedule
    from VAR import demo
    from VAR.cli_args import PATCH_NUMS
    counts = {"demo": len(demo.PATCH_NUMS), "var-256": len(PATCH_NUMS[256]), "var-512": len(PATCH_NUMS[512]),
              "hart-0.7b": 14}
    counts |= {f"infinity-{pn}": len(get_scale_schedule(1.0, pn)) for pn in PN_LENGTHS}
    return counts


def test_scale_counts_of_the_models():
    assert _scale_counts() == {"demo": 6, "var-256": 10, "var-512": 10, "hart-0.7b": 14, "infinity-0.06M": 7,
                               "infinity-0.25M": 10, "infinity-0.60M": 12, "infinity-1M": 13}


def _documented(beta: float, shape: str, first: int, K: int) -> list[float]:
    """The class docstring's formulas, from exact fractions: n = K - first guided scales, j = 0..n-1."""
    from fractions import Fraction
    n = K - first
    weight = {"constant": lambda j: Fraction(1), "linear-decay": lambda j: Fraction(n - j, n),
              "linear-increase": lambda j: Fraction(j + 1, n)}[shape]
    return [0.0] * first + [float(Fraction(beta) * weight(j)) for j in range(n)]


@pytest.mark.parametrize("model, K", sorted(_scale_counts().items()))
@pytest.mark.parametrize("shape", ["constant", "linear-decay", "linear-increase"])
def test_windows_give_the_documented_betas_on_every_model(model, K, shape):
    beta = 0.7
    for n in range(1, K):  # the last n scales, and the same window written as "from scale K-n on"
        expected = _documented(beta, shape, K - n, K)
        last = SSG(beta, schedule=shape, from_scale=-n).betas(K)
        assert last == SSG(beta, schedule=shape, from_scale=K - n).betas(K)
        assert last == pytest.approx(expected, rel=1e-15, abs=0)  # a product and a division: <= 1 ulp apart
        assert last[:K - n] == [0.0] * (K - n) and max(last) == pytest.approx(beta, rel=1e-15)
    # the default window is every scale k >= 1, with the formulas in terms of k the README gives
    full = SSG(beta, schedule=shape).betas(K)
    assert full == SSG(beta, schedule=shape, from_scale=1).betas(K)
    by_k = {"constant": lambda k: beta, "linear-decay": lambda k: beta * (K - k) / (K - 1),
            "linear-increase": lambda k: beta * k / (K - 1)}[shape]
    assert full == [0.0] + [by_k(k) for k in range(1, K)]  # bit for bit: the formulas before windows existed


def test_window_examples_by_hand():
    assert SSG(0.3, from_scale=-1).betas(6) == [0, 0, 0, 0, 0, 0.3]
    assert SSG(0.6, schedule="linear-increase", from_scale=3).betas(6) == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6])
    assert SSG(0.6, schedule="linear-decay", from_scale=-3).betas(6) == pytest.approx([0, 0, 0, 0.6, 0.4, 0.2])
    assert SSG(0.5, from_scale=8).betas(10) == [0] * 8 + [0.5, 0.5]
    assert SSG(0.5, schedule="linear-decay", from_scale=-1).betas(13) == [0] * 12 + [0.5]  # one scale: beta itself


def test_window_guides_only_its_scales():
    logits = make_logits()  # 5 scales
    out = run(SSG(beta=0.5, from_scale=-2), logits)
    for k in range(3):
        assert torch.equal(out[k], logits[k])
    prior = dse(logits[2], SCALES[3], prev_size=SCALES[2])  # scale 2 is cached although not guided
    assert torch.equal(out[3], ssg_guide(logits[3], prior, 0.5))
    assert torch.equal(out[4], run(SSG(beta=[0, 0, 0, 0.5, 0.5]), logits)[4])


@pytest.mark.parametrize("kwargs, K, needle", [
    (dict(beta=0.5, from_scale=0), 6, "scale 0 is never guided"),
    (dict(beta=0.5, from_scale=6), 6, "cannot guide from scale 6 on: the model samples 6 scales (0..5)"),
    (dict(beta=0.5, from_scale=-6), 6, "cannot guide the last 6 scales: only 5 of the model's 6 scales"),
    (dict(beta=0.5, from_scale=-1), 1, "cannot guide the last 1 scales: only 0 of the model's 1 scales"),
    (dict(beta=[0, 0.5], from_scale=1), 2, "per-scale beta list already says which scales are guided"),
    (dict(beta=0.5, from_scale=1.5), 6, "from_scale must be an integer"),
    (dict(beta=0.5, from_scale=True), 6, "from_scale must be an integer"),
])
def test_window_errors(kwargs, K, needle):
    with pytest.raises(SSGError) as e:
        SSG(**kwargs).betas(K)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_repr_names_the_window_only_when_there_is_one():
    assert "from_scale" not in repr(SSG(0.5))  # reprs of existing runs' manifests stay the same
    assert "from_scale=-2" in repr(SSG(0.5, from_scale=-2))
