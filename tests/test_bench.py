"""The bench/ scripts run, print their tables (SSG on and off, and the time inside the hook), and reject bad input
in one line. Timings themselves are not asserted: they come from the GPU machine."""
from __future__ import annotations

import json

import pytest
import torch


def test_profile_call_accounts_for_the_work(load_script, tmp_path):
    prof_ops = load_script("bench/profile_ops.py")
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


def test_bench_var_smoke_run_with_profile(load_script, tmp_path, capsys):
    bench = load_script("bench/bench_var.py")
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


def test_bench_var_rejects_an_unknown_dtype(load_script):
    bench = load_script("bench/bench_var.py")
    with pytest.raises(SystemExit):
        bench.main(["--dtypes", "int8"])


def _table_rows(out: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_bench_dse_prints_markdown_rows(load_script, capsys):
    bench = load_script("bench/bench_dse.py")
    bench.main(["--models", "var256", "infinity", "--batches", "1", "--last", "1", "--devices", "cpu"])
    out = capsys.readouterr().out
    rows = _table_rows(out, "cpu")
    assert [(r[1], r[3]) for r in rows] == [("var256", "13->16"), ("infinity", "48->64")]
    for r in rows:
        assert float(r[4]) > 0 and float(r[5]) > 0 and r[6].endswith("x")
    assert "SSG total for one VAR-d16 sample" in out


def test_bench_hart_smoke_run_writes_rows(load_script, tmp_path, capsys):
    bench = load_script("bench/bench_hart.py")
    out = tmp_path / "hart.json"
    assert bench.main(["--preset", "tiny-256", "--device", "cpu", "--dtype", "fp32", "--steps", "1", "--warmup", "0",
                       "--batches", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["batch"] == 1 and row["baseline_s"] > 0 and row["ssg_s"] > 0
    assert 0 < row["inside_ssg_s"] < row["ssg_s"]
    assert len(_table_rows(capsys.readouterr().out, "1")) == 1


def test_bench_infinity_smoke_run_writes_rows(load_script, tmp_path):
    bench = load_script("bench/bench_infinity.py")
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--model_type", "infinity_layer12", "--depth", "2", "--embed_dim", "128",
                       "--pn", "0.06M", "--warmup", "0", "--batches", "1", "--steps", "1", "--no-decode",
                       "--vae_base_ch", "32", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["batch"] == 1 and row["plain_s"] > 0 and row["ssg_s"] > 0
    assert 0 < row["hook_s"] < row["plain_s"]          # the hook ran, and is a fraction of the call
    assert res["image_px"] == [256, 256]


@pytest.mark.parametrize("name, argv, message", [
    ("bench_dse", ["--devices", "gpu"], "not a torch device: 'gpu'"),
    ("bench_hart", ["--device", "cpu", "--steps", "0"], "--steps must be >= 1"),
    ("bench_infinity", ["--device", "cpu", "--steps", "0"], "--steps must be >= 1"),
])
def test_benches_reject_bad_input_in_one_line(load_script, capsys, name, argv, message):
    bench = load_script(f"bench/{name}.py")
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
