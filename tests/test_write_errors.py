"""A file that cannot be written is one line naming the path and the reason, before any loading where the
path is known up front, and never leaves a half-written or temporary file behind.

The tests run as root in CI, where permissions restrict nothing, so the failures are real ones that root
meets too (/proc takes no files; a file stands where a folder must go) or simulated at the operating
system's boundary: a read-only file system (creating a file fails with EROFS) and a full disk (writing
fails with ENOSPC, from the first file or after a number of files).
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ssg_core.errors import SSGError
from ssg_core.evaluation import check_output_path, save_png, write_json

REPO = Path(__file__).resolve().parents[1]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


class FullDisk:
    """`os.fdopen` whose files fail to write with ENOSPC once `files_left` files have been opened for writing."""

    def __init__(self, monkeypatch, files_left: int = 0):
        self.files_left, self.real = files_left, os.fdopen
        monkeypatch.setattr(os, "fdopen", self)

    def __call__(self, fd, mode="r", *args, **kwargs):
        f = self.real(fd, mode, *args, **kwargs)
        if "w" not in mode:
            return f
        self.files_left -= 1
        return f if self.files_left >= 0 else _FullFile(f)


class _FullFile:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def read_only(monkeypatch, root: Path) -> None:
    """Make file creation under `root` fail as on a read-only file system."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(root.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# ---------------------------------------------------------------- the shared helpers
