from .configuration import HARTAutoEncoderConfig, HARTAutoEncoderWithDiscConfig
from .hart_autoencoder import HARTAutoEncoder
from .hart_autoencoder_with_disc import HARTAutoEncoderWithDisc

__all__ = ["HARTAutoEncoderConfig", "HARTAutoEncoderWithDiscConfig", "HARTAutoEncoder", "HARTAutoEncoderWithDisc"]
