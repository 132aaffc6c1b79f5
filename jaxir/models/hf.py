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

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from jaxir.layers.linear import merge_linears
from jaxir.models import bert, distilbert

#: Pre-2019 checkpoints name LayerNorm params gamma/beta.
_LEGACY_RENAMES = ((".gamma", ".weight"), (".beta", ".bias"))


@dataclasses.dataclass(frozen=True)
class HFFamily:
    """How one Hugging Face ``model_type`` maps onto a jaxir model.

    Attributes:
      model_type: ``config.json``'s ``model_type`` (``"bert"``, ``"roberta"``, ...).
      from_hf_config: ``config.json`` dict -> jaxir model config.
      to_hf_config: jaxir model config -> ``config.json`` fields (incl. ``model_type``).
      hf_param_map: ``(config, *, base_prefix) -> {hf name: (nnx path, transpose?)}``.
      build: ``(config, rngs) -> nnx.Module``, the NNX model for a config.
      base_prefix: key prefix of the encoder in head-carrying checkpoints (``"bert."``).
      architectures: ``config.json`` ``architectures`` names ``(bare, with MLM head)``.
      ignored_suffixes: checkpoint keys without information for jaxir (tied copies,
        buffers, unused heads), matched as substrings.
      mlm_prefixes: key prefixes of the MLM head (presence means the checkpoint has one).
      pooler_prefix: key prefix, after ``base_prefix``, of the pooler weights (``None``:
        the family has no pooler).
    """

    model_type: str
    from_hf_config: Callable[[dict[str, Any]], Any]
    to_hf_config: Callable[[Any], dict[str, Any]]
    hf_param_map: Callable[..., dict[str, tuple[tuple, bool]]]
    build: Callable[[Any, nnx.Rngs], nnx.Module]
    base_prefix: str
    architectures: tuple[str, str]
    ignored_suffixes: tuple[str, ...] = ()
    mlm_prefixes: tuple[str, ...] = ()
    pooler_prefix: str | None = "pooler."


#: Registered checkpoint families by ``model_type`` (see :func:`register_family`).
HF_FAMILIES: dict[str, HFFamily] = {}


def register_family(family: HFFamily) -> None:
    """Makes :func:`load_pretrained` / :func:`save_pretrained` handle ``family.model_type``.

    Registering an equal family twice is a no-op; a different one under a taken
    ``model_type`` is an error.

    Example:
      >>> alias = dataclasses.replace(HF_FAMILIES["bert"], model_type="bert-doc")
      >>> register_family(alias)
      >>> "bert-doc" in HF_FAMILIES
      True
      >>> del HF_FAMILIES["bert-doc"]
    """
    if HF_FAMILIES.get(family.model_type, family) != family:
        raise ValueError(f"model_type {family.model_type!r} is already registered")
    HF_FAMILIES[family.model_type] = family


def _build_encoder(config: bert.EncoderConfig, rngs: nnx.Rngs) -> bert.Model:
    return bert.Model(config, rngs=rngs)


for _model_type, _prefix, _arch, _mlm in (
    ("bert", "bert.", ("BertModel", "BertForMaskedLM"), ("cls.predictions.",)),
    ("roberta", "roberta.", ("RobertaModel", "RobertaForMaskedLM"), ("lm_head.",)),
    ("xlm-roberta", "roberta.", ("XLMRobertaModel", "XLMRobertaForMaskedLM"), ("lm_head.",)),
):
    register_family(
        HFFamily(
            model_type=_model_type,
            from_hf_config=bert.from_hf_config,
            to_hf_config=bert.to_hf_config,
            hf_param_map=bert.hf_param_map,
            build=_build_encoder,
            base_prefix=_prefix,
            architectures=_arch,
            ignored_suffixes=bert.HF_IGNORED_SUFFIXES,
            mlm_prefixes=_mlm,
        )
    )
