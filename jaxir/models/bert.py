"""BERT-family encoders in Flax NNX: BERT, RoBERTa / XLM-RoBERTa, and (via ``distilbert.py``) DistilBERT.

All three are post-LN transformers with learned absolute positions; they differ in
position ids (RoBERTa counts from ``pad_token_id + 1`` over non-pad tokens), segment
embeddings (DistilBERT has none) and checkpoint key names. One :class:`Model` serves
them all; each family contributes a config converter and a key map for
:mod:`jaxir.models.hf`.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = Model(PRESETS["tiny"], rngs=nnx.Rngs(0))
    >>> ids = jnp.array([[101, 7, 8, 102], [101, 9, 102, 0]])
    >>> model(ids, ids > 0).shape
    (2, 4, 32)
    >>> model.mlm_logits(model(ids, ids > 0)).shape
    (2, 4, 128)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.attention import ATTENTION
from jaxir.layers.dot import dot_general
from jaxir.layers.dropout import MASKS
from jaxir.layers.embeddings import TokenEmbeddings
from jaxir.layers.linear import LinearSpec, axes_metadata, layer_norm, linear
from jaxir.layers.transformer import TransformerLayer, activation

FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT-family encoder (one immutable value per model).

    ``position_offset`` is ``None`` for BERT/DistilBERT and ``pad_token_id + 1`` for
    RoBERTa/XLM-R; ``type_vocab_size=0`` means no segment embeddings.
    ``dtype`` is the compute dtype (``"float32"`` or ``"bfloat16"``); parameters are
    always stored in float32. ``linear`` picks the parameterization of the projections
    (attention, MLP, and with ``"head"`` the pooler and MLM-head transform); the default
    is plain :class:`~jaxir.layers.linear.Dense` everywhere. ``dropout_mask`` picks how
    dropout masks are made (:data:`jaxir.layers.dropout.MASKS`: ``"stored"`` is
    ``nnx.Dropout``; ``"key"`` the same mask recomputed in the backward pass; ``"hash"`` a
    fused counter-based hash) and ``attention`` the attention kernel
    (:data:`jaxir.layers.attention.ATTENTION`); neither changes the parameters.
    """

    family: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    position_offset: int | None = None
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    mlm_activation: str = "gelu"
    dropout: float = 0.1
    pad_token_id: int = 0
    mlm_head: bool = True
    pooler: bool = False
    dtype: str = "float32"
    linear: LinearSpec = dataclasses.field(default_factory=LinearSpec)
    dropout_mask: str = "stored"
    attention: str = "xla"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"Unknown encoder family {self.family!r}; expected one of {FAMILIES}.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")
        if self.dropout_mask not in MASKS:
            raise ValueError(f"dropout_mask must be one of {MASKS}, got {self.dropout_mask!r}.")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}.")

    def replace(self, **changes: Any) -> EncoderConfig:
        """A copy with ``changes`` applied (e.g. ``config.replace(dtype="bfloat16")``)."""
        return dataclasses.replace(self, **changes)


#: Shapes of common checkpoints (random init) and a tiny test model.
PRESETS: dict[str, EncoderConfig] = {
    "bert-base": EncoderConfig(),
    "minilm-l6-h384": EncoderConfig(
        hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536
    ),
    "small": EncoderConfig(hidden_size=256, num_layers=2, num_heads=4, intermediate_size=1024),
    "tiny": EncoderConfig(
        vocab_size=128,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_positions=64,
    ),
}


