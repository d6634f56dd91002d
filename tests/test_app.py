"""The web demo's functions without a browser (`scripts/app.py`): the comparison on the demo model, the model
menu's download status, the three model families through the samplers' own loading code (VAR on the golden
checkpoints, Infinity and HART on tiny random ones), one-line errors, and the command line without Gradio.
The browser test is tests/test_app_browser.py."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssg_core import SSG
from ssg_core.errors import SSGError
from ssg_core.guidance import SCHEDULES
from test_hart_sample import _base as _hart_flags, tiny_root  # noqa: F401  (a fixture, shared)
from test_infinity_cli import tiny  # noqa: F401  (a fixture, shared)

REPO = Path(__file__).resolve().parents[1]
DIGITS = "0,1,2,3"


@pytest.fixture(scope="module")
def app():
    """scripts/app.py as a module, loaded once for this file (conftest's load_script loads it per test)."""
    with pytest.MonkeyPatch.context() as mp:
        spec = importlib.util.spec_from_file_location("script_app", REPO / "scripts" / "app.py")
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, "script_app", module)  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module


@pytest.fixture(scope="module")
def demo_app(app):
    return app.App(torch.device("cpu"))


@pytest.fixture(scope="module")
def demo_comparison(app):
    """(comparison of digits 0-3 at seed 3, beta 0.5; the progress calls it made, loading included; its App)."""
    progress = []
    a = app.App(torch.device("cpu"))
    c = a.compare("demo", DIGITS, _settings(app, seed=3), lambda i, n, desc: progress.append((i, n)))
    return c, progress, a


def _settings(app, **kw):
    base = dict(seed=0, cfg=1.5, top_k=0, top_p=0.96, beta="0.5")
    return app.Settings(**{**base, **kw})


# ---------------------------------------------------------------- the comparison, on the shipped demo model
def test_demo_comparison_matches_the_sampler_bit_for_bit(demo_comparison):
    """The recording hook changes nothing: baseline = sampling with ssg=None, SSG = sampling with the SSG alone."""
    c, progress, a = demo_comparison
    var = a.loaded["demo"].var
    labels = torch.tensor([0, 1, 2, 3])
    with torch.inference_mode():
        base, base_tok = var.autoregressive_infer_cfg(4, labels, g_seed=3, cfg=1.5, top_k=0, top_p=0.96,
                                                      return_tokens=True)
        ssg, ssg_tok = var.autoregressive_infer_cfg(4, labels, g_seed=3, cfg=1.5, top_k=0, top_p=0.96,
                                                    ssg=SSG(beta=0.5), return_tokens=True)
    assert torch.equal(c.baseline.images, base) and torch.equal(c.guided.images, ssg)
    assert all(torch.equal(a, b) for a, b in zip(c.baseline.tokens, base_tok))
    assert all(torch.equal(a, b) for a, b in zip(c.guided.tokens, ssg_tok))
    K = len(var.patch_nums)
    assert c.betas == [0.0] + [0.5] * (K - 1)
    # scale 0 is never guided: same logits, same tokens; later scales are moved and change tokens
    assert c.logit_change[0] == 0 and all(v > 0 for v in c.logit_change[1:])
    assert c.token_change[0] == 0 and c.token_change[-1] > 0
    assert c.token_change == [float((a != b).float().mean()) for a, b in zip(base_tok, ssg_tok)]
    # the progress bar: loading, then every scale of both runs, in order
    assert progress[0] == (0, 1) and progress[1:] == [(i, 2 * K) for i in range(1, 2 * K + 1)]


def test_strip_is_the_multiscale_decoding_and_ends_at_the_image(app, demo_comparison):
    c = demo_comparison[0]
    K = len(c.grids)
    for run in (c.baseline, c.guided):
        assert len(run.scales) == K and all(x.shape == run.images.shape[1:] for x in run.scales)
        # last cell = the returned first image (same f_hat, decoded the same way): float32 rounding only
        assert torch.allclose(run.scales[-1], run.images[0], atol=1e-5)
        assert all(not torch.equal(a, b) for a, b in zip(run.scales, run.scales[1:]))  # each scale adds something
    # scale 0 is never guided and draws the same token from the same seed: same first cell in both rows
    assert torch.equal(c.baseline.scales[0], c.guided.scales[0])
    assert not torch.equal(c.baseline.scales[-1], c.guided.scales[-1])
    strip = app.strip_image(c.baseline.scales, c.guided.scales)
    assert strip.shape == (2 * app.CELL + 3 * 4, K * app.CELL + (K + 1) * 4, 3) and strip.dtype == np.uint8
    assert strip[4:4 + app.CELL, 4:4 + app.CELL].std() > 0  # a picture, not padding


