"""Run an upstream checkout's own `autoregressive_infer_cfg` inside `enable_ssg` on a golden checkpoint.

    python tests/upstream_harness.py var /path/to/VAR --golden ../shared/golden/var \
        --ssg '{"beta": [0, 0.5, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}' --out tokens.npz
    python tests/upstream_harness.py script hart /path/to/hart ../shared/golden/hart /tmp/qwen -- <script flags>

A subprocess helper of tests/test_upstream_checkouts.py (upstream's `hart` cannot share a process with this
project's). Upstream's code is used unmodified, built and called as the golden README of the model says;
what upstream needs on a CPU machine is supplied here, in this process only, as import-only stand-ins:
* Infinity: a `flash_attn` module whose varlen attention is exact per-segment SDPA in float32 (the golden
  README's replacement), empty `pytz`/`imageio`/`cv2`/`pandas` when they are not installed, and the block norm
  `fused_ada_layer_norm` evaluated with its own (uncompiled) body;
* HART: a `hart_backend.fused_kernels` module with the RMSNorm formula, `.cuda()` as a no-op, and (for
  transformers >= 5, where upstream's `from_pretrained` fails) a loader that reads the config and the
  weight file and constructs the classes directly.
Writes the sampled tokens (bits for Infinity) of every scale and the file of the module that sampled them.
No bytecode is written into the checkout.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

sys.dont_write_bytecode = True   # leave the checkout's files as they are (no __pycache__)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))   # for ssg_core only: the repository root also holds this project's `hart`

from ssg_core import SSG  # noqa: E402
from ssg_core.integrations import enable_ssg  # noqa: E402
import ssg_core.sampling  # noqa: E402,F401

# Upstream's `hart` (and `infinity`) are namespace packages (no __init__.py): a regular package of the same name
# anywhere on sys.path wins over them, even behind the checkout. So the repository leaves the path again.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]


def _module(name: str, **attrs) -> types.ModuleType:
    import importlib.machinery
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)   # transformers probes packages with find_spec
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


BY_HAND = False   # --by-hand: the checkout carries the lines of docs/upstream.md and takes ssg= itself


def _guided(model, ssg: SSG):
    """(context, extra keyword arguments) of one guided call: enable_ssg, or ssg= for a hand-edited checkout."""
    import contextlib
    return (contextlib.nullcontext(), {"ssg": ssg}) if BY_HAND else (enable_ssg(model, ssg), {})


def _spy(namespace: dict, name: str, record: list):
    """Wrap the sampler `namespace[name]` so that the indices it returns are kept (before enable_ssg wraps it)."""
    real = namespace[name]

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        record.append(out[:, :, 0].clone())
        return out

    namespace[name] = spy


# ---------------------------------------------------------------- VAR
def run_var(checkout: Path, golden: Path, ssg: SSG, g_seed: int | None) -> dict:
    import models
    import models.var
    case = json.loads((golden / "case.json").read_text())
    spec = next(c for c in case["cases"] if c["file"] == "expected_ssg.npz")
    vae, var = models.build_vae_var(**case["var"]["d2"]["builder"]["kwargs"])
    vae.load_state_dict(torch.load(golden / "vae_tiny.pth", map_location="cpu", weights_only=True), strict=True)
    var.load_state_dict(torch.load(golden / "var_tiny_d2.pth", map_location="cpu", weights_only=True), strict=True)
    vae.eval(), var.eval()   # upstream's builder returns the VAR in train mode; the golden run used eval
    tokens: list = []
    _spy(vars(models.var), "sample_with_top_k_top_p_", tokens)
    context, extra = _guided(var, ssg)
    with torch.inference_mode(), context:
        var.autoregressive_infer_cfg(spec["B"], torch.tensor(spec["labels"], dtype=torch.int64),
                                     g_seed=spec["g_seed"] if g_seed is None else g_seed, cfg=spec["cfg"],
                                     top_k=spec["top_k"], top_p=spec["top_p"], more_smooth=False, **extra)
    return {"module_file": models.var.__file__, **{f"tokens_s{k}": t.numpy() for k, t in enumerate(tokens)}}


# ---------------------------------------------------------------- Infinity
def _flash_attn_stand_in() -> None:
    import torch.nn.functional as F

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
        raise RuntimeError("flash_attn_func stand-in: not used at inference")

    def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                        dropout_p=0.0, softmax_scale=None, causal=False, **unused):
        """q (sum Lq, H, c), kv (sum Lk, 2, H, c): query segment b attends to key segment b, float32 SDPA."""
        out = []
        for b in range(len(cu_seqlens_q) - 1):
            qs = q[int(cu_seqlens_q[b]):int(cu_seqlens_q[b + 1])].float().transpose(0, 1)[None]
            kvs = kv[int(cu_seqlens_k[b]):int(cu_seqlens_k[b + 1])].float()
            ks, vs = kvs[:, 0].transpose(0, 1)[None], kvs[:, 1].transpose(0, 1)[None]
            out.append(F.scaled_dot_product_attention(qs, ks, vs, scale=softmax_scale)[0].transpose(0, 1))
        return torch.cat(out).to(q.dtype)

    _module("flash_attn", flash_attn_func=flash_attn_func, flash_attn_varlen_kvpacked_func=flash_attn_varlen_kvpacked_func)
    for name in ("pytz", "imageio", "cv2", "pandas"):   # imported at module level, unused at inference
        if not _importable(name):
            _module(name)


def run_infinity(checkout: Path, golden: Path, ssg: SSG, g_seed: int | None, h_div_w: float | None = None) -> dict:
    _flash_attn_stand_in()
    import infinity.models.bsq_vae.vae as vae_module
    import infinity.models.infinity as inf_module
    case = json.loads((golden / "case.json").read_text())
    compiled = inf_module.fused_ada_layer_norm   # the golden run used its body, uncompiled
    inf_module.fused_ada_layer_norm = getattr(compiled, "_torchdynamo_orig_callable", None) or compiled.__wrapped__

    real_autoencoder = vae_module.AutoEncoder

    def tiny_autoencoder(args):   # vae_model hard-codes base_ch 128; the golden VAE has 32
        args.base_ch = case["vae"]["base_ch_override"]
        return real_autoencoder(args)

    vae_module.AutoEncoder = tiny_autoencoder
    b = case["vae"]["builder_args"]
    vae = vae_module.vae_model(str(golden / "infinity_vae_tiny.pth"), b["schedule_mode"], b["codebook_dim"],
                               b["codebook_size"], test_mode=b["test_mode"], patch_size=b["patch_size"],
                               encoder_ch_mult=b["encoder_ch_mult"], decoder_ch_mult=b["decoder_ch_mult"])
    kwargs = {k: v for k, v in case["transformer"]["constructor_kwargs"].items() if k != "vae_local"}
    model = inf_module.Infinity(vae_local=vae, **kwargs)
    model.load_state_dict(torch.load(golden / "infinity_tiny.pth", map_location="cpu", weights_only=True), strict=True)
    model.eval().requires_grad_(False)
    model.rng = torch.Generator("cpu")
    z = np.load(golden / "expected_ssg.npz")
    label = (torch.from_numpy(z["kv_compact"]), z["lens"].tolist(), torch.from_numpy(z["cu_seqlens_k"]),
             int(z["max_seqlen_k"]))
    call = dict(case["sampling"]["autoregressive_infer_cfg_kwargs"])
    if g_seed is not None:
        call["g_seed"] = g_seed
    schedule = [tuple(int(v) for v in s) for s in case["sampling"]["scale_schedule"]]
    if h_div_w is not None:   # another aspect-ratio template of upstream's table, as tools/run_infinity.py builds it
        from infinity.utils.dynamic_resolution import dynamic_resolution_h_w
        schedule = [(1, int(h), int(w)) for _, h, w in dynamic_resolution_h_w[h_div_w]["0.06M"]["scales"]]
    call["cfg_list"], call["tau_list"] = [call["cfg_list"][0]] * len(schedule), [call["tau_list"][0]] * len(schedule)
    bits: list = []   # upstream returns no labels for bitwise models; the sampler's output (B, h*w*d) holds them
    _spy(vars(inf_module), "sample_with_top_k_top_p_also_inplace_modifying_logits_", bits)
    context, extra = _guided(model, ssg)
    with torch.inference_mode(), context:
        model.autoregressive_infer_cfg(vae=vae, scale_schedule=schedule, label_B_or_BLT=label, **call, **extra)
    return {"module_file": inf_module.__file__,
            **{f"bits_{k}": b.reshape(b.shape[0], h, w, -1).numpy() for k, (b, (_, h, w)) in enumerate(zip(bits, schedule))}}


# ---------------------------------------------------------------- HART
def _hart_stand_ins() -> None:
    def rms_norm(out, x, weight, eps, use_quant):
        xf = x.float()
        out.copy_((xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight)

    def unavailable(*args, **kwargs):
        raise RuntimeError("hart_backend stand-in: fused RoPE is not used by upstream inference")

    kernels = _module("hart_backend.fused_kernels", rms_norm=rms_norm, fused_rope_forward_func=unavailable,
                      fused_rope_backward_func=unavailable, fused_rope_with_pos_forward_func=unavailable)
    _module("hart_backend", fused_kernels=kernels)
    _no_cuda()


def _no_cuda() -> None:
    """On a machine without a GPU, upstream's unconditional .cuda() / .to('cuda') calls leave things on the CPU."""
    if torch.cuda.is_available():
        return
    real_to = torch.nn.Module.to
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.nn.Module.to = lambda self, *a, **k: self if a and str(a[0]).startswith("cuda") else real_to(self, *a, **k)


