"""A checkpoint file never runs code unless the user says so for that run (`--trust-pickle`).

Hand-made malicious pickles (an `exec` payload, an `os.system` payload, a payload hidden in a nested
dict next to real tensors, in HART's `llm/ema_model.bin` and in an Infinity VAE file) go through every
loader in-process and through every entry point as a subprocess, as a new user would run them: each is
refused with one line and a canary file proves the payload never ran. Training checkpoints in upstream's
nested layout still load without the opt-in, also when they pickle the argument object itself; with the
opt-in, a file holding a harmless Python object loads.
"""
from __future__ import annotations

import argparse
import builtins
import os
import pickle
import shutil
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from ssg_core import hub
from ssg_core.errors import SSGError

REPO = Path(__file__).resolve().parents[1]
SYSTEM = f"{os.system.__module__}.system"   # how a pickle names os.system: posix.system (nt.system on Windows)


class Exec:
    """Unpickling this runs `exec`, which writes the canary file."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return builtins.exec, (f"open({self.canary!r}, 'w').write('pwned')",)


class System:
    """Unpickling this runs `os.system`, which creates the canary file."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def golden_sd(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def poisoned(kind: str, canary: Path, path: Path, weights: dict | None = None) -> Path:
    """Write a checkpoint with a payload of `kind` next to `weights` (a few tensors by default)."""
    sd = dict(weights) if weights is not None else {"w": torch.ones(3), "b": torch.zeros(2)}
    if kind == "exec":
        torch.save({**sd, "extra": Exec(canary)}, path)
    elif kind == "system":
        torch.save({**sd, "extra": System(canary)}, path)
    elif kind == "nested":      # deep inside a training-style dict, after the real tensors
        torch.save({"model": sd, "trainer": {"config": {"lr": 1e-4}, "hooks": [1, {"x": Exec(canary)}]}}, path)
    elif kind == "legacy":      # torch's pre-1.6 (non-zip) format
        torch.save({**sd, "extra": Exec(canary)}, path, _use_new_zipfile_serialization=False)
    elif kind == "plain":       # a plain pickle (protocol 4, framed), not written by torch.save (and no tensors:
        path.write_bytes(pickle.dumps({"lr": 0.1, "extra": Exec(canary)}, protocol=4))  # those need other globals)
    else:
        raise ValueError(kind)
    return path


def assert_refused(message: str, path: Path, global_name: str) -> None:
    assert "\n" not in message, message
    assert str(path) in message and repr(global_name) in message and "--trust-pickle" in message, message


# ---------------------------------------------------------------- the loader itself
@pytest.mark.parametrize("kind, name", [("exec", "builtins.exec"), ("system", SYSTEM), ("nested", "builtins.exec"),
                                        ("legacy", "builtins.exec"), ("plain", "builtins.exec")])
@pytest.mark.parametrize("device", ["cpu", "meta"])   # meta: the CLIs read shapes first
def test_payloads_are_refused_and_never_run(tmp_path, kind, name, device):
    canary = tmp_path / "canary"
    path = poisoned(kind, canary, tmp_path / "model.pth")
    with pytest.raises(SSGError) as e:
        hub.load_state_dict(path, nested=("model",), device=device)
    assert_refused(str(e.value), path, name)
    assert hub.unsafe_globals(path)[0] == name      # found by reading the opcodes, in file order
    assert not canary.exists()


def test_plain_weights_in_every_pickle_format_still_load(tmp_path):
    sd = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor([1, 2])}
    torch.save(sd, tmp_path / "zip.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("zip.pth", "legacy.pth"):
        got = hub.load_state_dict(tmp_path / name)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
        assert hub.unsafe_globals(tmp_path / name) == []


def test_trust_pickle_loads_a_trusted_file(tmp_path, capsys):
    """A harmless Python object next to the weights: refused by default, loaded with the opt-in (one note)."""
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"w": torch.ones(2)}, "meta": argparse.Namespace(note="hello")}, path)
    with pytest.raises(SSGError) as e:
        hub.load_state_dict(path, nested=("model",))
    assert_refused(str(e.value), path, "argparse.Namespace")
    for _ in range(2):      # shapes first, then weights: one note per file
        assert torch.equal(hub.load_state_dict(path, nested=("model",), trust_pickle=True)["w"], torch.ones(2))
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "weights_only=False" in err


