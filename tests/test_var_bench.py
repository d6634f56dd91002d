"""`bench/bench_var.py` times both modes, and `--profile` says where one call's time goes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # as when run as `python bench/<name>.py`
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_profile_call_accounts_for_the_work(monkeypatch, tmp_path):
    prof_ops = _load(monkeypatch, "profile_ops")
    a = torch.randn(256, 256)

    def work():
        for _ in range(3):
            torch.mm(a, a)
        a.sin()

    p = prof_ops.profile_call(work, torch.device("cpu"), tmp_path, "mm")
    names = {r.name: r for r in p.ops}
    assert names["aten::mm"].calls == 3 and names["aten::sin"].calls == 1
    assert p.ops == sorted(p.ops, key=lambda r: -r.seconds)        # largest first
    assert 0 < p.busy <= p.wall * 1.5 and abs(sum(r.share for r in p.ops) - 1) < 1e-6
    assert (tmp_path / "mm.trace.json").stat().st_size > 0 and "aten::mm" in (tmp_path / "mm.ops.txt").read_text()
    table = prof_ops.format_profile(p, torch.device("cpu"), top=2)
    assert table.count("\n| aten::") == 2


def test_bench_var_smoke_run_with_profile(monkeypatch, tmp_path, capsys):
    bench = _load(monkeypatch, "bench_var")
    bench.main(["--device", "cpu", "--depths", "2", "--batches", "1", "--dtypes", "fp32", "--steps", "1",
                "--warmup", "0", "--vae-ch", "32", "--profile", str(tmp_path)])
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith("| d2 | 1 | fp32 |")]
    assert len(row) == 1, out
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert float(cells[3]) > 0 and float(cells[4]) > 0            # s / call, img/s
    assert "ms (" in cells[7] and float(cells[7].split()[0]) > 0   # time inside the SSG hook
    assert "profile of one SSG call, var_d2_B1_fp32" in out and "aten::" in out
    assert (tmp_path / "var_d2_B1_fp32.trace.json").exists()


def test_bench_var_rejects_an_unknown_dtype(monkeypatch):
    bench = _load(monkeypatch, "bench_var")
    with pytest.raises(SystemExit):
        bench.main(["--dtypes", "int8"])
