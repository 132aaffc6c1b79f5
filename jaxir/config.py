"""Run configurations: typed, frozen dataclasses loaded from Python files, with dotted overrides.

A config file (``configs/*.py``) defines ``get_config(arg: str | None = None)`` returning a
:class:`RunConfig`. The CLI loads it with :func:`load_config` and applies
``--set key.sub=value`` overrides with :func:`override`; an unknown key fails with the
closest valid names. Library functions never see the run config (DESIGN principle 1):
the entry points unpack it into explicit arguments.

Example:
    >>> cfg = RunConfig()
    >>> override(cfg, ["train.steps=10", "model.pooling=cls"]).train.steps
    10
    >>> override(cfg, ["train.step=10"])
    Traceback (most recent call last):
    ...
    ValueError: Unknown config key 'train.step'; did you mean: train.steps, train.seed, train.warmup_steps?
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import pathlib
import types
import typing
from typing import Any

from jaxir.layers.attention import ATTENTION
from jaxir.layers.dropout import MASKS
from jaxir.layers.linear import LinearSpec


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the collection is and how training examples are built.

    ``path=None`` uses the embedded synthetic collection (:mod:`jaxir.data.synthetic`).
    Training groups (:func:`jaxir.data.prepare.training_groups`) come from ``groups``
    (a JSONL file, e.g. from ``jaxir mine``) when set, else from ``train_groups``:
    ``"qrels"`` (the ``train_split`` qrels, with ``negatives``) or ``"ict"`` (label-free
    inverse-cloze groups of the corpus, with ``negatives``: no qrels needed).
    """

    path: str | None = None
    groups: str | None = None  # training-group JSONL to train on instead
    train_groups: str = "qrels"  # "qrels" | "ict" (label-free, any corpus)
    train_split: str = "train"
    eval_split: str = "test"
    max_query_length: int = 32
    max_passage_length: int = 128
    negatives: str = "bm25"  # "bm25" or "none" (in-batch negatives only)
    bm25_rank_window: tuple[int, int] = (3, 30)
    validation_queries: int = 100  # held out of the training queries for dev metrics; 0: none
    # Text of a training document: "first" = the document (truncated to max_passage_length
    # by the tokenizer), "best" = its window that BM25 scores highest for the query
    # (jaxir.data.passages.best_passages; windows as for index.split_documents).
    train_passages: str = "first"
    validation_corpus: int = 2000
    # > 0: multi-task training: the qrels (or groups-file) groups repeated ict_mix times,
    # plus one inverse-cloze group per corpus document (jaxir.data.ict.ict_groups, seeded
    # with train.seed + 1).
    ict_mix: int = 0