# ---------------------------------------------------------------- training checkpoints
def tap_like_args_module(name: str) -> types.ModuleType:
    """A module named as upstream's `utils/arg_util.py` whose `Args` pickles as a `tap.Tap` does: its state
    lists its attributes and its bound methods (as getattr(args, "method")). Upstream's argument object
    references exactly `utils.arg_util.Args` and `builtins.getattr` when pickled (typed-argument-parser 1.12)."""
    module = types.ModuleType(name)

    class Args:
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def seed_everything(self):
            raise AssertionError("a method of the pickled argument object ran")

        def __getstate__(self):
            return {**self.__dict__, "seed_everything": self.seed_everything}

    Args.__module__, Args.__qualname__ = name, "Args"
    module.Args = Args
    return module


def var_training_checkpoint(golden_dir: Path, path: Path, args) -> dict:
    """upstream train.py's layout: {epoch, iter, trainer: {config, var_wo_ddp, vae_local, var_opt}, args}."""
    d = golden_dir / "var"
    flat = {n: golden_sd(d / f) for n, f in (("vae", "vae_tiny.pth"), ("var", "var_tiny_d2.pth"))}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=1e-4, betas=(0.9, 0.95))
    torch.save({"epoch": 10, "iter": 0, "args": args,
                "trainer": {"config": {"patch_nums": (1, 2, 3), "resos": (16, 32, 48), "label_smooth": 0.0,
                                       "prog_it": 0, "last_prog_si": -1, "first_prog": True},
                            "var_wo_ddp": flat["var"], "vae_local": flat["vae"],
                            "var_opt": {"optimizer": opt.state_dict()}}}, path)
    return flat


def test_upstream_training_checkpoint_loads_without_opt_in(golden_dir, tmp_path):
    """What upstream's train.py writes: `args.state_dict()`, an OrderedDict of plain values (no allow-list needed)."""
    path = tmp_path / "ar-ckpt-last.pth"
    flat = var_training_checkpoint(golden_dir, path, OrderedDict(depth=2, pn="1_2_3", patch_nums=(1, 2, 3), seed=None))
    assert hub.unsafe_globals(path) == []
    for what, nested in (("var", "trainer.var_wo_ddp"), ("vae", "trainer.vae_local")):
        sd = hub.load_state_dict(path, nested=(nested,))
        assert sd.keys() == flat[what].keys() and all(torch.equal(sd[k], flat[what][k]) for k in sd)


@pytest.mark.parametrize("module", ["utils.arg_util", "infinity.utils.arg_util"])   # VAR's, Infinity's
def test_pickled_argument_object_loads_through_inert_stand_ins(golden_dir, tmp_path, monkeypatch, module):
    path = tmp_path / "ar-ckpt-last.pth"
    fake = tap_like_args_module(module)
    parts = module.split(".")
    for i in range(1, len(parts)):   # the packages above it, while saving only
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    monkeypatch.setitem(sys.modules, module, fake)
    flat = var_training_checkpoint(golden_dir, path, fake.Args(depth=2, tlr=3e-4, patch_nums=(1, 2, 3)))
    monkeypatch.undo()               # gone before loading: only the stand-in can answer for the class
    assert module not in sys.modules
    assert {f"{module}.Args", "builtins.getattr"} <= set(hub._pickle_globals(path))  # the file does name them
    assert hub.unsafe_globals(path) == []
    sd = hub.load_state_dict(path, nested=("trainer.var_wo_ddp",))
    assert sd.keys() == flat["var"].keys() and all(torch.equal(sd[k], flat["var"][k]) for k in sd)
    args = hub._torch_load(path, "cpu", trust_pickle=False)["args"]
    assert isinstance(args, hub.PickledArgs)
    assert (args.depth, args.tlr, args.patch_nums, args.seed_everything) == (2, 3e-4, (1, 2, 3), None)


