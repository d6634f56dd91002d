"""Hyper-parameters of HART's hybrid tokenizer, as stored in `tokenizer/config.json`."""
from __future__ import annotations

from transformers import PretrainedConfig

__all__ = ["HARTAutoEncoderConfig", "HARTAutoEncoderWithDiscConfig"]


class HARTAutoEncoderConfig(PretrainedConfig):
    model_type = "hart_autoencoder"

    def __init__(self, vocab_size: int = 4096, z_channels: int = 32, ch: int = 160, ch_mult=(1, 1, 2, 2, 4),
                 dropout: float = 0.0, beta: float = 0.25, using_znorm: bool = False, quant_conv_ks: int = 3,
                 quant_resi: float = 0.5, share_quant_resi: int = 4, default_qresi_counts: int = 0,
                 v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), test_mode: bool = False, levels=None,
                 quantizer_type: str = "var_hybrid", hybrid: bool = False, freeze_codebook_for_hybrid: bool = True,
                 double_decoder: bool = False, disable_quant_resi: bool = False, **kwargs):
        super().__init__()  # as upstream: unknown keys (architectures, torch_dtype, ...) are dropped
        self.vocab_size, self.z_channels, self.ch = vocab_size, z_channels, ch
        self.ch_mult = tuple(ch_mult)
        self.dropout, self.beta, self.using_znorm = dropout, beta, using_znorm
        self.quant_conv_ks, self.quant_resi, self.share_quant_resi = quant_conv_ks, quant_resi, share_quant_resi
        self.default_qresi_counts = default_qresi_counts
        self.v_patch_nums = tuple(v_patch_nums)
        self.test_mode, self.levels, self.quantizer_type = test_mode, levels, quantizer_type
        self.hybrid, self.freeze_codebook_for_hybrid = hybrid, freeze_codebook_for_hybrid
        self.double_decoder, self.disable_quant_resi = double_decoder, disable_quant_resi


class HARTAutoEncoderWithDiscConfig(HARTAutoEncoderConfig):
    model_type = "hart_autoencoder_with_disc"

    def __init__(self, **kwargs):  # explicit: transformers >= 5 would otherwise generate a dataclass __init__
        super().__init__(**kwargs)
