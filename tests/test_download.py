"""scripts/download.py: fetches every file of a model (single files and whole-repo snapshots),
prints path and SHA-256, works from a filled cache offline, and fails in one line when offline
with nothing cached.

huggingface_hub reads HF_* variables at import time, so the offline cases run in a subprocess
with their own HF_HUB_CACHE; the "with network" case monkeypatches the download function.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "download.py"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(args: list[str], cache: Path, offline: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def fake_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay out `files` as huggingface_hub's cache does: models--org--name/{refs/main, snapshots/<commit>/...}."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import download
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return download


def test_list_shows_every_model(capsys):
    assert load_script().main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("var-d16", "var-d36", "infinity-2b", "hart-0.7b"):
        assert f"\n{name}\n" in "\n" + out
    assert "FoundationVision/var/var_d36.pth" in out


def test_offline_from_filled_cache_prints_paths_and_sha256(tmp_path):
    cache = tmp_path / "hub"
    data = {"vae_ch160v4096z32.pth": b"vae bytes", "var_d16.pth": b"var d16 bytes"}
    snap = fake_cached_repo(cache, "FoundationVision/var", data)
    r = run(["--model", "var-d16"], cache)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("var-d16 ")]
    assert len(lines) == 2
    for line, (name, content) in zip(lines, data.items()):
        _, path, _, digest = line.split()
        assert Path(path).resolve() == (snap / name).resolve()
        assert digest == sha(content)


def test_snapshot_entries_fetch_only_matching_files(tmp_path):
    cache = tmp_path / "hub"
    fake_cached_repo(cache, "FoundationVision/Infinity",
                     {"infinity_125M_256x256.pth": b"gen", "infinity_vae_d16.pth": b"vae"})
    t5 = {"config.json": b"{}", "spiece.model": b"sp", "model.safetensors": b"w", "README.md": b"not needed"}
    fake_cached_repo(cache, "google/flan-t5-xl", t5)
    r = run(["--model", "infinity-125m"], cache)
    assert r.returncode == 0, r.stderr
    printed = {Path(l.split()[1]).name: l.split()[3] for l in r.stdout.splitlines() if l.startswith("infinity-125m ")}
    assert printed == {"infinity_125M_256x256.pth": sha(b"gen"), "infinity_vae_d16.pth": sha(b"vae"),
                       "config.json": sha(b"{}"), "spiece.model": sha(b"sp"), "model.safetensors": sha(b"w")}


def test_offline_missing_file_is_one_line_error(tmp_path):
    cache = tmp_path / "hub"
    fake_cached_repo(cache, "FoundationVision/var", {"vae_ch160v4096z32.pth": b"vae only"})
    r = run(["--model", "var-d20"], cache)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert err[0].startswith("error: ") and "var_d20.pth" in err[0]
    assert "python scripts/download.py --model var-d20" in err[0] and "HF_HUB_OFFLINE" in err[0]


def test_unknown_model_is_one_line_error(capsys):
    try:
        load_script().main(["--model", "var-d17"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("no error")
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'var-d17'") and len(err.strip().splitlines()) == 1


def test_ckpt_dir_downloads_each_file_into_it(tmp_path, monkeypatch, capsys):
    """With network (simulated): every file goes into --ckpt-dir; files already there are not fetched again."""
    import huggingface_hub
    download = load_script()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "vae_ch160v4096z32.pth").write_bytes(b"already here")
    calls = []

    def fake_download(repo_id, filename, local_dir=None, **kw):
        calls.append((repo_id, filename, local_dir))
        out = Path(local_dir) / filename
        out.write_bytes(f"{repo_id}/{filename}".encode())
        return str(out)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert download.main(["--model", "var-d30", "--ckpt-dir", str(ckpt)]) == 0
    assert calls == [("FoundationVision/var", "var_d30.pth", str(ckpt))]
    out = capsys.readouterr().out
    assert f"{ckpt / 'vae_ch160v4096z32.pth'}  sha256 {sha(b'already here')}" in out
    assert f"{ckpt / 'var_d30.pth'}  sha256 {sha(b'FoundationVision/var/var_d30.pth')}" in out


def test_offline_hint_repeats_the_ckpt_dir(tmp_path, monkeypatch):
    """The fix an error suggests must put the files where the failed lookup searched."""
    import huggingface_hub
    from ssg_core import hub
    from ssg_core.errors import SSGError

    def refuse(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)   # no network waits in the test
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    ckpt = tmp_path / "ckpts"
    with pytest.raises(SSGError) as file_err:
        hub.resolve_file("FoundationVision/var", "var_d20.pth", ckpt, model="var-d20")
    assert f"python scripts/download.py --model var-d20 --ckpt-dir {ckpt}`" in str(file_err.value)
    with pytest.raises(SSGError) as snap_err:  # snapshots live in <ckpt-dir>/<repo name>
        hub.resolve_snapshot("mit-han-lab/hart-0.7b-1024px", ["llm/*"], ckpt / "hart-0.7b-1024px", model="hart-0.7b")
    assert f"python scripts/download.py --model hart-0.7b --ckpt-dir {ckpt}`" in str(snap_err.value)