def _direct_from_pretrained(cls, strict: bool):
    """transformers >= 5 cannot run upstream's from_pretrained: read the config, construct, load the weights."""
    def from_pretrained(path, **unused):
        path = Path(path)
        config = cls.config_class.from_pretrained(str(path))
        config._name_or_path = str(path)
        model = cls(config)
        weights = path / "pytorch_model.bin"
        if weights.exists():
            state = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file
            state = load_file(str(path / "model.safetensors"))
        result = model.load_state_dict(state, strict=strict)
        if not strict:   # the tokenizer: only the discriminator may be missing
            assert all(k.startswith("disc.") for k in result.missing_keys), result.missing_keys
            assert not result.unexpected_keys, result.unexpected_keys
        return model
    return classmethod(lambda c, path, **kw: from_pretrained(path, **kw))


def run_hart(checkout: Path, golden: Path, ssg: SSG, g_seed: int | None) -> dict:
    import copy

    import transformers
    _hart_stand_ins()
    import hart.modules.models.transformer.hart_transformer_t2i as hart_module
    from hart.modules.models.autoencoder import HARTAutoEncoder, HARTAutoEncoderWithDisc
    from hart.modules.models.transformer import HARTForT2I
    if int(transformers.__version__.split(".")[0]) >= 5:
        HARTAutoEncoderWithDisc.from_pretrained = _direct_from_pretrained(HARTAutoEncoderWithDisc, strict=False)
        HARTAutoEncoder.from_pretrained = _direct_from_pretrained(HARTAutoEncoder, strict=False)
        HARTForT2I.from_pretrained = _direct_from_pretrained(HARTForT2I, strict=True)
    llm = golden / "checkpoint" / "llm"
    model = HARTForT2I.from_pretrained(llm).eval()   # as sample.py: from_pretrained, eval, deepcopy, EMA weights
    ema = copy.deepcopy(model)
    ema.load_state_dict(torch.load(llm / "ema_model.bin", map_location="cpu", weights_only=True), strict=True)
    case, z = np.load(golden / "expected.npz"), np.load(golden / "expected_ssg.npz")
    tokens: list = []
    _spy(vars(hart_module), "sample_with_top_k_top_p_", tokens)
    torch.manual_seed(int(z["torch_seed"]))
    np.random.seed(int(z["numpy_seed"]))
    context, extra = _guided(ema, ssg)
    with torch.inference_mode(), context:
        image = ema.autoregressive_infer_cfg(
            B=2, label_B=torch.from_numpy(case["context_tensor"]), g_seed=int(z["g_seed"]) if g_seed is None else g_seed,
            cfg=float(z["cfg"]), more_smooth=bool(z["more_smooth"]),
            context_position_ids=torch.from_numpy(z["context_position_ids"]), context_mask=torch.from_numpy(z["context_mask"]),
            **extra)
    return {"module_file": hart_module.__file__, "image": image.numpy(),
            **{f"tokens_s{k}": t.numpy() for k, t in enumerate(tokens)}}