def test_full_disk_while_writing_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", img)
    before = (tmp_path / "a.png").read_bytes()
    FullDisk(monkeypatch)
    for write in (lambda: save_png(tmp_path / "a.png", img + 1), lambda: write_json(tmp_path / "m.json", {"a": 1})):
        with pytest.raises(SSGError, match="No space left on device") as e:
            write()
        assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "a.png").read_bytes() == before and not (tmp_path / "m.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "blocker").write_text("in the way")
    with pytest.raises(SSGError, match=r"cannot create the folder .*blocker"):
        save_png(tmp_path / "blocker" / "x.png", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(SSGError, match="cannot create the folder /proc/ssg-test"):
        write_json("/proc/ssg-test/m.json", {})


@pytest.mark.parametrize("kind", ["proc", "blocker", "read-only", "full"])
def test_check_output_path_finds_unwritable_places(kind, tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("in the way")
    where = {"proc": Path("/proc"), "blocker": tmp_path / "blocker", "read-only": tmp_path, "full": tmp_path}[kind]
    reason = {"proc": "it takes no new files", "blocker": "is a file, not a folder",
              "read-only": "Read-only file system", "full": "No space left on device"}[kind]
    if kind == "read-only":
        read_only(monkeypatch, tmp_path)
    if kind == "full":
        FullDisk(monkeypatch)
    for path, folder in ((where / "out" / "x.png", False), (where / "out", True)):
        with pytest.raises(SSGError, match=reason) as e:
            check_output_path(path, "--out", folder=folder)
        assert str(e.value).startswith(f"--out {path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # the test file is gone again
    monkeypatch.undo()
    assert check_output_path(tmp_path / "new" / "x.png", "--out") == tmp_path / "new" / "x.png"


# ---------------------------------------------------------------- every entry point that writes files
ENTRY_POINTS = {  # script, arguments with {bad}: a folder that cannot take files
    "VAR/sample_ssg.py": ["--model", "demo", "--out", "{bad}/grid.png"],
    "scripts/var_sample_eval.py": ["--model", "demo", "--sample-dir", "{bad}/samples"],
    "scripts/demo_eval.py": ["--out", "{bad}/eval"],
    "scripts/ssg_spectra.py": ["--model", "demo", "--out", "{bad}/spectra"],
    "Infinity/tools/run_infinity.py": ["--prompt", "a cat", "--save_file", "{bad}/cat.png"],
    "Infinity/tools/run_infinity.py batch": ["--prompt_file", "{prompts}", "--outdir", "{bad}/out"],
    "hart/sample.py": ["--prompt", "a cat", "--sample_folder_dir", "{bad}/hart"],
    "scripts/download.py": ["--model", "var-d16", "--ckpt-dir", "{bad}/ckpt"],
    "bench/bench_var.py": ["--device", "cpu", "--profile", "{bad}/prof"],
    "bench/bench_infinity.py": ["--device", "cpu", "--json", "{bad}/b.json"],
    "bench/bench_hart.py": ["--device", "cpu", "--json", "{bad}/b.json"],
    "VAR/train_demo.py": ["--out", "{bad}/demo"],
}


@pytest.fixture
def nothing_loads(monkeypatch):
    """Every weight file and download fails the test: the output check must come first."""
    def refuse(*a, **k):
        raise AssertionError("loaded or downloaded before the output path was checked")
    import huggingface_hub
    import safetensors
    import safetensors.torch
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("kind", ["proc", "blocker", "read-only", "full"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_points_fail_in_one_line_before_loading(entry, kind, tmp_path, monkeypatch, capsys, load_script,
                                                      nothing_loads):
    script = entry.split()[0]
    module = load_script(script)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("in the way")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    bad = {"proc": Path("/proc"), "blocker": tmp_path / "blocker", "read-only": tmp_path / "ro",
           "full": tmp_path / "full"}[kind]
    reason = {"proc": "takes no new files", "blocker": "is a file, not a folder",
              "read-only": "Read-only file system", "full": "No space left on device"}[kind]
    if kind in ("read-only", "full"):
        bad.mkdir()
        read_only(monkeypatch, bad) if kind == "read-only" else FullDisk(monkeypatch)
    argv = [a.format(bad=bad, prompts=tmp_path / "prompts.txt") for a in ENTRY_POINTS[entry]]
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and str(bad) in err[0] and reason in err[0], err[0]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == sorted(["blocker", "prompts.txt"] + (["ro"] if kind == "read-only" else [])
                          + (["full"] if kind == "full" else [])), left


def test_the_issue_command_is_one_line_without_sampling():
    r = subprocess.run([sys.executable, str(REPO / "VAR" / "sample_ssg.py"), "--model", "demo", "--out", "/proc/x.png"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == ["error: --out /proc/x.png: cannot write in /proc: it takes no new files"]


# ---------------------------------------------------------------- a disk that fills up during evaluation sampling
def test_evaluation_stops_on_a_full_disk_and_resumes_to_the_same_files(tmp_path, capsys, load_script, monkeypatch):
    script = load_script("scripts/var_sample_eval.py")

    def run(sample_dir: Path) -> int:
        argv = ["--model", "demo", "--classes", "0,1,2", "--num-per-class", "2", "--per-proc-batch-size", "2",
                "--seed", "3", "--beta", "0.5", "--device", "cpu", "--sample-dir", str(sample_dir)]
        try:
            return script.main(argv)
        except SystemExit as e:
            return e.code

    assert run(tmp_path / "ref") == 0
    ref = {p.name: p.read_bytes() for p in (tmp_path / "ref").glob("*.png")}
    assert len(ref) == 6
    capsys.readouterr()

    disk = FullDisk(monkeypatch, files_left=6)  # two probes, the manifest and three images fit, the fourth
    assert run(tmp_path / "s") == 2               # (the second of its batch) does not
    err = capsys.readouterr().err.strip().splitlines()  # the progress bar's lines, then the error on its own line
    assert err[-1] == f"error: cannot write {tmp_path / 's' / '000003.png'}: No space left on device"
    assert not any("error" in line for line in err[:-1])
    done = {p.name: p.read_bytes() for p in (tmp_path / "s").glob("*.png")}
    assert sorted(done) == [f"{i:06d}.png" for i in range(3)] and all(done[n] == ref[n] for n in done)  # whole files
    assert not temp_files(tmp_path) and not (tmp_path / "s.npz").exists()

    monkeypatch.setattr(os, "fdopen", disk.real)  # space is back
    assert run(tmp_path / "s") == 0
    assert "(3 sampled now, 3 already there)" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").glob("*.png")} == ref
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["arr_0"], np.load(tmp_path / "ref.npz")["arr_0"])
    assert not temp_files(tmp_path)