@dataclasses.dataclass(frozen=True)
class SpladeConfig:
    """The SPLADE family's model and regularizer (``family="splade"``, :mod:`jaxir.families.splade`).

    Tied or separate query / document towers follow ``model.tied`` (one switch for both
    families; a second SPLADE-only flag could silently disagree with it). The training
    loss is the in-batch + hard-negative softmax over raw dot products (no temperature,
    no normalization) plus ``train.distill`` as for dense, plus the sparsity
    regularizer ``w(step) * (query_weight * R(q) + document_weight * R(d))``, with ``R``
    FLOPS or L1 and ``w(step) = min(1, step / warmup_steps) ** 2``.

    Defaults: ``query_weight=5e-5`` and ``document_weight=3e-5`` are sentence-transformers'
    ``SpladeLoss`` values (its docstring example and MS MARCO training scripts, for an
    in-batch softmax with scale 1 on dot products); ``warmup_steps=-1`` is a third of
    ``train.steps``, the default ``warmup_ratio=1/3`` of its
    ``SpladeRegularizerWeightSchedulerCallback`` (naver/splade's ``RegWeightScheduler``
    has the same quadratic form). The regularizer is FLOPS, sentence-transformers' and
    naver/splade's default, over every document of the batch (positives and negatives);
    sentence-transformers' optional L0 ``threshold`` is off by default and not offered.

    Guards (:meth:`jaxir.families.splade.SpladeFamily.check_metrics`, every step):
    *collapse* -- the batch's average non-zeros per document (or per query, unless
    ``inference_free``) below ``collapse_nnz``: with ``1`` this fires when the
    representations are essentially all zero, a dead end (``relu`` passes no gradient
    back, so the ranking loss cannot revive them); *saturation* -- the average document
    (or query) activates more than ``saturation_share`` of the vocabulary, checked from
    step ``saturation_after`` on (``-1``: the step the regularizer reaches full weight),
    since a randomly initialised head starts out dense and only the regularizer makes it
    sparse; half the vocabulary per text is already useless for an inverted index.

    Attributes:
      pooling: ``"max"`` (SPLADE v2 / ++) or ``"sum"`` (SPLADE v1) over the sequence.
      inference_free: the query side is one learned weight per vocabulary token
        (initialised from the training passages' IDF), no transformer at query time;
        the query regularizer is off (no query encoder to sparsify: a query's terms
        are its tokens).
      max_active_dims: keep the top ``k`` weights of each document vector (0: all).
      regularizer: ``"flops"`` or ``"l1"``.
      query_weight: final weight of the query regularizer.
      document_weight: final weight of the document regularizer.
      warmup_steps: steps of the quadratic warm-up (-1: ``train.steps // 3``; 0: none).
      fresh_head: ``model.init`` may be a directory without an MLM head: the head's
        decoder is tied to the word embeddings, its transform and bias are fresh.
      head_bias: initial value of every output bias of a freshly initialised MLM head
        (a preset ``init``, or ``fresh_head``); a loaded head keeps its own. At 0 a
        random head gives about half its logits positive, so max pooling starts near
        half the vocabulary per text and the regularizer must first undo that; a
        negative value starts the representations sparse. Choose it against the
        head's logit scale (about ``0.02 * sqrt(hidden)`` at initialisation): -1 starts
        the 256-wide ``small`` preset at ~2% of the vocabulary per passage.
      collapse_nnz: collapse guard threshold (average non-zeros per text); 0: off.
      saturation_share: saturation guard threshold (share of the vocabulary active in
        an average text); 1: off.
      saturation_after: first step of the saturation guard (-1: end of the warm-up).
      chunk: sequence positions per chunk when pooling the ``[B, L, V]`` logits.
    """

    pooling: str = "max"
    inference_free: bool = False
    max_active_dims: int = 0
    regularizer: str = "flops"
    query_weight: float = 5e-5
    document_weight: float = 3e-5
    warmup_steps: int = -1
    fresh_head: bool = False
    head_bias: float = 0.0
    collapse_nnz: float = 1.0
    saturation_share: float = 0.5
    saturation_after: int = -1
    chunk: int = 32


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters (``model.linear=lora``, :class:`jaxir.layers.lora.LoRA`).

    The base projections are frozen; ``rank``-``rank`` adapters, scaled by
    ``alpha / rank``, are trained. Defaults: rank 16, alpha 32 (scale 2), a common
    ``peft`` setting for BERT-sized encoders.
    """

    rank: int = 16
    alpha: float = 32.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"model.lora.rank must be a positive integer, got {self.rank!r}")


@dataclasses.dataclass(frozen=True)
class SltrainConfig:
    """SLTrain sparse + low-rank projections (``model.linear=sltrain``,
    :class:`jaxir.layers.sparse_lowrank.SparseLowRank`).

    ``kernel = (alpha / rank) * a @ b + S``, ``S`` with a fixed random support of
    ``density`` of the entries. Defaults: rank 64, density 0.03 (the paper's sparsity),
    alpha 16 (the reference scripts' ``lora_alpha``).
    """

    rank: int = 64
    density: float = 0.03
    alpha: float = 16.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"model.sltrain.rank must be a positive integer, got {self.rank!r}")
        if not 0.0 < float(self.density) <= 1.0:
            raise ValueError(f"model.sltrain.density must be in (0, 1], got {self.density!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The retriever's model: ``init`` is a Hugging Face model directory or a preset name.

    ``linear`` picks the parameterization of the projections of the ``linear_layers``
    layer types (:func:`jaxir.layers.linear.linear`; ``"dense"``: plain kernels,
    ``"lora"``: frozen base + adapters, options in ``lora``; ``"sltrain"``: sparse +
    low-rank, options in ``sltrain``). With a Hugging Face ``init`` the checkpoint loads
    dense and is then parameterized (:func:`jaxir.layers.linear.parameterize_linears`).
    ``pooling`` / ``normalize`` / ``temperature`` are the dense family's; the SPLADE
    family reads ``splade`` (:class:`SpladeConfig`) and ``tied``, ``init``, ``dtype``,
    ``linear``, the prefixes. ``dropout_mask`` and ``attention`` are compute choices of
    the encoder that change no parameter and no result beyond rounding
    (:class:`jaxir.models.bert.EncoderConfig`): ``dropout_mask="hash"`` regenerates
    dropout masks in the backward pass from a counter-based hash instead of storing
    them, ``attention="dot_product"`` runs attention through
    ``jax.nn.dot_product_attention``; both cut a TPU step's HBM traffic
    (``benchmarks/aot_memory.py``); the defaults keep CPU results bit-for-bit.
    """

    init: str = "small"
    vocab: str | None = None  # tokenizer dir when ``init`` is a preset; None: trained on the corpus
    pooling: str = "mean"
    normalize: bool = True
    temperature: float = 0.05
    learn_temperature: bool = False
    tied: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    dtype: str = "float32"
    dropout_mask: str = "stored"
    attention: str = "xla"
    linear: str = "dense"
    linear_layers: tuple[str, ...] = ("attention", "mlp")
    splade: SpladeConfig = SpladeConfig()  # family="splade" only
    lora: LoraConfig = LoraConfig()  # linear="lora" only
    sltrain: SltrainConfig = SltrainConfig()  # linear="sltrain" only

    def __post_init__(self) -> None:
        for key, value, choices in (
            ("dropout_mask", self.dropout_mask, MASKS),
            ("attention", self.attention, ATTENTION),
        ):
            if value not in choices:
                raise ValueError(f"model.{key} must be one of {choices}, got {value!r}.")

    def linear_spec(self) -> LinearSpec:
        """The :class:`~jaxir.layers.linear.LinearSpec` of ``linear`` / ``linear_layers``,
        with the options of the matching kind (``lora`` or ``sltrain``)."""
        options = {"lora": self.lora, "sltrain": self.sltrain}.get(self.linear)
        return LinearSpec(
            self.linear,
            self.linear_layers,
            dataclasses.asdict(options) if options is not None else (),
        )


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimizer (:func:`jaxir.optim.build`); learning rate, warmup, decay, clipping are in ``train``.

    ``kind`` is a registered optimizer (:data:`jaxir.optim.OPTIMIZERS`), ``schedule``
    the decay after warmup (``linear``, ``cosine``, ``constant``).

    The low-rank kinds (``galore``, ``fira``: :mod:`jaxir.optim.galore`; ``apollo``,
    ``apollo_mini``: :mod:`jaxir.optim.apollo`) project the ``matrix``-labelled kernels
    at ``rank`` (``apollo`` at rank 1 is APOLLO-Mini; ``apollo_mini`` is always rank 1),
    refresh the projection every ``update_gap`` steps and multiply the update by ``scale``
    (None: the kind's default, galore 0.25, fira 1, apollo 1 or sqrt(min(m, n) / 4) at
    rank 1). GaLore / Fira only: ``svd`` (``full`` | ``randomized``) computes the
    refresh, ``stagger`` spreads the refreshes of different kernels over the gap,
    ``moments`` (``project`` | ``keep``) says what Adam's moments do when the subspace
    changes. Other kinds ignore these keys.
    """

    kind: str = "adamw"
    schedule: str = "linear"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    rank: int = 128
    update_gap: int = 200
    scale: float | None = None
    svd: str = "full"
    stagger: bool = True
    moments: str = "project"

    def options(self) -> tuple[tuple[str, Any], ...]:
        """The ``(name, value)`` pairs :class:`jaxir.optim.OptimizerSpec` passes to the kind."""
        names = ("rank", "update_gap", "scale", "svd", "stagger", "moments")
        return tuple((name, getattr(self, name)) for name in names)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping."""

    steps: int = 300
    batch_size: int = 32
    group_size: int = 2  # 1 positive + (group_size - 1) hard negatives per query
    learning_rate: float = 5e-4
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    grad_accum: int = 1
    gradcache_chunk: int = 0  # > 0: GradCache with this many queries per chunk
    symmetric: bool = False
    # Distillation of the groups' teacher scores (positive_scores / negative_scores) on
    # top of the in-batch softmax: "none" | "kl" | "margin_mse" (jaxir.families.dense).
    distill: str = "none"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_seconds: float = 0.0  # > 0: stop (and save) once training has run this long


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes (-1: infer from the device count)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Serving index: ``scann`` (approximate) or ``exact`` (on-device brute force).

    ``split_documents`` indexes each document as overlapping passages that fit the
    passage tower, scored by the best one (MaxP, :mod:`jaxir.data.passages`), with
    ``passage_stride`` tokens between passage starts (0: half a window).
    """

    kind: str = "scann"
    k: int = 100
    split_documents: bool = False
    passage_stride: int = 0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved in every checkpoint.

    ``family`` is the retriever family (:data:`jaxir.training.family.FAMILIES`).
    """

    name: str = "dense"
    family: str = "dense"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    index: IndexConfig = IndexConfig()


def load_config(path: str | pathlib.Path, arg: str | None = None) -> RunConfig:
    """Imports ``path`` and returns ``get_config(arg)`` (``path`` may be ``file.py:arg``)."""
    text = str(path)
    if ":" in text and not pathlib.Path(text).exists():
        text, arg = text.rsplit(":", 1)
    file = pathlib.Path(text)
    if not file.is_file():
        raise FileNotFoundError(
            f"Config file {file} not found (expected a Python file with get_config())."
        )
    spec = importlib.util.spec_from_file_location(f"jaxir_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{file}: defines no get_config(arg=None) function.")
    config = module.get_config(arg)
    if not dataclasses.is_dataclass(config):
        raise ValueError(
            f"{file}: get_config() returned {type(config).__name__}, not a config dataclass."
        )
    return config


def _keys(config: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += _keys(value, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _parse(text: str, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null"):
            return None
        hint, origin = args[0], typing.get_origin(args[0])
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if origin is tuple:
            values = json.loads(text) if text.startswith("[") else text.split(",")
            types_ = typing.get_args(hint)
            if len(types_) == 2 and types_[1] is Ellipsis:  # tuple[T, ...]
                types_ = (types_[0],) * len(values)
            return tuple(t(v) for t, v in zip(types_, values))
        return hint(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"Config key {key!r}: cannot parse {text!r} as {hint}.") from e


def override(config: Any, assignments: list[str]) -> Any:
    """Returns ``config`` with ``key.sub=value`` assignments applied (types follow the fields)."""
    valid = _keys(config)
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"Override {assignment!r} must look like key.sub=value.")
        key, text = assignment.split("=", 1)
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            hint = (
                f"did you mean: {', '.join(close)}?" if close else f"valid keys: {', '.join(valid)}"
            )
            raise ValueError(f"Unknown config key {key!r}; {hint}")
        config = _replace_path(config, key.split("."), text, key)
    return config


def _replace_path(config: Any, parts: list[str], text: str, key: str) -> Any:
    head = parts[0]
    if len(parts) == 1:
        hint = typing.get_type_hints(type(config))[head]
        return dataclasses.replace(config, **{head: _parse(text, hint, key)})
    return dataclasses.replace(
        config, **{head: _replace_path(getattr(config, head), parts[1:], text, key)}
    )


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready nested dict of a config (stored in checkpoints and bundles)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of :func:`to_dict` for nested config dataclasses."""
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = from_dict(hints[f.name], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