def test_beta_zero_makes_ssg_the_baseline_and_the_page_says_so(app, demo_app):
    c = demo_app.compare("demo", DIGITS, _settings(app, beta="0"), strip=False)
    assert c.guided is c.baseline and c.token_change == [0.0] * len(c.grids) and c.logit_change == [0.0] * len(c.grids)
    assert "every beta is 0" in app.summary(demo_app.catalog["demo"], c)


def test_ssg_options_reach_the_hook(app, demo_app):
    """Schedule and DSE options come through ssg_core.cli.make_ssg: a list, a schedule, another prior change
    the betas or the tokens."""
    K = 6
    ssg, betas = app.build_ssg(_settings(app, beta="1", beta_schedule="linear-increase"), K)
    assert betas == pytest.approx([0.0] + [k / (K - 1) for k in range(1, K)]) and ssg.schedule == "linear-increase"
    ssg, _ = app.build_ssg(_settings(app, dse_mode="area", rescale=False, prior="interp", cache="guided"), K)
    assert (ssg.mode, ssg.rescale, ssg.prior, ssg.cache) == ("area", False, "interp", "guided")
    assert app.build_ssg(_settings(app, beta="0"), K) == (None, [0.0] * K)
    _, betas = app.build_ssg(_settings(app, beta="0.6", beta_schedule="linear-increase", last_scales=2), K)
    assert betas == pytest.approx([0, 0, 0, 0, 0.3, 0.6])  # the window of --beta-last-scales, shape spread over it
    listed = demo_app.compare("demo", DIGITS, _settings(app, beta="0, 0, 0, 0, 0, 1"), strip=False)
    assert listed.logit_change[:5] == [0.0] * 5 and listed.logit_change[5] > 0 and listed.token_change[:5] == [0.0] * 5
    interp = demo_app.compare("demo", DIGITS, _settings(app, prior="interp"), strip=False)
    dse = demo_app.compare("demo", DIGITS, _settings(app), strip=False)
    assert not torch.equal(dse.guided.images, interp.guided.images)
    assert torch.equal(dse.baseline.images, interp.baseline.images)


@pytest.mark.parametrize("kw, condition, message", [
    (dict(beta="0, 0.5"), DIGITS, "beta list has 2 values but the model samples 6 scales"),
    (dict(beta="0, nan, 1, 1, 1, 1"), DIGITS, "must be a finite number"),
    (dict(beta="abc"), DIGITS, "expected a number or a comma-separated list"),
    (dict(beta="1, 0.5, 0.5, 0.5, 0.5, 0.5"), DIGITS, "beta[0] must be 0"),
    (dict(beta="0,1,1,1,1,1", beta_schedule="linear-decay"), DIGITS, "cannot be combined with a beta schedule"),
    (dict(), "3, 12", "unknown class id 12 (this model has classes 0..9)"),
    (dict(), "three", "expected comma-separated class ids"),
    (dict(), ",".join(["1"] * 17), "at most 16 class ids"),
    (dict(top_p=1.5), DIGITS, "top-p must be between 0 and 1"),
    (dict(cfg=float("inf")), DIGITS, "cfg: give a finite number"),
    (dict(seed=None), DIGITS, "seed: give a finite number"),
    (dict(seed=-1), DIGITS, "seed must be an integer >= 0"),
    (dict(dse_mode="lanczos"), DIGITS, "unknown DSE interpolation mode"),
    (dict(last_scales=1.5), DIGITS, "guided scales must be a whole number"),
    (dict(last_scales=6), DIGITS, "cannot guide the last 6 scales"),
    (dict(beta="0,1,1,1,1,1", last_scales=1), DIGITS, "a per-scale --beta list already says which scales"),
])
def test_bad_input_is_one_line(app, demo_app, kw, condition, message):
    with pytest.raises(SSGError) as e:
        demo_app.compare("demo", condition, _settings(app, **kw))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_pictures_and_plot(app, demo_comparison):
    c = demo_comparison[0]
    grid = app.grid_image(c.baseline.images)  # 16 px digits shown at 256 px, 2 x 2, 4 px gaps
    assert grid.shape == (2 * 256 + 3 * 4, 2 * 256 + 3 * 4, 3) and grid.std() > 10
    assert app.grid_image(torch.rand(10, 3, 16, 16)).shape[:2] == (3 * 256 + 4 * 4, 4 * 256 + 5 * 4)
    fig = app.change_plot(c)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx(c.logit_change)
    assert list(fig.axes[1].lines[0].get_ydata()) == pytest.approx([100 * v for v in c.token_change])