def test_stand_ins_do_nothing_for_a_hostile_file(tmp_path, monkeypatch):
    """The allow-listed names give a hostile file nothing: `getattr` looks nothing up, and an argument class
    outside the list (here another module's `Args`) is refused like any other global."""
    class Lookup:
        def __reduce__(self):
            return getattr, (OrderedDict(a=1), "clear")   # really unpickled: a bound method one could call
    torch.save({"w": torch.ones(1), "f": Lookup()}, tmp_path / "lookup.pth")
    assert hub._torch_load(tmp_path / "lookup.pth", "cpu", trust_pickle=False)["f"] is None

    fake = tap_like_args_module("mytrainer")
    monkeypatch.setitem(sys.modules, "mytrainer", fake)
    torch.save({"model": {"w": torch.ones(1)}, "args": fake.Args(depth=2)}, tmp_path / "other.pth")
    monkeypatch.undo()
    with pytest.raises(SSGError) as e:
        hub.load_state_dict(tmp_path / "other.pth", nested=("model",))
    assert_refused(str(e.value), tmp_path / "other.pth", "mytrainer.Args")


# ---------------------------------------------------------------- the model loaders
@pytest.mark.parametrize("folder, file", [("llm", "ema_model.bin"), ("tokenizer", "pytorch_model.bin")])
def test_hart_loader_refuses_payload(golden_dir, tmp_path, folder, file):
    from hart.modules.models.transformer import HARTForT2I
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(golden_dir / "hart" / "checkpoint", ckpt)
    target = ckpt / folder / file
    target.chmod(0o644)
    canary = tmp_path / "canary"
    poisoned("exec", canary, target, golden_sd(target))
    with pytest.raises(SSGError) as e:
        HARTForT2I.from_pretrained(ckpt / "llm")
    assert_refused(str(e.value), target, "builtins.exec")
    assert not canary.exists()


def test_infinity_and_var_loaders_refuse_payload(golden_dir, tmp_path):
    from Infinity.infinity.models.bsq_vae.vae import vae_model
    from VAR.models import load_vae_var
    canary = tmp_path / "canary"
    vae = poisoned("nested", canary, tmp_path / "infinity_vae.pth", golden_sd(golden_dir / "infinity" /
                                                                            "infinity_vae_tiny.pth")["vae"])
    with pytest.raises(SSGError) as e:
        vae_model(str(vae), 'dynamic', 32, 2 ** 32, patch_size=16, base_ch=32)
    assert_refused(str(e.value), vae, "builtins.exec")
    var = poisoned("system", canary, tmp_path / "var.pth", golden_sd(golden_dir / "var" / "var_tiny_d2.pth"))
    with pytest.raises(SSGError) as e:
        load_vae_var(golden_dir / "var" / "vae_tiny.pth", var, depth=2)
    assert_refused(str(e.value), var, SYSTEM)
    assert not canary.exists()


# ---------------------------------------------------------------- every entry point, as a user runs it
def entry_points(golden_dir: Path, tmp: Path) -> list[tuple[str, list[str], Path]]:
    """(name, command, poisoned file) for each sampler and script that loads checkpoints."""
    canary = tmp / "canary"
    var_d, inf_d = golden_dir / "var", golden_dir / "infinity"
    var_bad = poisoned("exec", canary, tmp / "var_d2.pth", golden_sd(var_d / "var_tiny_d2.pth"))
    vae_bad = poisoned("system", canary, tmp / "vae.pth", golden_sd(var_d / "vae_tiny.pth"))
    inf_vae_bad = tmp / "infinity_vae.pth"
    torch.save({"vae": golden_sd(inf_d / "infinity_vae_tiny.pth")["vae"], "extra": {"x": Exec(canary)}}, inf_vae_bad)
    hart = tmp / "hart"
    shutil.copytree(golden_dir / "hart" / "checkpoint", hart)
    (hart / "llm" / "ema_model.bin").chmod(0o644)
    poisoned("nested", canary, hart / "llm" / "ema_model.bin", golden_sd(hart / "llm" / "ema_model.bin"))
    text = tmp / "text"   # a text-encoder folder that passes the file check; it is never read (HART loads first)
    text.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (text / name).write_text("{}")
    py = sys.executable
    var_flags = ["--vae-ckpt", str(var_d / "vae_tiny.pth"), "--var-ckpt", str(var_bad), "--device", "cpu"]
    return [
        ("VAR/sample_ssg.py", [py, str(REPO / "VAR/sample_ssg.py"), *var_flags, "--out", str(tmp / "g.png")], var_bad),
        ("scripts/var_sample_eval.py", [py, str(REPO / "scripts/var_sample_eval.py"), "--vae-ckpt", str(vae_bad),
                                        "--var-ckpt", str(var_d / "var_tiny_d2.pth"), "--device", "cpu",
                                        "--sample-dir", str(tmp / "samples")], vae_bad),
        ("scripts/ssg_spectra.py", [py, str(REPO / "scripts/ssg_spectra.py"), *var_flags, "--out",
                                    str(tmp / "spectra")], var_bad),
        ("scripts/infinity_t2i.sh", ["bash", str(REPO / "scripts/infinity_t2i.sh"), "--model_type", "infinity_custom",
                                     "--model_path", str(inf_d / "infinity_tiny.pth"), "--vae_path", str(inf_vae_bad),
                                     "--text_encoder_ckpt", str(text), "--pn", "0.06M", "--prompt", "a cat",
                                     "--device", "cpu", "--save_file", str(tmp / "cat.png")], inf_vae_bad),
        ("scripts/hart_t2i.sh", ["bash", str(REPO / "scripts/hart_t2i.sh"), "--model_path", str(hart / "llm"),
                                 "--text_model_path", str(text), "--prompt", "a cat", "--device", "cpu",
                                 "--sample_folder_dir", str(tmp / "hart_out")], hart / "llm" / "ema_model.bin"),
    ]


