"""`bench/bench_infinity.py` runs and reports both modes and the time inside the SSG hook."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_run_writes_rows(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # as when run as `python bench/bench_infinity.py`
    spec = importlib.util.spec_from_file_location("bench_infinity", REPO / "bench" / "bench_infinity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(['--device', 'cpu', '--model_type', 'infinity_layer12', '--depth', '2', '--embed_dim', '128', '--pn', '0.06M', '--warmup', '0',
                       '--batch', '1', '--reps', '1', '--no-decode', '--vae_base_ch', '32', '--out', str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res['rows']
    assert row['batch'] == 1 and row['plain_s'] > 0 and row['ssg_s'] > 0
    assert 0 < row['hook_s'] < row['plain_s']          # the hook ran, and is a fraction of the call
    assert res['image_px'] == [256, 256]