# ---------------------------------------------------------------- the menu: what is on this machine
def _fake_hf_cache(root, repo_id: str, files: list[str]):
    """A Hugging Face cache entry as huggingface_hub writes it: refs/main names the snapshot holding the files."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    snap = folder / "snapshots" / ("0" * 40)
    for f in files:
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        (snap / f).write_bytes(b"x")
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)


def test_menu_status_reads_the_hf_cache_without_downloading(app, tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    catalog = app.default_catalog()
    assert {"demo", "var-d16", "var-d20", "var-d24", "var-d30", "var-d36", "infinity-125m", "infinity-2b",
            "infinity-8b", "hart-0.7b"} <= set(catalog)
    ok, text = app.model_status(catalog["var-d16"], None)
    assert not ok and "`python scripts/download.py --model var-d16`" in text
    _fake_hf_cache(tmp_path, "FoundationVision/var", ["vae_ch160v4096z32.pth", "var_d16.pth"])
    assert app.model_status(catalog["var-d16"], None) == (True, "downloaded (Hugging Face cache)")
    assert not app.model_status(catalog["var-d20"], None)[0]  # the VAE alone is not the model
    # a whole repository counts when its snapshot holds the literal patterns (HART: llm/config.json, ...)
    _fake_hf_cache(tmp_path, "mit-han-lab/hart-0.7b-1024px", ["llm/config.json", "tokenizer/config.json"])
    _fake_hf_cache(tmp_path, "mit-han-lab/Qwen2-VL-1.5B-Instruct", ["config.json", "model.safetensors"])
    ok, text = app.model_status(catalog["hart-0.7b"], None)
    assert not ok and "hart-0.7b-1024px" in text  # llm/ema_model.bin is missing
    _fake_hf_cache(tmp_path, "mit-han-lab/hart-0.7b-1024px", ["llm/ema_model.bin"])
    assert app.model_status(catalog["hart-0.7b"], None)[0]
    assert app.model_status(catalog["demo"], None) == (True, "ships with the repository")


def test_menu_status_in_ckpt_dir_and_a_click_never_downloads(app, tmp_path, monkeypatch):
    import huggingface_hub
    calls = []
    for name in ("hf_hub_download", "snapshot_download"):  # what a download would go through
        monkeypatch.setattr(huggingface_hub, name, lambda *a, **k: calls.append(a) or 1 / 0)
    a = app.App(torch.device("cpu"), ckpt_dir=tmp_path)
    with pytest.raises(SSGError) as e:
        a.compare("var-d20", "1", _settings(app))
    assert str(e.value).startswith("var-d20 is not downloaded") and \
        f"`python scripts/download.py --model var-d20 --ckpt-dir {tmp_path}`" in str(e.value)
    (tmp_path / "flan-t5-xl").mkdir()
    (tmp_path / "flan-t5-xl" / "config.json").write_text("{}")
    for f in ("infinity_125M_256x256.pth", "infinity_vae_d16.pth"):
        (tmp_path / f).write_bytes(b"x")
    assert app.model_status(a.catalog["infinity-125m"], tmp_path)[0]
    assert not app.model_status(a.catalog["infinity-2b"], tmp_path)[0]
    assert calls == []
    with pytest.raises(SSGError, match="unknown model 'var-d99'"):
        a.compare("var-d99", "1", _settings(app))


def test_catalog_flags_select_the_published_models(app):
    """The menu's Infinity flags pick the preset that downloads the same files (ssg_core.hub.MODELS name)."""
    from Infinity.tools.run_infinity import PRESETS
    for entry in app.default_catalog().values():
        if entry.family == "infinity":
            assert PRESETS[entry.flags[1]].hub == entry.name
    d = app.sampling_defaults(app.default_catalog()["infinity-8b"])
    assert (d["cfg"], d["top_k"], d["top_p"]) == (3.0, 900, 0.97)  # upstream's published 8B settings
    assert app.sampling_defaults(app.default_catalog()["hart-0.7b"])["cfg"] == 4.5


