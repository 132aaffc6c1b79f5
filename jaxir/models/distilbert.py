"""DistilBERT: the BERT :class:`~jaxir.models.bert.Model` without segment embeddings.

Only the config and the checkpoint key names differ from BERT.

Example:
    >>> from_hf_config({"model_type": "distilbert", "vocab_size": 99, "dim": 32, "n_layers": 1,
    ...                 "n_heads": 4, "hidden_dim": 37}).type_vocab_size
    0
"""

from __future__ import annotations

from typing import Any

from jaxir.models.bert import EncoderConfig, _linear, _norm

HF_IGNORED_SUFFIXES = ("embeddings.position_ids", "vocab_projector.weight")


def from_hf_config(hf: dict[str, Any]) -> EncoderConfig:
    """:class:`EncoderConfig` from a DistilBERT ``config.json`` dict."""
    # Sinusoidal position tables (``sinusoidal_pos_embds``) are stored in the checkpoint
    # as ordinary position embeddings, so both variants load the same way.
    act = hf.get("activation", "gelu")
    return EncoderConfig(
        family="distilbert",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["dim"],
        num_layers=hf["n_layers"],
        num_heads=hf["n_heads"],
        intermediate_size=hf["hidden_dim"],
        max_positions=hf.get("max_position_embeddings", 512),
        type_vocab_size=0,
        layer_norm_eps=1e-12,
        activation=act,
        mlm_activation=act,
        dropout=hf.get("dropout", 0.1),
        pad_token_id=hf.get("pad_token_id", 0) or 0,
    )


def to_hf_config(config: EncoderConfig) -> dict[str, Any]:
    """DistilBERT ``config.json`` fields for ``config``."""
    return {
        "model_type": "distilbert",
        "vocab_size": config.vocab_size,
        "dim": config.hidden_size,
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "hidden_dim": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "activation": config.activation,
        "dropout": config.dropout,
        "attention_dropout": config.dropout,
        "pad_token_id": config.pad_token_id,
    }


def hf_param_map(config: EncoderConfig, *, base_prefix: str) -> dict[str, tuple[tuple, bool]]:
    """Maps DistilBERT parameter names to ``(nnx path, transpose?)``."""
    p = base_prefix
    names: dict[str, tuple[tuple, bool]] = {
        f"{p}embeddings.word_embeddings.weight": (("embeddings", "word", "embedding"), False),
        f"{p}embeddings.position_embeddings.weight": (
            ("embeddings", "position", "embedding"),
            False,
        ),
        **_norm(f"{p}embeddings.LayerNorm", ("embeddings", "norm")),
    }
    for i in range(config.num_layers):
        hf, me = f"{p}transformer.layer.{i}", ("layers", i)
        for theirs, ours in (("q_lin", "query"), ("k_lin", "key"), ("v_lin", "value")):
            names |= _linear(f"{hf}.attention.{theirs}", (*me, "attention", ours))
        names |= _linear(f"{hf}.attention.out_lin", (*me, "attention", "output"))
        names |= _norm(f"{hf}.sa_layer_norm", (*me, "attention_norm"))
        names |= _linear(f"{hf}.ffn.lin1", (*me, "mlp", "up"))
        names |= _linear(f"{hf}.ffn.lin2", (*me, "mlp", "down"))
        names |= _norm(f"{hf}.output_layer_norm", (*me, "mlp_norm"))
    if config.mlm_head:
        names |= _linear("vocab_transform", ("mlm", "transform"))
        names |= _norm("vocab_layer_norm", ("mlm", "norm"))
        names["vocab_projector.bias"] = (("mlm", "bias"), False)
    return names
