"""VAR/sample_ssg.py end to end on the tiny golden checkpoints, and its one-line errors.

The sampler seeds one generator per batch (upstream's g_seed), so with the golden case's
classes and seed it must reproduce upstream's images: `--compare --beta 0.5` writes the
plain case (top row) and the SSG reference case (bottom row) into one grid.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from VAR import cli_args as C
from VAR import sample_ssg

REPO = Path(__file__).resolve().parents[1]
PAD = 2  # save_grid's padding


def golden_ckpts(golden_dir: Path) -> list[str]:
    d = golden_dir / "var"
    return ["--vae-ckpt", str(d / "vae_tiny.pth"), "--var-ckpt", str(d / "var_tiny_d2.pth")]


def grid_cells(path: Path, rows: int, cols: int, size: int) -> np.ndarray:
    """Cut a save_grid PNG back into (rows, cols, size, size, 3) uint8 images."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (PAD + rows * (size + PAD), PAD + cols * (size + PAD), 3)
    return np.stack([np.stack([grid[PAD + r * (size + PAD):PAD + r * (size + PAD) + size,
                                    PAD + c * (size + PAD):PAD + c * (size + PAD) + size] for c in range(cols)])
                     for r in range(rows)])


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = sample_ssg.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_compare_grid_reproduces_upstream_and_ssg_reference(golden_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    beta = "0," + ",".join(["0.5"] * 9)  # the golden SSG case's betas
    code, stdout, err = run_main([*golden_ckpts(golden_dir), "--classes", "0,207,388,980", "--seed", "2",
                                  "--beta", beta, "--compare", "--device", "cpu", "--out", str(out)], capsys)
    assert code == 0, err
    assert f"wrote {out}" in stdout
    cells = grid_cells(out, rows=2, cols=4, size=256).astype(np.int16)
    plain = np.load(golden_dir / "var" / "expected.npz")["image_uint8"].astype(np.int16)
    ssg = np.load(golden_dir / "var" / "expected_ssg.npz")["image_uint8"].astype(np.int16)
    assert np.abs(cells[0] - plain).max() <= 1      # top row: baseline = upstream (truncation may flip 1 level)
    assert np.abs(cells[1] - ssg).max() <= 1        # bottom row: SSG reference case
    assert np.abs(cells[1] - plain).max() > 10      # and SSG really changed the pictures


@pytest.mark.parametrize("flags, expected", [
    (["--beta", "0.5"], [0.0] + [0.5] * 9),
    (["--beta", "0,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"], [0.0] + [0.5] * 9),
    (["--beta", "0.9", "--beta-schedule", "linear-decay"], [0.0] + [0.9 * (10 - k) / 9 for k in range(1, 10)]),
    (["--beta", "0.9", "--beta-schedule", "linear-increase"], [0.0] + [0.9 * k / 9 for k in range(1, 10)]),
    (["--beta", "0"], [0.0] * 10),
    (["--beta", "0.3", "--beta-last-scales", "1"], [0.0] * 9 + [0.3]),
    (["--beta", "0.3", "--beta_last_scales", "2"], [0.0] * 8 + [0.3, 0.3]),
    (["--beta", "0.9", "--beta-schedule", "linear-increase", "--beta-from-scale", "7"], [0.0] * 7 + [0.3, 0.6, 0.9]),
    (["--beta", "0.9", "--beta-schedule", "linear-decay", "--beta_from_scale", "7"], [0.0] * 7 + [0.9, 0.6, 0.3]),
])
def test_beta_flags_become_per_scale_values(flags, expected):
    from VAR import cli_args
    args = sample_ssg.build_parser().parse_args(flags)
    ssg, betas = cli_args.make_ssg(args, 10)
    assert betas == pytest.approx(expected, rel=0, abs=1e-12)
    assert (ssg is None) == (not any(expected))  # beta 0 everywhere: no hook at all (upstream's code path)


# ---------------------------------------------------------------- bad input: one line, exit 2, no file
def assert_no_output(tmp_path: Path) -> None:
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".png", ".tmp") or p.name.startswith(".")] == []