# ---------------------------------------------------------------- the samplers' loading code, on small checkpoints
def test_var_through_the_sampler_loading_reproduces_the_golden_tokens(app, golden_dir):
    """A VAR entry loads with VAR/cli_args.py (explicit files: architecture read from them) and, through the
    recording hook, samples upstream's SSG tokens for the golden case (the baseline's pass-through: the demo test)."""
    g = golden_dir / "var"
    entry = app.Entry("var-tiny", "var", "tiny", ("--vae-ckpt", str(g / "vae_tiny.pth"), "--var-ckpt",
                                                   str(g / "var_tiny_d2.pth")))
    a = app.App(torch.device("cpu"), catalog={"var-tiny": entry})
    spec = json.loads((g / "case.json").read_text())["cases"][1]
    m = a.model("var-tiny")
    s = _settings(app, seed=spec["g_seed"], cfg=spec["cfg"], top_k=spec["top_k"], top_p=spec["top_p"])
    rec = app.ScaleRecorder(SSG(beta=spec["ssg_beta"]))
    run = m.run(m.parse_condition(",".join(map(str, spec["labels"]))), s, rec, strip=False)  # decoding: demo tests
    expected = np.load(g / "expected_ssg.npz")
    for k, tok in enumerate(run.tokens):
        np.testing.assert_array_equal(tok.numpy(), expected[f"tokens_s{k}"], err_msg=f"scale {k}")
    assert rec.change[0] == 0 and all(v > 0 for v in rec.change[1:])


def test_var_menu_entry_from_ckpt_dir_that_holds_the_wrong_model_is_one_line(app, golden_dir, tmp_path):
    """var-d16 found in --ckpt-dir (status: downloaded) but the file holds another depth: the loader's message."""
    (tmp_path / "vae_ch160v4096z32.pth").symlink_to(golden_dir / "var" / "vae_tiny.pth")
    (tmp_path / "var_d16.pth").symlink_to(golden_dir / "var" / "var_tiny_d2.pth")
    a = app.App(torch.device("cpu"), ckpt_dir=tmp_path)
    assert app.model_status(a.catalog["var-d16"], tmp_path)[0]
    with pytest.raises(SSGError, match="holds a depth-2 VAR, but var-d16"):
        a.compare("var-d16", "1", _settings(app))


def test_infinity_through_the_sampler(app, infinity_tiny):
    """Infinity through Infinity/tools/run_infinity.py: the app's SSG run is the sampler's image, and the strip
    (the bits re-accumulated and decoded after each scale) ends at it."""
    from Infinity.tools import run_infinity as R
    entry = app.Entry("infinity-tiny", "infinity", "tiny", tuple(infinity_tiny))
    a = app.App(torch.device("cpu"), catalog={"infinity-tiny": entry})
    m = a.model("infinity-tiny")
    rec = app.ScaleRecorder(SSG(beta=0.5))
    run = m.run("a photo of a cat", _settings(app, seed=1, cfg=3.0, top_k=900, top_p=0.97), rec)
    guided = R.sample(dataclasses.replace(m.setup, cfg_list=[3.0] * len(m.grids)), m.args, "a photo of a cat", 1,
                      SSG(beta=0.5))
    assert np.array_equal((run.images[0] * 255).round().byte().permute(1, 2, 0).numpy(), guided)
    # the sampler converts to uint8 by truncation: the strip's last cell (float) is within one step of it
    assert (run.scales[-1] - run.images[0]).abs().max() <= 1 / 255 + 1e-6
    assert len(run.scales) == len(m.grids) == len(run.tokens) and not torch.equal(run.scales[0], run.scales[-1])
    h, w = m.grids[-1]
    assert run.tokens[-1].shape[:2] == (1, h * w) and rec.change[0] == 0 and rec.change[-1] > 0