register_family(
    HFFamily(
        model_type="distilbert",
        from_hf_config=distilbert.from_hf_config,
        to_hf_config=distilbert.to_hf_config,
        hf_param_map=distilbert.hf_param_map,
        build=_build_encoder,
        base_prefix="distilbert.",
        architectures=("DistilBertModel", "DistilBertForMaskedLM"),
        ignored_suffixes=distilbert.HF_IGNORED_SUFFIXES,
        mlm_prefixes=("vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
        pooler_prefix=None,
    )
)


def family_for(model_type: str) -> HFFamily:
    """The registered :class:`HFFamily` of ``model_type`` (``ValueError`` naming the registered ones)."""
    if model_type not in HF_FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not registered; registered: {sorted(HF_FAMILIES)}"
        )
    return HF_FAMILIES[model_type]


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
    if not isinstance(family, str) or family not in HF_FAMILIES:
        raise CheckpointError(
            f"{file}: field 'model_type' is {family!r}; registered model types: "
            f"{sorted(HF_FAMILIES)} (add one with jaxir.models.hf.register_family)."
        )
    return config


def encoder_config(path: str | pathlib.Path) -> bert.EncoderConfig:
    """The :class:`~jaxir.models.bert.EncoderConfig` of a Hugging Face model directory (no weights read)."""
    hf_config = read_hf_config(path)
    return HF_FAMILIES[hf_config["model_type"]].from_hf_config(hf_config)


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


def checkpoint_keys(path: str | pathlib.Path) -> list[str]:
    """Tensor names of a checkpoint directory, reading safetensors headers only (sorted).

    Falls back to :func:`read_hf_weights` (which reads the tensors) for ``pytorch_model.bin``.
    """
    root = pathlib.Path(path)
    single, index = root / "model.safetensors", root / "model.safetensors.index.json"
    if single.is_file():
        with safetensors.safe_open(str(single), framework="numpy") as f:
            keys = list(f.keys())
    elif index.is_file():
        keys = list(json.loads(index.read_text())["weight_map"])
    else:
        keys = list(read_hf_weights(root))
    return sorted(keys)


def _base_prefix(family: HFFamily, names: Iterable[str]) -> str:
    prefix = family.base_prefix
    return prefix if any(k.startswith(prefix) for k in names) else ""


def _heads(family: HFFamily, names: Iterable[str]) -> tuple[bool, bool, str]:
    """``(has MLM head, has pooler, pooler key prefix)`` of a checkpoint's tensor ``names``."""
    names = list(names)
    prefix = _base_prefix(family, names)
    pooler = "" if family.pooler_prefix is None else prefix + family.pooler_prefix
    has_mlm = bool(family.mlm_prefixes) and any(k.startswith(family.mlm_prefixes) for k in names)
    has_pooler = bool(pooler) and any(k.startswith(pooler) for k in names)
    return has_mlm, has_pooler, pooler


def unused_heads(path: str | pathlib.Path, *, mlm_head: bool, pooler: bool) -> list[str]:
    """Heads present in a checkpoint that a load with these flags drops, for a one-line note.

    Reads ``config.json`` and the tensor names only (see :func:`checkpoint_keys`).

    Returns: e.g. ``["pooler", "MLM head"]``; ``[]`` when nothing is dropped.

    Example:
      >>> import tempfile
      >>> from flax import nnx
      >>> from jaxir.models.bert import Model, PRESETS
      >>> path = tempfile.mkdtemp()
      >>> save_pretrained(Model(PRESETS["tiny"].replace(pooler=True), rngs=nnx.Rngs(0)), path)
      >>> unused_heads(path, mlm_head=False, pooler=False)
      ['pooler', 'MLM head']
      >>> unused_heads(path, mlm_head=True, pooler=True)
      []
    """
    family = HF_FAMILIES[read_hf_config(path)["model_type"]]
    has_mlm, has_pooler, _ = _heads(family, checkpoint_keys(path))
    dropped = []
    if has_pooler and not pooler:
        dropped.append("pooler")
    if has_mlm and not mlm_head:
        dropped.append("MLM head")
    return dropped