def test_every_entry_point_refuses_a_poisoned_checkpoint(golden_dir, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    for name, cmd, bad in entry_points(golden_dir, tmp_path):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert str(bad) in lines[0] and "could run code" in lines[0] and "--trust-pickle" in lines[0], (name, lines)
        assert not (tmp_path / "canary").exists(), name
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*")), "nothing is written"


def test_trust_pickle_flag_in_every_entry_point(load_script, monkeypatch):
    """Both spellings, off by default, and the risk stated in --help, wherever checkpoints are loaded."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # the upstream examples import scripts/_upstream.py
    from hart import sample as hart_sample
    from Infinity.tools import run_infinity
    from VAR import sample_ssg
    parsers = {"VAR/sample_ssg.py": sample_ssg.build_parser(), "hart/sample.py": hart_sample.build_parser(),
               "run_infinity.py": run_infinity.build_parser(),
               "scripts/var_sample_eval.py": load_script("scripts/var_sample_eval.py").build_parser(),
               "scripts/ssg_spectra.py": load_script("scripts/ssg_spectra.py").build_parser(),
               "scripts/sweep_ssg.py": load_script("scripts/sweep_ssg.py").build_parser(),
               "scripts/var_upstream_ssg.py": load_script("scripts/var_upstream_ssg.py").build_parser(),
               "scripts/hart_upstream_ssg.py": load_script("scripts/hart_upstream_ssg.py").build_parser()}
    need = {"scripts/var_sample_eval.py": ["--sample-dir", "x"], "scripts/var_upstream_ssg.py": ["--upstream", "x"],
            "scripts/hart_upstream_ssg.py": ["--upstream", "x"]}
    for name, p in parsers.items():
        extra = need.get(name, [])
        assert p.parse_args(extra).trust_pickle is False, name
        assert p.parse_args([*extra, "--trust-pickle"]).trust_pickle is True, name
        assert p.parse_args([*extra, "--trust_pickle"]).trust_pickle is True, name
        text = " ".join(p.format_help().split())
        assert "can run any code" in text and "trust" in text, name


def test_trust_pickle_lets_the_sampler_load_a_trusted_training_checkpoint(golden_dir, tmp_path, capsys):
    """End to end in-process: a checkpoint with a harmless foreign object is refused, then samples with the opt-in."""
    from VAR import sample_ssg
    path = tmp_path / "ckpt.pth"
    var_training_checkpoint(golden_dir, path, argparse.Namespace(depth=2))
    argv = ["--vae-ckpt", str(path), "--var-ckpt", str(path), "--classes", "0,207", "--device", "cpu",
            "--out", str(tmp_path / "g.png")]
    for extra, code in (([], 2), (["--trust-pickle"], 0)):
        try:
            got = sample_ssg.main([*argv, *extra])
        except SystemExit as e:
            got = e.code
        err = capsys.readouterr().err
        assert got == code, err
    assert (tmp_path / "g.png").is_file() and err.count("note:") == 1