def test_hart_through_the_sampler(app, hart_tiny):
    from hart import sample as H
    entry = app.Entry("hart-tiny", "hart", "tiny", tuple(hart_tiny))
    a = app.App(torch.device("cpu"), catalog={"hart-tiny": entry})
    c = a.compare("hart-tiny", "a red heart", _settings(app, seed=2, cfg=4.5, top_k=0, top_p=0.0))
    m = a.loaded["hart-tiny"]
    args = H.build_parser().parse_args([*hart_tiny, "--beta", "0.5"])
    sampler = H.Sampler(args, m.model, m.tokenizer, m.text_model, torch.device("cpu"))
    enc = sampler.encode(["a red heart"])
    assert torch.equal(c.baseline.images, sampler.sample(enc, 2, False))
    assert torch.equal(c.guided.images, sampler.sample(enc, 2, True))
    assert not torch.equal(c.baseline.images, c.guided.images)
    assert torch.equal(c.guided.scales[-1], c.guided.images[0])  # the last f_hat, decoded the same way
    assert len(c.guided.scales) == len(c.grids) == 4
    with pytest.raises(SSGError, match=r"top_p must be in \[0, 1\)"):
        a.compare("hart-tiny", "a red heart", _settings(app, top_p=1.0))
    with pytest.raises(SSGError, match="give a prompt"):
        a.compare("hart-tiny", "  ", _settings(app))


@pytest.fixture(scope="module")
def infinity_tiny(tiny):
    """The tiny Infinity of tests/test_infinity_cli.py (transformer, VAE, T5 in the official formats): its flags."""
    return tiny[1]


@pytest.fixture(scope="module")
def hart_tiny(tiny_root):
    """The tiny HART of tests/test_hart_sample.py (llm/, tokenizer/, a Qwen2 text encoder): its flags."""
    return _hart_flags(tiny_root)


# ---------------------------------------------------------------- the command line and the page
def test_without_gradio_the_app_says_how_to_install_it(app, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # main sets both for its process: restored after the test
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    with pytest.raises(SystemExit) as e:
        app.main(["--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == 'error: the web demo needs Gradio: pip install -e ".[app]"\n'


@pytest.mark.parametrize("argv, message", [(["--port", "70000"], "--port must be between 1 and 65535"),
                                           (["--ckpt-dir", "/nonexistent/ckpt"], "is not a folder"),
                                           (["--device", "cuda:7"], None)])
def test_command_line_mistakes_are_one_line(app, argv, message, capsys):
    if message is None and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as e:
        app.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert message is None or message in err


def test_a_port_in_use_is_one_line(app, monkeypatch, capsys):
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e \".[app]\")")
    import socket
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main sets both for its process: restored after the test
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            app.main(["--port", str(port), "--device", "cpu"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: cannot serve on 127.0.0.1:{port} (in use); try another --port\n"


def test_page_offers_every_schedule_and_option(load_script, tmp_path, monkeypatch):
    """The schedule menu is ssg_core.guidance.SCHEDULES (a schedule added there appears without a change here);
    a model whose weights are missing says so in the menu."""
    gr = pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e \".[app]\")")
    import huggingface_hub.constants

    import ssg_core.guidance
    monkeypatch.setattr(ssg_core.guidance, "SCHEDULES", (*SCHEDULES, "some-new-schedule"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    app = load_script("scripts/app.py")
    ui = app.build_ui(app.App(torch.device("cpu")))
    by_id = {b.elem_id: b for b in ui.blocks.values() if getattr(b, "elem_id", None)}
    assert [c[1] for c in by_id["schedule"].choices] == [*SCHEDULES, "some-new-schedule"]
    labels = {v: k for k, v in by_id["model"].choices}
    assert labels["var-d36"].endswith("(not downloaded)") and not labels["demo"].endswith("(not downloaded)")
    assert {"baseline", "ssg", "strip", "plot", "status", "run", "classes", "prompt", "betas", "seed"} <= set(by_id)
    assert all(isinstance(by_id[k], gr.Image) and by_id[k].format == "png" for k in ("baseline", "ssg", "strip"))