@pytest.mark.parametrize("argv, needles", [
    (["--classes", "0,1000"], ["unknown class id 1000", "0..999"]),
    (["--classes", "3,x"], ["--classes"]),
    (["--model-depth", "36", "--image-size", "256"], ["var-d36 exists only at 512 px"]),
    (["--model-depth", "16", "--image-size", "512"], ["var-d16 exists only at 256 px"]),
    (["--model", "var-d20", "--model-depth", "24"], ["disagree"]),
    (["--model-depth", "16", "--beta", "0,0.5,0.5"], ["beta list has 3 values", "10 scales"]),
    (["--model-depth", "16", "--beta", "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"], ["beta[0] must be 0"]),
    (["--model-depth", "16", "--beta", "0,1,1,1,1,1,1,1,1,1", "--beta-schedule", "linear-decay"], ["cannot be combined with a beta schedule"]),
    (["--beta", "half"], ["--beta"]),
    (["--model-depth", "16", "--beta-last-scales", "10"], ["--beta-last-scales 10: cannot guide the last 10 scales",
                                                           "only 9 of the model's 10"]),
    (["--model-depth", "16", "--beta-from-scale", "10"], ["--beta-from-scale 10: cannot guide from scale 10 on"]),
    (["--beta-from-scale", "0"], ["--beta-from-scale", "at least 1", "scale 0 is never guided"]),
    (["--beta-last-scales", "0"], ["--beta-last-scales", "at least 1"]),
    (["--beta-last-scales", "x"], ["--beta-last-scales", "positive integer"]),
    (["--beta-last-scales", "1", "--beta-from-scale", "3"], ["not allowed with"]),
    (["--beta", "0,0,0,0,0,0,0,0,0,1", "--beta-last-scales", "1"], ["--beta-last-scales needs one --beta number"]),
    (["--model", "demo", "--beta-last-scales", "2"], ["--model demo without --beta samples the recommended"]),
    (["--dtype", "bf16", "--device", "cpu"], ["needs a CUDA device"]),
    (["--out", "grid.jpg"], ["PNG"]),
    (["--out", "a_file/grid.png"], ["a_file is a file, not a folder"]),
    (["--out", "a_folder/x.png/"], ["is a folder"]),
    (["--top-k", "-3"], ["--top-k must be >= 0"]),
    (["--top-p", "7"], ["--top-p must be between 0 and 1"]),
    (["--cfg", "nan"], ["--cfg must be a finite number"]),
])
def test_bad_flags_fail_before_loading(argv, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("in the way")
    (tmp_path / "a_folder" / "x.png").mkdir(parents=True)
    monkeypatch.setattr(C, "resolve_file", lambda *a, **k: pytest.fail("must fail before any download"))
    monkeypatch.setattr(C, "load_state_dict", lambda *a, **k: pytest.fail("must fail before any loading"))
    argv = ["--device", "cpu", "--out", str(tmp_path / "grid.png"), *argv]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, *needles)
    assert_no_output(tmp_path)


def test_beta_list_of_wrong_length_for_the_loaded_model(golden_dir, tmp_path, capsys):
    code, _, err = run_main([*golden_ckpts(golden_dir), "--beta", "0,0.5,0.5,0.5", "--device", "cpu",
                             "--out", str(tmp_path / "g.png")], capsys)
    assert_one_line_error(code, err, "beta list has 4 values", "10 scales")
    assert_no_output(tmp_path)


def test_truncated_checkpoint(golden_dir, tmp_path, capsys):
    src = golden_dir / "var" / "var_tiny_d2.pth"
    bad = tmp_path / "ckpt" / "var_tiny_d2.pth"
    bad.parent.mkdir()
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    code, _, err = run_main(["--vae-ckpt", str(golden_dir / "var" / "vae_tiny.pth"), "--var-ckpt", str(bad),
                             "--device", "cpu", "--out", str(tmp_path / "g.png")], capsys)
    assert_one_line_error(code, err, str(bad), "truncated")
    assert_no_output(tmp_path)


def test_checkpoint_of_another_depth(golden_dir, tmp_path, capsys):
    code, _, err = run_main([*golden_ckpts(golden_dir), "--model-depth", "16", "--device", "cpu",
                             "--out", str(tmp_path / "g.png")], capsys)
    assert_one_line_error(code, err, "depth-2 VAR", "var-d16")
    assert_no_output(tmp_path)


def test_swapped_checkpoints(golden_dir, tmp_path, capsys):
    d = golden_dir / "var"
    code, _, err = run_main(["--vae-ckpt", str(d / "var_tiny_d2.pth"), "--var-ckpt", str(d / "vae_tiny.pth"),
                             "--device", "cpu", "--out", str(tmp_path / "g.png")], capsys)
    assert_one_line_error(code, err, "not a VAR VQVAE checkpoint", "swap")
    assert_no_output(tmp_path)


