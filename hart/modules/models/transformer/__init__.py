from .configuration import HARTForT2IConfig, VARTransformerT2IConfig
from .hart_transformer_t2i import HARTForT2I

__all__ = ["HARTForT2I", "HARTForT2IConfig", "VARTransformerT2IConfig"]