# ---------------------------------------------------------------- the example scripts, on a CPU
def _tiny_text_encoder(kind: str, folder: Path, width: int) -> None:
    """A random text encoder of the width the golden transformer expects (T5 for Infinity, Qwen2 for HART)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    texts = ["a photo of a cat", "a red heart on a white table", "an owl in the snow", "a dog on a hill"]
    torch.manual_seed(0)
    if kind == "t5":
        from transformers import T5Config, T5EncoderModel, T5TokenizerFast
        tok = Tokenizer(models.Unigram())
        tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizers.NFKC(), pre_tokenizers.Metaspace(), decoders.Metaspace()
        tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"],
                                                               unk_token="<unk>"))
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                        extra_ids=0).save_pretrained(folder)
        T5EncoderModel(T5Config(vocab_size=64, d_model=width, d_kv=32, d_ff=256, num_layers=1, num_heads=4,
                                feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                decoder_start_token_id=0)).save_pretrained(folder)
    else:
        from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
                                      padding_side="right")
        tok.save_pretrained(folder)
        Qwen2Model(Qwen2Config(vocab_size=len(tok), hidden_size=width, num_hidden_layers=1, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=256)).save_pretrained(folder)


def script(model: str, checkout: Path, golden: Path, text_dir: Path, argv: list[str]) -> None:
    """Run scripts/<model>_upstream_ssg.py on a CPU with the stand-ins above and the golden checkpoints' sizes
    (Infinity's loaders hard-code the released widths: they are lowered to the golden ones here)."""
    import runpy
    sys.path.insert(0, str(checkout.resolve()))
    if model == "infinity":
        _flash_attn_stand_in()
        import infinity.models.bsq_vae.vae as vae_module
        import infinity.models.infinity as inf_module
        case = json.loads((golden / "case.json").read_text())
        compiled = inf_module.fused_ada_layer_norm
        inf_module.fused_ada_layer_norm = getattr(compiled, "_torchdynamo_orig_callable", None) or compiled.__wrapped__
        real_vae_model, real_autoencoder = vae_module.vae_model, vae_module.AutoEncoder
        b, t = case["vae"]["builder_args"], case["transformer"]["constructor_kwargs"]

        def autoencoder(args):
            args.base_ch = case["vae"]["base_ch_override"]
            return real_autoencoder(args)

        def vae_model(path, schedule_mode, codebook_dim, codebook_size, **kw):
            kw.update(encoder_ch_mult=b["encoder_ch_mult"], decoder_ch_mult=b["decoder_ch_mult"])
            return real_vae_model(path, schedule_mode, codebook_dim, codebook_size, **kw)

        class GoldenSized(inf_module.Infinity):   # the widths of the golden file instead of --model_type's
            def __init__(self, **kw):
                super().__init__(**{**kw, **{k: t[k] for k in ("depth", "embed_dim", "num_heads", "block_chunks")}})

        vae_module.AutoEncoder, vae_module.vae_model, inf_module.Infinity = autoencoder, vae_model, GoldenSized
        _no_cuda()   # tools/run_infinity.py's loaders move everything to CUDA
        if not (text_dir / "config.json").exists():
            _tiny_text_encoder("t5", text_dir, t["text_channels"])
    elif model == "hart":
        _hart_stand_ins()
        import transformers
        from hart.modules.models.autoencoder import HARTAutoEncoder, HARTAutoEncoderWithDisc
        from hart.modules.models.transformer import HARTForT2I
        if int(transformers.__version__.split(".")[0]) >= 5:
            HARTAutoEncoderWithDisc.from_pretrained = _direct_from_pretrained(HARTAutoEncoderWithDisc, strict=False)
            HARTAutoEncoder.from_pretrained = _direct_from_pretrained(HARTAutoEncoder, strict=False)
            HARTForT2I.from_pretrained = _direct_from_pretrained(HARTForT2I, strict=True)
        if not (text_dir / "config.json").exists():
            _tiny_text_encoder("qwen2", text_dir, 1536)
    sys.path.remove(str(checkout.resolve()))
    sys.argv = [str(REPO / "scripts" / f"{model}_upstream_ssg.py"), *argv]
    sys.path.insert(0, str(REPO / "scripts"))
    runpy.run_path(sys.argv[0], run_name="__main__")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "script":   # script MODEL CHECKOUT GOLDEN TEXT_DIR -- script flags
        model, checkout, golden, text_dir = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
        torch.set_num_threads(2)
        return script(model, checkout, golden, text_dir, sys.argv[sys.argv.index("--") + 1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=["var", "infinity", "hart"])
    p.add_argument("checkout", type=Path)
    p.add_argument("--golden", type=Path, required=True, help="the golden folder of the model, e.g. ../shared/golden/var")
    p.add_argument("--ssg", default="{}", help="SSG keyword arguments as JSON")
    p.add_argument("--g-seed", type=int, default=None, help="another sampling seed than the golden case's")
    p.add_argument("--h-div-w", type=float, default=None, help="Infinity: the 0.06M schedule of this h/w template")
    p.add_argument("--by-hand", action="store_true",
                   help="the checkout has the lines of docs/upstream.md: pass ssg= instead of using enable_ssg")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    global BY_HAND
    BY_HAND = args.by_hand
    torch.set_num_threads(2)   # the golden files were written with 2 threads
    sys.path.insert(0, str(args.checkout.resolve()))
    run = {"var": run_var, "infinity": run_infinity, "hart": run_hart}[args.model]
    extra = {"h_div_w": args.h_div_w} if args.h_div_w is not None else {}
    result = run(args.checkout, args.golden, SSG(**json.loads(args.ssg)), args.g_seed, **extra)
    if not Path(str(result["module_file"])).resolve().is_relative_to(args.checkout.resolve()):
        sys.exit(f"sampled with {result['module_file']}, not with the checkout {args.checkout}")
    np.savez(args.out, **result)


if __name__ == "__main__":
    main()