def load_pretrained(
    path: str | pathlib.Path,
    *,
    dtype: str = "float32",
    mlm_head: bool | None = None,
    pooler: bool | None = None,
    shardings: Any = None,
) -> nnx.Module:
    """Loads a Hugging Face checkpoint directory of a registered family (BERT / RoBERTa / XLM-R / DistilBERT) into a jaxir model.

    The family is chosen by ``config.json``'s ``model_type`` (:data:`HF_FAMILIES`).

    Args:
      path: directory with ``config.json`` and weights (see :func:`read_hf_weights`).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (params stay float32).
      mlm_head: keep the MLM head (``None``: keep it if the checkpoint has one; ``False``:
        drop its weights; ``True`` fails if it has none).
      pooler: keep the pooler, same semantics as ``mlm_head``.
      shardings: optional ``NamedSharding`` tree (e.g. from
        :func:`jaxir.sharding.param_shardings`) to place parameters on a mesh as loaded.

    Raises:
      CheckpointError: naming missing / unexpected / mis-shaped keys.
    """
    root = pathlib.Path(path)
    hf_config = read_hf_config(root)
    family = HF_FAMILIES[hf_config["model_type"]]
    weights = read_hf_weights(root)
    prefix = _base_prefix(family, weights)
    has_mlm, has_pooler, pooler_prefix = _heads(family, weights)
    if mlm_head and not has_mlm:
        raise CheckpointError(f"{root}: mlm_head=True but the checkpoint has no MLM head weights.")
    if pooler and not has_pooler:
        where = f" ({pooler_prefix}*)" if pooler_prefix else f" ({family.model_type} has none)"
        raise CheckpointError(
            f"{root}: pooler=True but the checkpoint has no pooler weights{where}."
        )
    config = family.from_hf_config(hf_config).replace(
        dtype=dtype,
        mlm_head=has_mlm if mlm_head is None else mlm_head,
        pooler=has_pooler if pooler is None else pooler,
    )
    mapping = family.hf_param_map(config, base_prefix=prefix)
    dropped = (() if config.mlm_head else family.mlm_prefixes) + (
        () if config.pooler or not pooler_prefix else (pooler_prefix,)
    )
    missing = sorted(k for k in mapping if k not in weights)
    unexpected = sorted(
        k
        for k in weights
        if k not in mapping
        and not any(s in k for s in family.ignored_suffixes)
        and not k.startswith(dropped)
    )
    if missing or unexpected:
        raise CheckpointError(
            f"{root}: checkpoint does not match a {family.model_type} encoder "
            f"({config.num_layers} layers, hidden {config.hidden_size}).\n"
            f"  missing keys ({len(missing)}): {missing[:20]}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}"
        )
    abstract = nnx.eval_shape(lambda: family.build(config, nnx.Rngs(0)))
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


def _family_of(model: nnx.Module) -> HFFamily:
    family = getattr(model.config, "family", None)
    if family not in HF_FAMILIES:
        raise ValueError(
            f"model family {family!r} has no registered Hugging Face checkpoint family; "
            f"registered: {sorted(HF_FAMILIES)}"
        )
    return HF_FAMILIES[family]


def to_hf_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters under Hugging Face names (inverse of loading).

    Parameterized projections (LoRA, ...) are merged to plain dense weights first
    (:func:`jaxir.layers.linear.merge_linears`).
    """
    model = merge_linears(model)
    config = model.config
    family = _family_of(model)
    prefix = family.base_prefix if config.mlm_head else ""
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    out = {}
    for name, (param_path, transpose) in family.hf_param_map(config, base_prefix=prefix).items():
        value = np.asarray(jax.device_get(flat[param_path].get_value()))
        out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def save_pretrained(model: nnx.Module, path: str | pathlib.Path) -> None:
    """Writes ``config.json`` + ``model.safetensors`` in the Hugging Face layout.

    ``transformers.AutoModel.from_pretrained(path)`` (or ``AutoModelForMaskedLM`` when
    the model has an MLM head) loads the result; a load/save round trip is exact. A model
    with parameterized projections is saved merged: plain dense weights, the default
    ``linear`` spec.
    """
    import transformers

    root = pathlib.Path(path)
    root.mkdir(parents=True, exist_ok=True)
    config = model.config
    family = _family_of(model)
    fields = family.to_hf_config(config)
    hf_config = transformers.AutoConfig.for_model(**fields).to_dict()
    hf_config["architectures"] = [family.architectures[int(config.mlm_head)]]
    (root / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    safetensors.numpy.save_file(
        to_hf_weights(model), str(root / "model.safetensors"), metadata={"format": "pt"}
    )
