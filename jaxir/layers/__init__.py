"""Flax NNX building blocks shared by every encoder family."""

from jaxir.layers.attention import SelfAttention
from jaxir.layers.embeddings import TokenEmbeddings
from jaxir.layers.pooling import POOLINGS, pool
from jaxir.layers.transformer import Mlp, TransformerLayer

__all__ = ["POOLINGS", "Mlp", "SelfAttention", "TokenEmbeddings", "TransformerLayer", "pool"]
