"""Stand-in for upstream's `tools/run_infinity.py`: the loaders and `gen_one_img` with upstream's names,
signatures and flags, around the stand-in model (a character-level "text encoder", no T5)."""
import torch
from torch import nn

from infinity.models.bsq_vae.vae import vae_model
from infinity.models.infinity import Infinity
from infinity.utils.dynamic_resolution import dynamic_resolution_h_w, h_div_w_templates  # noqa: F401

MODEL_TYPES = {"infinity_2b": dict(depth=4, embed_dim=32), "infinity_tiny": dict(depth=2, embed_dim=16)}


def encode_prompt(text_tokenizer, text_encoder, prompt, enable_positive_prompt=False):
    ids = text_tokenizer(prompt)
    feats = text_encoder(ids).float()                                   # (L, Ct)
    return feats, [len(ids)], torch.tensor([0, len(ids)], dtype=torch.int32), len(ids)


def gen_one_img(infinity_test, vae, text_tokenizer, text_encoder, prompt, cfg_list=[], tau_list=[], negative_prompt='',
                scale_schedule=None, top_k=900, top_p=0.97, cfg_sc=3, cfg_exp_k=0.0, cfg_insertion_layer=-5,
                vae_type=0, gumbel=0, softmax_merge_topk=-1, gt_leak=-1, gt_ls_Bl=None, g_seed=None,
                sampling_per_bits=1, enable_positive_prompt=0):
    if not isinstance(cfg_list, list):
        cfg_list = [cfg_list] * len(scale_schedule)
    if not isinstance(tau_list, list):
        tau_list = [tau_list] * len(scale_schedule)
    text_cond_tuple = encode_prompt(text_tokenizer, text_encoder, prompt, enable_positive_prompt)
    _, _, img_list = infinity_test.autoregressive_infer_cfg(
        vae=vae, scale_schedule=scale_schedule, label_B_or_BLT=text_cond_tuple, g_seed=g_seed, B=1,
        negative_label_B_or_BLT=None, force_gt_Bhw=None, cfg_sc=cfg_sc, cfg_list=cfg_list, tau_list=tau_list,
        top_k=top_k, top_p=top_p, returns_vemb=1, ratio_Bl1=None, gumbel=gumbel, norm_cfg=False, cfg_exp_k=cfg_exp_k,
        cfg_insertion_layer=cfg_insertion_layer, vae_type=vae_type, softmax_merge_topk=softmax_merge_topk,
        ret_img=True, trunk_scale=1000, gt_leak=gt_leak, gt_ls_Bl=gt_ls_Bl, inference_mode=True,
        sampling_per_bits=sampling_per_bits)
    return img_list[0]


def load_tokenizer(t5_path=''):
    encoder = nn.Embedding(64, 2048)
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(64, 2048, generator=torch.Generator().manual_seed(0)))
    return (lambda text: torch.tensor([ord(c) % 64 for c in text] or [0])), encoder.eval().requires_grad_(False)


def load_visual_tokenizer(args):
    return vae_model(args.vae_path, "dynamic", args.vae_type, 2 ** args.vae_type, test_mode=True)


def load_transformer(vae, args):
    model = Infinity(vae, text_channels=args.text_channels, use_bit_label=args.use_bit_label,
                     **MODEL_TYPES[args.model_type])
    model.load_state_dict(torch.load(args.model_path, map_location="cpu", weights_only=True))
    model.eval().requires_grad_(False)
    model.rng = torch.Generator()
    return model


# name -> (type, default, choices): the model flags of upstream's run_infinity.py that the stand-in reads
COMMON_FLAGS = {
    "cfg": (str, "3", None), "tau": (float, 1, None), "pn": (str, None, ["0.06M", "0.25M", "1M"]),
    "model_path": (str, None, None), "cfg_insertion_layer": (int, 0, None), "vae_type": (int, 1, None),
    "vae_path": (str, "", None), "add_lvl_embeding_only_first_block": (int, 0, [0, 1]),
    "use_bit_label": (int, 1, [0, 1]), "model_type": (str, "infinity_2b", None),
    "sampling_per_bits": (int, 1, [1, 2, 4, 8, 16]), "text_encoder_ckpt": (str, "", None),
    "text_channels": (int, 2048, None), "apply_spatial_patchify": (int, 0, [0, 1]),
    "h_div_w_template": (float, 1.0, None), "enable_positive_prompt": (int, 0, [0, 1]), "seed": (int, 0, None),
    "bf16": (int, 1, [0, 1]),
}
REQUIRED = {"pn", "model_path"}


def add_common_arguments(parser):
    for name, (kind, default, choices) in COMMON_FLAGS.items():
        extra = {"required": True} if name in REQUIRED else {"default": default}
        parser.add_argument(f"--{name}", type=kind, choices=choices, **extra)
