"""scripts/demo_eval.py and scripts/ssg_spectra.py end to end on the shipped demo model (tiny sizes)."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


demo_eval = _load("demo_eval")
ssg_spectra = _load("ssg_spectra")


def test_demo_eval_quick_prints_two_metric_lines(capsys):
    assert demo_eval.main(["--quick", "--per-class", "2", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "baseline:" in out and "SSG b=0.5:" in out
    assert out.count("FD ") == 2 and out.count("acc ") == 2


def test_demo_eval_sweep_writes_table_plot_and_resumes(tmp_path, capsys):
    argv = ["--sweep", "beta", "--betas", "0,0.5", "--per-class", "3", "--seeds", "0,1", "--out", str(tmp_path),
            "--no-progress"]
    assert demo_eval.main(argv) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| baseline |" in table and "| SSG b=0.5 |" in table and "real digits" in table
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert len(runs) == 3 and all(set(r) == {"0", "1"} for r in runs.values())
    before = (tmp_path / "results.json").read_text()
    assert demo_eval.main(argv) == 0  # everything cached: same numbers, nothing re-sampled
    assert (tmp_path / "results.json").read_text() == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # other settings: refused, the stored results stay
        demo_eval.main([*argv[:argv.index("--per-class")], "--per-class", "2", *argv[argv.index("--per-class") + 2:]])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "other settings (per_class differ)" in err
    assert (tmp_path / "results.json").read_text() == before


def test_demo_eval_bad_flag_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        demo_eval.main(["--sweep", "colour"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: --sweep")


def test_ssg_spectra_on_demo(tmp_path):
    argv = ["--model", "demo", "--num", "12", "--batch-size", "12", "--out", str(tmp_path), "--no-progress"]
    assert ssg_spectra.main(argv) == 0
    res = json.loads((tmp_path / "spectra.json").read_text())
    trans = res["logit_transitions"]
    assert [t["k"] for t in trans] == [1, 2, 3, 4]  # the last 4 of the 5 steps of a 6-scale model
    assert [t["nyquist_k"] for t in trans] == [1, 1, 2, 3]
    # SSG leaves scale 0 alone and guides the rest: spectra differ at every later scale
    assert all(max(abs(v) for v in t["diff_mean"]) > 0 for t in trans)
    assert len(res["image_ratio"]["freq"]) == len(res["image_ratio"]["with_ssg"]) > 5
    assert (tmp_path / "logit_spectra.png").is_file() and (tmp_path / "image_spectrum_ratio.png").is_file()


def test_ssg_spectra_refuses_beta_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ssg_spectra.main(["--model", "demo", "--beta", "0", "--out", str(tmp_path)])
    assert e.value.code == 2 and "nothing to compare" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["demo_eval", "ssg_spectra"])
def test_output_folder_blocked_by_a_file_fails_at_once(script, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder goes")
    argv = ["--out", str(blocker)] + (["--model", "demo"] if script == "ssg_spectra" else [])
    with pytest.raises(SystemExit) as e:
        globals()[script].main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: --out") and "is not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
