"""Model families (one file each) and Hugging Face checkpoint IO."""

from jaxir.models.bert import PRESETS, EncoderConfig, Model
from jaxir.models.hf import CheckpointError, load_pretrained, save_pretrained

__all__ = [
    "PRESETS",
    "CheckpointError",
    "EncoderConfig",
    "Model",
    "load_pretrained",
    "save_pretrained",
]
