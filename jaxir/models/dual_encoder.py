"""Dual encoder (DPR / Contriever / TAS-B style): query and passage towers over any jaxir encoder.

The towers are tied (one encoder, as in Contriever / TAS-B) or untied (DPR). The
*contract* -- pooling, normalisation, prefixes, max lengths, temperature -- is a
:class:`DualEncoderSpec`. :func:`save_dual_encoder` writes each tower as a Hugging Face
directory holding its weights, its tokenizer and its share of the spec as one
``jaxir_encoder.json`` (:mod:`jaxir.reps.contract`; a tied tower serves both roles), so
serving can never silently encode queries differently from training::

    model/query/     config.json, model.safetensors, tokenizer files, jaxir_encoder.json
    model/passage/   the same, untied models only

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
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.data.errors import DataError
from jaxir.data.tokenizer import CONTRACT_FILE as TOKENIZER_CONTRACT_FILE
from jaxir.models import hf
from jaxir.models.bert import EncoderConfig, Model
from jaxir.reps.contract import (
    CONTRACT_FILE,
    LEGACY_SPEC_FILE,
    EncoderContract,
    RoleContract,
    contract_file,
    describe_tokenizer,
    read_contract,
    save_contract,
)
from jaxir.reps.dense import embed
from jaxir.reps.pooling import POOLINGS

#: The tower directories of a saved dual encoder.
TOWERS = ("query", "passage")


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

    def temperature(self) -> float:
        """The score temperature: ``spec.temperature``, or the learned one (``1 / scale``)."""
        if self.log_scale is None:
            return self.spec.temperature
        return float(1.0 / self.scale())

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


def tower_contracts(spec: DualEncoderSpec, tokenizer: Any = None) -> dict[str, EncoderContract]:
    """The ``jaxir_encoder.json`` of each tower of a model with ``spec``.

    ``{"query": both roles}`` for a tied model, ``{"query": query role, "passage":
    passage role}`` for an untied one; each records ``spec.temperature`` and the
    tokenizer's facts (:func:`~jaxir.reps.contract.describe_tokenizer`) when given.
    """
    roles = {
        "query": RoleContract(spec.query_prefix, spec.query_max_length),
        "passage": RoleContract(spec.passage_prefix, spec.passage_max_length),
    }
    contract = EncoderContract(
        spec.pooling,
        spec.normalize,
        roles,
        tokenizer=None if tokenizer is None else describe_tokenizer(tokenizer),
        temperature=spec.temperature,
    )
    if spec.tied:
        return {"query": contract}
    return {name: contract.with_roles(name) for name in TOWERS}


def save_dual_encoder(
    model: DualEncoder, path: str | pathlib.Path, *, tokenizer: Any = None
) -> None:
    """Writes ``query/`` (and ``passage/`` when untied): weights, tokenizer, ``jaxir_encoder.json``.

    Each tower directory is a Hugging Face directory that loads on its own
    (:func:`jaxir.encode.load_encoder` with the contract's settings,
    :func:`jaxir.models.hf.load_pretrained`, ``transformers``); the tokenizer is saved
    in each (when given). The temperature recorded is the current one
    (:meth:`DualEncoder.temperature`, learned or fixed). Files an older jaxir wrote
    there (``dual_encoder.json``, ``jaxir_tokenizer.json``) are removed, so they cannot
    contradict the new contracts.
    """
    root = pathlib.Path(path)
    spec = dataclasses.replace(
        model.spec, temperature=model.temperature(), tied=model.passage_encoder is None
    )
    encoders = {"query": model.query_encoder, "passage": model.passage_encoder}
    for name, contract in tower_contracts(spec, tokenizer).items():
        hf.save_pretrained(encoders[name], root / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(root / name)
        (root / name / TOKENIZER_CONTRACT_FILE).unlink(missing_ok=True)
        save_contract(root / name, contract)
    (root / LEGACY_SPEC_FILE).unlink(missing_ok=True)


def is_dual_encoder_dir(path: str | pathlib.Path) -> bool:
    """Whether ``path`` holds a model saved by :func:`save_dual_encoder` (or an older jaxir).

    True when ``path/query/jaxir_encoder.json`` exists, or ``path/dual_encoder.json``
    (the layout before per-tower contracts).
    """
    root = pathlib.Path(path)
    return (root / "query" / CONTRACT_FILE).is_file() or (root / LEGACY_SPEC_FILE).is_file()


def tower_dir(path: str | pathlib.Path, role: str) -> pathlib.Path:
    """The tower directory of a saved dual encoder that encodes ``role`` (query or passage).

    ``path/passage`` for the passages of an untied model, else ``path/query``.
    """
    if role not in TOWERS:
        raise ValueError(f"role must be one of {TOWERS}, got {role!r}")
    root = pathlib.Path(path)
    return root / ("passage" if role == "passage" and not load_spec(root).tied else "query")


def _tower_contract(root: pathlib.Path, name: str) -> EncoderContract:
    contract = read_contract(root / name)
    if contract is None:
        raise FileNotFoundError(
            f"{root / name / CONTRACT_FILE}: not found; is {root} a jaxir dual-encoder "
            "directory (written by jaxir.models.dual_encoder.save_dual_encoder)?"
        )
    return contract


def load_spec(path: str | pathlib.Path) -> DualEncoderSpec:
    """The :class:`DualEncoderSpec` of a directory saved by :func:`save_dual_encoder`.

    Read from the towers' ``jaxir_encoder.json`` (a directory written before them:
    from its ``dual_encoder.json``). The spec's ``learn_temperature`` is ``False``: the
    temperature saved is the learned value, a constant from then on.

    Raises:
      FileNotFoundError: ``path/query`` has no contract (not a dual-encoder directory).
      DataError: a malformed contract, or towers whose contracts disagree.
    """
    root = pathlib.Path(path)
    query = _tower_contract(root, "query")
    tied = "passage" in query.roles
    passage = query if tied else _tower_contract(root, "passage")
    for name, contract in (("query", query), ("passage", passage)):
        if name not in contract.roles:
            raise DataError(
                contract_file(root / name),
                f"the {name} tower serves {sorted(contract.roles)}, not {name!r}; re-save "
                "the model with save_dual_encoder",
                field="roles",
            )
    for name in ("pooling", "normalize"):
        if getattr(query, name) != getattr(passage, name):
            raise DataError(
                contract_file(root / "passage"),
                f"{getattr(passage, name)!r}, but the query tower's is "
                f"{getattr(query, name)!r}; re-save the model with save_dual_encoder",
                field=name,
            )
    q, p = query.roles["query"], passage.roles["passage"]
    temperature = {} if query.temperature is None else {"temperature": query.temperature}
    return DualEncoderSpec(
        pooling=query.pooling,
        normalize=query.normalize,
        tied=tied,
        query_prefix=q.prefix,
        passage_prefix=p.prefix,
        query_max_length=q.max_length,
        passage_max_length=p.max_length,
        **temperature,
    )


def load_dual_encoder(path: str | pathlib.Path, *, dtype: str = "float32") -> DualEncoder:
    """Loads a directory written by :func:`save_dual_encoder` (weights + :func:`load_spec`)."""
    root = pathlib.Path(path)
    spec = load_spec(root)
    query = hf.load_pretrained(root / "query", dtype=dtype, mlm_head=False)
    passage = (
        None if spec.tied else hf.load_pretrained(root / "passage", dtype=dtype, mlm_head=False)
    )
    return DualEncoder(query, passage, spec)
