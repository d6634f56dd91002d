"""SSG: Scaled Spatial Guidance for next-scale autoregressive image models.

    ssg = SSG(beta=0.5)                  # constant beta for scales k >= 1
    ssg.reset(num_scales)                # once per sampling call
    for k, (h, w) in enumerate(scales):
        logits = ...                     # (B, h*w, C), after CFG
        logits = ssg(k, logits, (h, w))  # guided; keeps a copy of the unguided logits
        tokens = sample(logits)          # top-k / top-p may modify logits in place
"""
from .dct import dct_matrix, idct_matrix, dct2, idct2
from .dse import dse, dse_reference, dse_operator
from .guidance import SSG, ssg_guide
from .errors import SSGError

__all__ = ["SSG", "ssg_guide", "dse", "dse_reference", "dse_operator", "dct_matrix", "idct_matrix",
           "dct2", "idct2", "SSGError"]
