from .hart_transformer_t2i import HARTForT2I  # noqa: F401
