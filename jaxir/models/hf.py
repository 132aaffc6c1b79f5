"""Hugging Face checkpoints in and out: ``config.json`` + safetensors <-> NNX :class:`Model`.

Loading is strict: every parameter the model needs must be in the checkpoint and every
tensor in the checkpoint must be used (or be a known redundant copy: tied decoder
weights, the NSP head, position-id buffers); otherwise :class:`CheckpointError` lists
the missing and unexpected keys instead of silently initialising anything.

The model is built abstractly (``nnx.eval_shape``: no random init, no memory) and its
parameters are filled straight from the checkpoint, optionally already sharded.

Example:
    >>> import tempfile
    >>> from flax import nnx
    >>> from jaxir.models.bert import Model, PRESETS
    >>> model = Model(PRESETS["tiny"], rngs=nnx.Rngs(0))
    >>> path = tempfile.mkdtemp()
    >>> save_pretrained(model, path)
    >>> load_pretrained(path).config == model.config
    True
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from jaxir.models import bert, distilbert

_FAMILY_MODULE = {"bert": bert, "roberta": bert, "xlm-roberta": bert, "distilbert": distilbert}
_BASE_PREFIX = {
    "bert": "bert.",
    "roberta": "roberta.",
    "xlm-roberta": "roberta.",
    "distilbert": "distilbert.",
}
_ARCHITECTURE = {  # (bare encoder, encoder + MLM head)
    "bert": ("BertModel", "BertForMaskedLM"),
    "roberta": ("RobertaModel", "RobertaForMaskedLM"),
    "xlm-roberta": ("XLMRobertaModel", "XLMRobertaForMaskedLM"),
    "distilbert": ("DistilBertModel", "DistilBertForMaskedLM"),
}
_MLM_MARKERS = ("cls.predictions.", "lm_head.", "vocab_transform.")
#: Pre-2019 checkpoints name LayerNorm params gamma/beta.
_LEGACY_RENAMES = ((".gamma", ".weight"), (".beta", ".bias"))


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded exactly (missing / unexpected / mis-shaped keys)."""


def read_hf_config(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads ``config.json`` from a model directory, checking the family is supported."""
    file = pathlib.Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{file}: not found. A Hugging Face model directory needs config.json next to "
            "model.safetensors (save one with transformers' save_pretrained)."
        )
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}:{e.lineno}: invalid JSON ({e.msg}).") from e
    family = config.get("model_type")
    if family not in _FAMILY_MODULE:
        raise CheckpointError(
            f"{file}: field 'model_type' is {family!r}; jaxir encoders support "
            f"{sorted(_FAMILY_MODULE)}."
        )
    return config


def encoder_config(path: str | pathlib.Path) -> bert.EncoderConfig:
    """The :class:`~jaxir.models.bert.EncoderConfig` of a Hugging Face model directory (no weights read)."""
    hf_config = read_hf_config(path)
    return _FAMILY_MODULE[hf_config["model_type"]].from_hf_config(hf_config)


def read_hf_weights(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as NumPy arrays, by Hugging Face name.

    Reads ``model.safetensors``, or the shards listed in ``model.safetensors.index.json``,
    or -- only when PyTorch is installed -- ``pytorch_model.bin`` with
    ``torch.load(weights_only=True)`` (no arbitrary unpickling).
    """
    root = pathlib.Path(path)
    single, index, legacy = (
        root / "model.safetensors",
        root / "model.safetensors.index.json",
        root / "pytorch_model.bin",
    )
    if single.is_file():
        tensors = safetensors.numpy.load_file(str(single))
    elif index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            if not (root / shard).is_file():
                raise CheckpointError(
                    f"{index}: lists shard {shard!r}, which is missing from {root}."
                )
            tensors |= safetensors.numpy.load_file(str(root / shard))
    elif legacy.is_file():
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{legacy}: PyTorch pickles need torch to read; install torch or convert the "
                "checkpoint to model.safetensors."
            ) from e
        state = torch.load(legacy, map_location="cpu", weights_only=True)
        tensors = {
            k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()
        }
    else:
        raise CheckpointError(
            f"{root}: no weights found (expected model.safetensors, model.safetensors.index.json "
            "or pytorch_model.bin)."
        )
    renamed = {}
    for key, value in tensors.items():
        for old, new in _LEGACY_RENAMES:
            if key.endswith(old) and "LayerNorm" in key:
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def _base_prefix(family: str, names: Mapping[str, Any]) -> str:
    prefix = _BASE_PREFIX[family]
    return prefix if any(k.startswith(prefix) for k in names) else ""