class MlmHead(nnx.Module):
    """Masked-LM head: ``logits = LN(act(hidden @ W)) @ E.T + b`` with ``E`` tied to word embeddings."""

    def __init__(self, config: EncoderConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        self.transform = linear(
            "head", h, h, ("embed", None), spec=config.linear, dtype=dtype, rngs=rngs
        )
        self.norm = layer_norm(h, epsilon=config.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.bias = nnx.Param(
            jnp.zeros((config.vocab_size,), jnp.float32), **axes_metadata(("vocab",))
        )
        self.act = activation(config.mlm_activation)

    def __call__(self, hidden_blh: jax.Array, embedding_vh: jax.Array) -> jax.Array:
        x = self.norm(self.act(self.transform(hidden_blh))).astype(hidden_blh.dtype)
        logits = dot_general(x, embedding_vh.astype(x.dtype), (((2,), (1,)), ((), ())))
        return logits + self.bias[...]


class Model(nnx.Module):
    """A BERT-family encoder: ``(ids [B, L], mask [B, L]) -> hidden [B, L, H]``.

    Heads: :meth:`mlm_logits` (``[B, L, V]``, SPLADE needs it) when ``config.mlm_head``,
    :meth:`pooler_output` (``tanh(W h_cls)``) when ``config.pooler``.
    """

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        self.embeddings = TokenEmbeddings(
            config.vocab_size,
            config.hidden_size,
            config.max_positions,
            config.type_vocab_size,
            config.position_offset,
            config.layer_norm_eps,
            config.dropout,
            dtype=dtype,
            rngs=rngs,
            dropout_mask=config.dropout_mask,
        )
        self.layers = nnx.List(
            [
                TransformerLayer(
                    config.hidden_size,
                    config.num_heads,
                    config.intermediate_size,
                    config.activation,
                    config.layer_norm_eps,
                    config.dropout,
                    dtype=dtype,
                    rngs=rngs,
                    spec=config.linear,
                    dropout_mask=config.dropout_mask,
                    attention=config.attention,
                )
                for _ in range(config.num_layers)
            ]
        )
        h = config.hidden_size
        self.pooler = (
            linear("head", h, h, ("embed", None), spec=config.linear, dtype=dtype, rngs=rngs)
            if config.pooler
            else None
        )
        self.mlm = MlmHead(config, dtype=dtype, rngs=rngs) if config.mlm_head else None

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Last hidden states ``[B, L, H]`` (compute dtype) for ``input_ids`` ``[B, L]``.

        Pass ``rngs`` (with a ``dropout`` stream) to train with dropout; without it the
        forward pass is deterministic.
        """
        x = self.embeddings(input_ids, token_type_ids, rngs=rngs)
        for layer in self.layers:
            x = layer(x, attention_mask, rngs=rngs)
        return x

    def mlm_logits(self, hidden_blh: jax.Array) -> jax.Array:
        """Masked-LM logits ``[B, L, V]`` from hidden states ``[B, L, H]``."""
        if self.mlm is None:
            raise ValueError("This model has no MLM head (config.mlm_head=False).")
        return self.mlm(hidden_blh, self.embeddings.word.embedding[...])

    def pooler_output(self, hidden_blh: jax.Array) -> jax.Array:
        """BERT pooler ``tanh(W h_[CLS] + b)``: ``[B, H]``."""
        if self.pooler is None:
            raise ValueError("This model has no pooler (config.pooler=False).")
        return jnp.tanh(self.pooler(hidden_blh[:, 0]))


# --- Hugging Face conversion -------------------------------------------------------------


def from_hf_config(hf: dict[str, Any]) -> EncoderConfig:
    """:class:`EncoderConfig` from a BERT / RoBERTa / XLM-R ``config.json`` dict."""
    family = hf["model_type"]
    roberta = family in ("roberta", "xlm-roberta")
    pad = hf.get("pad_token_id", 1 if roberta else 0)
    if pad is None:
        pad = 1 if roberta else 0
    return EncoderConfig(
        family=family,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        position_offset=pad + 1 if roberta else None,
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=hf.get("hidden_act", "gelu"),
        mlm_activation="gelu" if roberta else hf.get("hidden_act", "gelu"),
        dropout=hf.get("hidden_dropout_prob", 0.1),
        pad_token_id=pad,
    )


def to_hf_config(config: EncoderConfig) -> dict[str, Any]:
    """``config.json`` fields for ``config`` (inverse of :func:`from_hf_config`)."""
    return {
        "model_type": config.family,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "hidden_act": config.activation,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "pad_token_id": config.pad_token_id,
    }


def _linear(hf: str, path: tuple) -> dict[str, tuple[tuple, bool]]:
    return {f"{hf}.weight": ((*path, "kernel"), True), f"{hf}.bias": ((*path, "bias"), False)}


def _norm(hf: str, path: tuple, weight: str = "weight", bias: str = "bias") -> dict:
    return {f"{hf}.{weight}": ((*path, "scale"), False), f"{hf}.{bias}": ((*path, "bias"), False)}


def hf_param_map(config: EncoderConfig, *, base_prefix: str) -> dict[str, tuple[tuple, bool]]:
    """Maps Hugging Face parameter names to ``(nnx path, transpose?)`` for BERT / RoBERTa.

    ``base_prefix`` is ``"bert."`` / ``"roberta."`` for ``*ForMaskedLM`` checkpoints and
    ``""`` for bare ``*Model`` checkpoints.
    """
    p = base_prefix
    names: dict[str, tuple[tuple, bool]] = {
        f"{p}embeddings.word_embeddings.weight": (("embeddings", "word", "embedding"), False),
        f"{p}embeddings.position_embeddings.weight": (
            ("embeddings", "position", "embedding"),
            False,
        ),
        **_norm(f"{p}embeddings.LayerNorm", ("embeddings", "norm")),
    }
    if config.type_vocab_size:
        names[f"{p}embeddings.token_type_embeddings.weight"] = (
            ("embeddings", "token_type", "embedding"),
            False,
        )
    for i in range(config.num_layers):
        hf, me = f"{p}encoder.layer.{i}", ("layers", i)
        for proj in ("query", "key", "value"):
            names |= _linear(f"{hf}.attention.self.{proj}", (*me, "attention", proj))
        names |= _linear(f"{hf}.attention.output.dense", (*me, "attention", "output"))
        names |= _norm(f"{hf}.attention.output.LayerNorm", (*me, "attention_norm"))
        names |= _linear(f"{hf}.intermediate.dense", (*me, "mlp", "up"))
        names |= _linear(f"{hf}.output.dense", (*me, "mlp", "down"))
        names |= _norm(f"{hf}.output.LayerNorm", (*me, "mlp_norm"))
    if config.pooler:
        names |= _linear(f"{p}pooler.dense", ("pooler",))
    if config.mlm_head:
        if config.family == "bert":
            names |= _linear("cls.predictions.transform.dense", ("mlm", "transform"))
            names |= _norm("cls.predictions.transform.LayerNorm", ("mlm", "norm"))
            names["cls.predictions.bias"] = (("mlm", "bias"), False)
        else:
            names |= _linear("lm_head.dense", ("mlm", "transform"))
            names |= _norm("lm_head.layer_norm", ("mlm", "norm"))
            names["lm_head.bias"] = (("mlm", "bias"), False)
    return names


#: Checkpoint keys that carry no information for jaxir (tied copies, NSP head, buffers).
HF_IGNORED_SUFFIXES = (
    "embeddings.position_ids",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "lm_head.decoder.weight",
    "lm_head.decoder.bias",
    "cls.seq_relationship.weight",
    "cls.seq_relationship.bias",
)
