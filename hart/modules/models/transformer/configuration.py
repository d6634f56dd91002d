"""Hyper-parameters of the HART transformer, as stored in `llm/config.json` (every field written out)."""
from __future__ import annotations

from transformers import PretrainedConfig

__all__ = ["VARTransformerT2IConfig", "HARTForT2IConfig"]


class VARTransformerT2IConfig(PretrainedConfig):
    model_type = "var_transformer_t2i"

    def __init__(self, context_token: int = 77, context_dim: int = 768, embed_dim: int = 1024, depth: int = 16,
                 num_heads: int = 16, mlp_ratio: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, shared_aln: bool = False,
                 cond_drop_rate: float = 0.1, attn_l2_norm: bool = False,
                 patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), flash_if_available: bool = True,
                 fused_if_available: bool = True, mlp_type: str = "gpt2", attn_type: str = "gpt2",
                 disable_aln: bool = False, use_timestep_embed: bool = False, sep_aln_pooling_mode: str = "max",
                 use_cross_attn: bool = False, vae_path: str | None = None, use_context_norm: bool = False,
                 context_norm_scale: float = 1.0, **kwargs):
        super().__init__()  # as upstream: unknown keys (architectures, torch_dtype, ...) are dropped
        self.context_token, self.context_dim = context_token, context_dim
        self.embed_dim, self.depth, self.num_heads, self.mlp_ratio = embed_dim, depth, num_heads, mlp_ratio
        self.drop_rate, self.attn_drop_rate, self.drop_path_rate = drop_rate, attn_drop_rate, drop_path_rate
        self.norm_eps, self.shared_aln, self.cond_drop_rate = norm_eps, shared_aln, cond_drop_rate
        self.attn_l2_norm = attn_l2_norm
        self.patch_nums = tuple(patch_nums)
        self.flash_if_available, self.fused_if_available = flash_if_available, fused_if_available
        self.mlp_type, self.attn_type = mlp_type, attn_type
        self.disable_aln, self.use_timestep_embed = disable_aln, use_timestep_embed
        self.sep_aln_pooling_mode, self.use_cross_attn = sep_aln_pooling_mode, use_cross_attn
        self.vae_path = vae_path
        self.use_context_norm, self.context_norm_scale = use_context_norm, context_norm_scale


class HARTForT2IConfig(VARTransformerT2IConfig):
    model_type = "hart_transformer_t2i"

    def __init__(self, diffusion_head_repeats: int = 1, diff_width: int = 1024, diff_depth: int = 6,
                 num_sampling_steps: str = "8", diffusion_batch_mul: int = 4, sampler: str = "iddpm", **kwargs):
        super().__init__(**kwargs)
        self.diffusion_head_repeats = diffusion_head_repeats
        self.diff_width, self.diff_depth = diff_width, diff_depth
        self.num_sampling_steps = str(num_sampling_steps)
        self.diffusion_batch_mul, self.sampler = diffusion_batch_mul, sampler