def test_checkpoint_with_a_wrong_shape(golden_dir, tmp_path, capsys):
    sd = torch.load(golden_dir / "var" / "var_tiny_d2.pth", map_location="cpu", weights_only=True)
    sd["head.bias"] = sd["head.bias"][:100]
    bad = tmp_path / "ckpt" / "var_bad.pth"
    bad.parent.mkdir()
    torch.save(sd, bad)
    code, _, err = run_main(["--vae-ckpt", str(golden_dir / "var" / "vae_tiny.pth"), "--var-ckpt", str(bad),
                             "--device", "cpu", "--out", str(tmp_path / "g.png")], capsys)
    assert_one_line_error(code, err, "does not fit the model", "head.bias")
    assert_no_output(tmp_path)


def test_offline_without_cached_checkpoint(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "hf_home"))
    r = subprocess.run([sys.executable, str(REPO / "VAR" / "sample_ssg.py"), "--model-depth", "20", "--device", "cpu",
                        "--out", str(tmp_path / "g.png")], capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(r.returncode, r.stderr, "vae_ch160v4096z32.pth", "HF_HUB_OFFLINE",
                          "python scripts/download.py --model var-d20")
    assert_no_output(tmp_path)


def test_demo_model(tmp_path, capsys, monkeypatch):
    """--model demo goes through VAR/demo.py (here with a randomly initialised demo model, so the test
    pins the CLI branch, not the shipped weights): demo.IMAGE_SIZE px, classes 0-9, 6 scales."""
    from VAR import demo
    monkeypatch.setattr(demo, "load_demo", lambda device: demo.build_demo(device, seed=0))
    out = tmp_path / "demo.png"
    code, stdout, err = run_main(["--model", "demo", "--classes", "3,7", "--beta", "0.5", "--compare", "--top-k", "0",
                                  "--device", "cpu", "--out", str(out)], capsys)
    assert code == 0, err
    assert f"{demo.IMAGE_SIZE} px" in stdout and "beta [0, 0.5, 0.5, 0.5, 0.5, 0.5]" in stdout
    assert "SSG: beta per scale [0, 0.5, 0.5, 0.5, 0.5, 0.5] (--beta 0.5, constant)" in stdout  # said at the start
    assert "recommended" not in stdout  # --beta given: the user's value, no recommendation
    assert "recognised as the requested digit by the demo classifier: baseline " in stdout
    grid_cells(out, rows=2, cols=2, size=4 * demo.IMAGE_SIZE)  # tiny digits are shown 4x by default
    code, _, err = run_main(["--model", "demo", "--classes", "3,7", "--zoom", "1", "--device", "cpu",
                             "--out", str(out)], capsys)
    assert code == 0, err
    grid_cells(out, rows=1, cols=2, size=demo.IMAGE_SIZE)
    code, _, err = run_main(["--model", "demo", "--classes", "10", "--device", "cpu", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "unknown class id 10", "0..9")
    code, _, err = run_main(["--model", "demo", "--beta", "0,1,1,1,1,1,1,1,1,1", "--device", "cpu",
                             "--out", str(tmp_path / "x.png")], capsys)
    assert_one_line_error(code, err, "beta list has 10 values", "6 scales")
    assert not (tmp_path / "x.png").exists()


def test_training_checkpoints_load_like_the_released_files(golden_dir, tmp_path, capsys):
    """upstream's train.py nests the weights under ["trainer"] next to `args.state_dict()` (an OrderedDict of
    plain values): the CLI takes such files as they are (weights-only, no note) and samples exactly what the flat
    files sample. (Pickled argument objects: tests/test_checkpoint_security.py.)"""
    from collections import OrderedDict
    d = golden_dir / "var"
    flat = {n: torch.load(d / f, map_location="cpu", weights_only=True)
            for n, f in (("vae", "vae_tiny.pth"), ("var", "var_tiny_d2.pth"))}
    ck = tmp_path / "ckpt"
    ck.mkdir()
    torch.save({"epoch": 3, "iter": 7, "args": OrderedDict(depth=2, pn="1_2_3", patch_nums=(1, 2, 3), tlr=None),
                "trainer": {"config": {}, "vae_local": flat["vae"], "var_wo_ddp": flat["var"], "var_opt": {}}},
               ck / "ar-ckpt-last.pth")
    common = ["--classes", "0,207", "--seed", "2", "--beta", "0.5", "--device", "cpu"]
    code, _, err = run_main(["--vae-ckpt", str(ck / "ar-ckpt-last.pth"), "--var-ckpt", str(ck / "ar-ckpt-last.pth"),
                             *common, "--out", str(tmp_path / "trained.png")], capsys)
    assert code == 0, err
    assert "note:" not in err and "weights_only=False" not in err
    code, _, err = run_main([*golden_ckpts(golden_dir), *common, "--out", str(tmp_path / "released.png")], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "trained.png")), np.asarray(Image.open(tmp_path / "released.png")))


