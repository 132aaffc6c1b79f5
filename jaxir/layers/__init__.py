"""Flax NNX building blocks shared by every encoder family.

Parameter-free pooling lives in :mod:`jaxir.reps.pooling`.
"""

from jaxir.layers.attention import SelfAttention
from jaxir.layers.embeddings import TokenEmbeddings
from jaxir.layers.transformer import Mlp, TransformerLayer

__all__ = ["Mlp", "SelfAttention", "TokenEmbeddings", "TransformerLayer"]
