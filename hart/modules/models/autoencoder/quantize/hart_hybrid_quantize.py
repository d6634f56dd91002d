"""HART's hybrid quantizer: VAR's discrete multi-scale codebook; the continuous residual of the
last scale is not quantized here but sampled by the transformer's diffusion head and added to
f_hat directly (see `HARTForT2I.autoregressive_infer_cfg`)."""
from __future__ import annotations

from .var_quantize_multiple_res import VectorQuantizer2

__all__ = ["HARTHybridQuantizer"]


class HARTHybridQuantizer(VectorQuantizer2):
    """Same parameters and keys as `VectorQuantizer2` (`quantizer_type` "var_hybrid")."""
