"""Dual encoder (DPR / Contriever / TAS-B style): query and passage towers over any jaxir encoder.

The towers are tied (one encoder, as in Contriever / TAS-B) or untied (DPR). The
*contract* -- pooling, normalisation, prefixes, max lengths, temperature -- is a
:class:`DualEncoderSpec` saved next to the weights (``dual_encoder.json``), so serving
can never silently encode queries differently from training.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS
    >>> model = DualEncoder.create(PRESETS["tiny"], DualEncoderSpec(), rngs=nnx.Rngs(0))
    >>> ids = jnp.array([[101, 7, 102, 0]])
    >>> model.encode_queries(ids, ids > 0).shape
    (1, 32)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.models import hf
from jaxir.models.bert import EncoderConfig, Model
from jaxir.reps.dense import embed
from jaxir.reps.pooling import POOLINGS

SPEC_FILE = "dual_encoder.json"
SPEC_FORMAT = "jaxir-dual-encoder/1"


@dataclasses.dataclass(frozen=True)
class DualEncoderSpec:
    """How texts become vectors and scores (the serving contract)."""

    pooling: str = "mean"
    normalize: bool = True
    temperature: float = 0.05
    learn_temperature: bool = False
    tied: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    query_max_length: int = 32
    passage_max_length: int = 128

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")


class DualEncoder(nnx.Module):
    """Query and passage towers; ``scores = scale * q @ p.T`` with ``scale = 1 / temperature``."""

    def __init__(self, query_encoder: Model, passage_encoder: Model | None, spec: DualEncoderSpec):
        self.spec = spec
        self.query_encoder = query_encoder
        self.passage_encoder = passage_encoder
        self.log_scale = (
            nnx.Param(jnp.log(jnp.float32(1.0 / spec.temperature)))
            if spec.learn_temperature
            else None
        )

    @classmethod
    def create(cls, config: EncoderConfig, spec: DualEncoderSpec, *, rngs: nnx.Rngs) -> DualEncoder:
        """A randomly initialised dual encoder (no MLM head) with ``config``-shaped towers."""
        config = config.replace(mlm_head=False)
        query = Model(config, rngs=rngs)
        passage = None if spec.tied else Model(config, rngs=rngs)
        return cls(query, passage, spec)

    def scale(self) -> jax.Array:
        """Score multiplier ``1 / temperature`` (learned when ``spec.learn_temperature``)."""
        if self.log_scale is None:
            return jnp.float32(1.0 / self.spec.temperature)
        return jnp.exp(self.log_scale[...])

    def _embed(self, encoder: Model, ids, mask, rngs) -> jax.Array:
        hidden = encoder(ids, mask, rngs=rngs)
        return embed(hidden, mask, pooling=self.spec.pooling, normalize=self.spec.normalize)

    def encode_queries(self, ids_bl, mask_bl, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Query vectors ``[B, D]`` float32 from token ids ``[B, L]``."""
        return self._embed(self.query_encoder, ids_bl, mask_bl, rngs)

    def encode_passages(self, ids_nl, mask_nl, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Passage vectors ``[N, D]`` float32 from token ids ``[N, L]``."""
        encoder = self.query_encoder if self.passage_encoder is None else self.passage_encoder
        return self._embed(encoder, ids_nl, mask_nl, rngs)


def save_dual_encoder(
    model: DualEncoder, path: str | pathlib.Path, *, tokenizer: Any = None
) -> None:
    """Writes ``query/`` (and ``passage/`` when untied) as Hugging Face directories + ``dual_encoder.json``.

    Each tower directory also gets the tokenizer (when given), so it loads on its own
    with :func:`jaxir.models.hf.load_pretrained` or ``transformers``.
    """
    root = pathlib.Path(path)
    towers = {"query": model.query_encoder}
    if model.passage_encoder is not None:
        towers["passage"] = model.passage_encoder
    for name, encoder in towers.items():
        hf.save_pretrained(encoder, root / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(root / name)
    spec = dataclasses.asdict(model.spec) | {"temperature": float(1.0 / model.scale())}
    (root / SPEC_FILE).write_text(
        json.dumps({"format": SPEC_FORMAT, "spec": spec}, indent=2) + "\n"
    )


def load_spec(path: str | pathlib.Path) -> DualEncoderSpec:
    """Reads the :class:`DualEncoderSpec` saved by :func:`save_dual_encoder`."""
    file = pathlib.Path(path) / SPEC_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: not found; is {path} a jaxir dual-encoder directory?")
    data = json.loads(file.read_text())
    if data.get("format") != SPEC_FORMAT:
        raise ValueError(f"{file}: format {data.get('format')!r}, expected {SPEC_FORMAT!r}.")
    return DualEncoderSpec(**data["spec"])


def load_dual_encoder(path: str | pathlib.Path, *, dtype: str = "float32") -> DualEncoder:
    """Loads a directory written by :func:`save_dual_encoder`."""
    root = pathlib.Path(path)
    spec = load_spec(root)
    query = hf.load_pretrained(root / "query", dtype=dtype, mlm_head=False)
    passage = (
        None if spec.tied else hf.load_pretrained(root / "passage", dtype=dtype, mlm_head=False)
    )
    return DualEncoder(query, passage, spec)