def load_pretrained(
    path: str | pathlib.Path,
    *,
    dtype: str = "float32",
    mlm_head: bool | None = None,
    shardings: Any = None,
) -> bert.Model:
    """Loads a Hugging Face BERT / RoBERTa / XLM-R / DistilBERT directory into a jaxir :class:`~jaxir.models.bert.Model`.

    Args:
      path: directory with ``config.json`` and weights (see :func:`read_hf_weights`).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (params stay float32).
      mlm_head: keep the MLM head (``None``: keep it if the checkpoint has one; ``True``
        fails if it has not).
      shardings: optional ``NamedSharding`` tree (e.g. from
        :func:`jaxir.sharding.param_shardings`) to place parameters on a mesh as loaded.

    Raises:
      CheckpointError: naming missing / unexpected / mis-shaped keys.
    """
    root = pathlib.Path(path)
    hf_config = read_hf_config(root)
    family = hf_config["model_type"]
    module = _FAMILY_MODULE[family]
    weights = read_hf_weights(root)
    prefix = _base_prefix(family, weights)
    has_mlm = any(k.startswith(_MLM_MARKERS) for k in weights)
    if mlm_head and not has_mlm:
        raise CheckpointError(f"{root}: mlm_head=True but the checkpoint has no MLM head weights.")
    config = module.from_hf_config(hf_config).replace(
        dtype=dtype,
        mlm_head=has_mlm if mlm_head is None else mlm_head,
        pooler=f"{prefix}pooler.dense.weight" in weights,
    )
    mapping = module.hf_param_map(config, base_prefix=prefix)
    ignorable = set(module.HF_IGNORED_SUFFIXES) | (set() if config.mlm_head else set(_MLM_MARKERS))
    missing = sorted(k for k in mapping if k not in weights)
    unexpected = sorted(
        k for k in weights if k not in mapping and not any(s in k for s in ignorable)
    )
    if missing or unexpected:
        raise CheckpointError(
            f"{root}: checkpoint does not match a {family} encoder "
            f"({config.num_layers} layers, hidden {config.hidden_size}).\n"
            f"  missing keys ({len(missing)}): {missing[:20]}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}"
        )
    abstract = nnx.eval_shape(lambda: bert.Model(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    for name, (param_path, transpose) in mapping.items():
        value = weights[name].T if transpose else weights[name]
        expected = flat[param_path].shape
        if value.shape != expected:
            raise CheckpointError(
                f"{root}: tensor {name!r} has shape {tuple(weights[name].shape)}, expected "
                f"{expected[::-1] if transpose else expected} from config.json."
            )
        flat[param_path] = flat[param_path].replace(np.ascontiguousarray(value, dtype=np.float32))
    state = nnx.from_flat_state(flat)
    state = (
        jax.device_put(state, shardings)
        if shardings is not None
        else jax.tree.map(jnp.asarray, state)
    )
    return nnx.merge(graphdef, state)


def to_hf_weights(model: bert.Model) -> dict[str, np.ndarray]:
    """The model's parameters under Hugging Face names (inverse of loading)."""
    config = model.config
    module = _FAMILY_MODULE[config.family]
    prefix = _BASE_PREFIX[config.family] if config.mlm_head else ""
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    out = {}
    for name, (param_path, transpose) in module.hf_param_map(config, base_prefix=prefix).items():
        value = np.asarray(jax.device_get(flat[param_path].get_value()))
        out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def save_pretrained(model: bert.Model, path: str | pathlib.Path) -> None:
    """Writes ``config.json`` + ``model.safetensors`` in the Hugging Face layout.

    ``transformers.AutoModel.from_pretrained(path)`` (or ``AutoModelForMaskedLM`` when
    the model has an MLM head) loads the result; a load/save round trip is exact.
    """
    import transformers

    root = pathlib.Path(path)
    root.mkdir(parents=True, exist_ok=True)
    config = model.config
    fields = _FAMILY_MODULE[config.family].to_hf_config(config)
    hf_config = transformers.AutoConfig.for_model(**fields).to_dict()
    hf_config["architectures"] = [_ARCHITECTURE[config.family][int(config.mlm_head)]]
    (root / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    safetensors.numpy.save_file(
        to_hf_weights(model), str(root / "model.safetensors"), metadata={"format": "pt"}
    )
