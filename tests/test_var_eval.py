"""scripts/var_sample_eval.py: per-image results independent of process count, batch size and
restarts; the .npz and manifest; refusing to resume with other settings.

Tiny golden checkpoints (depth 2, 256 px), 2 classes x 4 images; the 2-process runs use torchrun
on CPU (gloo).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "var_sample_eval.py"


def load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import var_sample_eval
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return var_sample_eval


def common_args(golden_dir: Path, sample_dir: Path) -> list[str]:
    d = golden_dir / "var"
    return ["--vae-ckpt", str(d / "vae_tiny.pth"), "--var-ckpt", str(d / "var_tiny_d2.pth"), "--classes", "3,980",
            "--num-per-class", "4", "--seed", "7", "--beta", "0.5", "--device", "cpu", "--sample-dir", str(sample_dir)]


def run_single(argv: list[str]) -> int:
    """One process, in this interpreter, with 1 intra-op thread like each torchrun worker below.

    (On CPU the thread count can change the VAE decoder's last float bits, hence a PNG byte:
    runs to be compared must use the same count; batch size and process count do not matter.)
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_script().main(argv)
    except SystemExit as e:
        return e.code
    finally:
        torch.set_num_threads(threads)


def run_torchrun(argv: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def pngs(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.png"))}


def test_two_processes_killed_and_resumed_equal_one_uninterrupted_run(golden_dir, tmp_path):
    """Byte-identical PNGs whatever the process count, batch size (>= 2, see README) and restarts."""
    one, two = tmp_path / "one", tmp_path / "two"
    # reference: one process, batches of 4 (images 0-3, 4-7)
    assert run_single([*common_args(golden_dir, one), "--per-proc-batch-size", "4"]) == 0
    ref = pngs(one)
    assert sorted(ref) == [f"{i:06d}.png" for i in range(8)]

    # two processes, batches of 2: "killed" after two images per process, then resumed
    run_torchrun([*common_args(golden_dir, two), "--per-proc-batch-size", "2", "--stop-after", "2"])
    assert sorted(pngs(two)) == [f"{i:06d}.png" for i in range(4)]  # interleaved: rank 0 -> 0, 2; rank 1 -> 1, 3
    assert not (tmp_path / "two.npz").exists()
    assert json.loads((two / "manifest.json").read_text())["complete"] is False
    run_torchrun([*common_args(golden_dir, two), "--per-proc-batch-size", "2"])
    assert pngs(two) == ref                                         # byte-identical files

    # lost files are redone identically by one process in another batch size
    (two / "000005.png").unlink()
    (two / "000006.png").unlink()
    assert run_single([*common_args(golden_dir, two), "--per-proc-batch-size", "3"]) == 0
    assert pngs(two) == ref

    # the .npz: all images, uint8 NHWC, shuffled with a fixed permutation stored beside them
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert a["arr_0"].dtype == np.uint8 and a["arr_0"].shape == (8, 256, 256, 3)
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
    assert sorted(a["index"].tolist()) == list(range(8)) and a["index"].tolist() != list(range(8))
    for row, i in enumerate(a["index"]):
        np.testing.assert_array_equal(a["arr_0"][row], np.asarray(Image.open(one / f"{i:06d}.png")))

    # classes and seeds really differ per image
    assert len(set(ref.values())) == 8

    # the manifest: every setting, checkpoint hashes, versions
    m = json.loads((one / "manifest.json").read_text())
    case = json.loads((golden_dir / "var" / "case.json").read_text())["files"]
    assert m["complete"] is True and m["npz_shape"] == [8, 256, 256, 3]
    assert m["checkpoint_sha256"] == {"vae": case["vae_tiny.pth"]["sha256"], "var": case["var_tiny_d2.pth"]["sha256"]}
    s = m["settings"]
    assert (s["classes"], s["num_per_class"], s["seed"], s["cfg"], s["top_k"], s["top_p"]) == ([3, 980], 4, 7, 1.5,
                                                                                                 900, 0.96)
    assert s["ssg"]["beta"] == [0.0] + [0.5] * 9 and s["architecture"]["depth"] == 2
    assert "torch" in m["versions"]
    assert json.loads((two / "manifest.json").read_text())["settings"] == s


def test_resume_with_other_settings_is_refused(golden_dir, tmp_path, capsys):
    d = tmp_path / "s"
    assert run_single([*common_args(golden_dir, d), "--stop-after", "0"]) == 0
    capsys.readouterr()
    assert run_single([*common_args(golden_dir, d), "--stop-after", "0", "--cfg", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "other settings (cfg differ)" in err[0]


def test_bad_class_subset_writes_nothing(golden_dir, tmp_path, capsys):
    d = tmp_path / "s"
    argv = common_args(golden_dir, d)
    argv[argv.index("--classes") + 1] = "3,1000"
    assert run_single(argv) == 2
    assert "unknown class id 1000" in capsys.readouterr().err
    assert not d.exists()


@pytest.mark.parametrize("where, needle", [("sample_dir", "exists and is not a folder"),
                                           ("npz", "blocker is a file, not a folder"),
                                           ("npz_is_sample_dir", "is the --sample-dir itself")])
def test_unusable_output_paths_fail_before_loading(golden_dir, tmp_path, capsys, monkeypatch, where, needle):
    """a path that could not be written at the end fails at once, not after the images are sampled"""
    from VAR import cli_args as C
    monkeypatch.setattr(C, "load_var_models", lambda *a, **k: pytest.fail("must fail before loading"))
    blocker = tmp_path / "blocker"
    blocker.write_text("in the way")
    d = blocker if where == "sample_dir" else tmp_path / "s"
    argv = common_args(golden_dir, d)
    if where == "npz":
        argv += ["--npz", str(blocker / "out.npz")]
    if where == "npz_is_sample_dir":
        argv += ["--npz", str(d)]
    assert run_single(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_closing_line_counts_new_and_existing_images(golden_dir, tmp_path, capsys):
    d = tmp_path / "s"
    argv = common_args(golden_dir, d)
    argv[argv.index("--num-per-class") + 1] = "1"
    assert run_single([*argv, "--stop-after", "1"]) == 0
    assert run_single(argv) == 0
    assert "2 images in" in (last := capsys.readouterr().out.splitlines()[-1]) and "(1 sampled now, 1 already" in last
    assert run_single(argv) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "(0 sampled now, 2 already there)" in last, last