def test_unreadable_checkpoint_error_is_plain_text(golden_dir, tmp_path, capsys):
    bad = tmp_path / "ckpt" / "var.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"\x80\x02 not a checkpoint" * 8)
    code, _, err = run_main(["--vae-ckpt", str(golden_dir / "var" / "vae_tiny.pth"), "--var-ckpt", str(bad),
                             "--device", "cpu", "--out", str(tmp_path / "g.png")], capsys)
    assert_one_line_error(code, err, str(bad), "Unsupported operand", "corrupt")
    assert "\x1b[" not in err and "Weights only load failed" not in err   # torch's boilerplate and bold codes
    assert_no_output(tmp_path)


def test_demo_without_beta_samples_the_recommended_setting(tmp_path, capsys, monkeypatch):
    """`--model demo --compare` without --beta: assets/demo/eval/recommended.json, said in one line; the same
    images as its flags given by hand; a --beta of the user's wins (random demo weights: the CLI branch only)."""
    from VAR import demo
    monkeypatch.setattr(demo, "load_demo", lambda device: demo.build_demo(device, seed=0))
    rec = demo.load_recommended()["ssg"]
    outs = {name: tmp_path / f"{name}.png" for name in ("default", "by_hand", "user")}
    code, stdout, err = run_main(["--model", "demo", "--compare", "--device", "cpu", "--out", str(outs["default"])],
                                 capsys)
    assert code == 0, err
    assert (f"--model demo without --beta: the recommended setting from assets/demo/eval/recommended.json "
            f"({rec['text']}); --beta overrides it") in stdout
    assert f"SSG: beta per scale {C.format_betas(rec['betas'])}" in stdout
    code, stdout, err = run_main(["--model", "demo", "--compare", "--device", "cpu", "--out", str(outs["by_hand"]),
                                  *rec["flags"].split()], capsys)
    assert code == 0 and "recommended" not in stdout, err
    code, stdout, err = run_main(["--model", "demo", "--compare", "--device", "cpu", "--beta", "0.5",
                                  "--out", str(outs["user"])], capsys)
    assert code == 0 and "recommended" not in stdout and "[0, 0.5, 0.5, 0.5, 0.5, 0.5]" in stdout, err
    png = {k: np.asarray(Image.open(v)) for k, v in outs.items()}
    assert np.array_equal(png["default"], png["by_hand"]) and not np.array_equal(png["default"], png["user"])

    broken = tmp_path / "recommended.json"
    broken.write_text("{}")
    monkeypatch.setattr(demo, "RECOMMENDED", broken)
    code, _, err = run_main(["--model", "demo", "--device", "cpu", "--out", str(tmp_path / "x.png")], capsys)
    assert_one_line_error(code, err, "not a recommended-setting file")
    assert not (tmp_path / "x.png").exists()


def test_ssg_settings_and_start_line(capsys, monkeypatch):
    """Manifests record the resolved per-scale betas and the window flag (only when given, so that older
    manifests still match on resume); the start line is printed on rank 0 only."""
    args = sample_ssg.build_parser().parse_args(["--beta", "0.4", "--beta-last-scales", "2"])
    _, betas = C.make_ssg(args, 10, announce=True)
    assert capsys.readouterr().out == ("SSG: beta per scale [0, 0, 0, 0, 0, 0, 0, 0, 0.4, 0.4] "
                                       "(--beta 0.4, constant, --beta-last-scales 2)\n")
    s = C.ssg_settings(args, betas)
    assert s["beta"] == [0.0] * 8 + [0.4, 0.4] and s["beta_last_scales"] == 2 and "beta_from_scale" not in s
    plain = sample_ssg.build_parser().parse_args(["--beta", "0.4"])
    assert "beta_last_scales" not in C.ssg_settings(plain, [0.0] + [0.4] * 9)
    monkeypatch.setenv("RANK", "1")
    C.make_ssg(args, 10, announce=True)
    assert capsys.readouterr().out == ""
