"""Parameter labels: what each trainable array *is*, read from its path and logical axes.

Optimizers decide per label what to do with a parameter: weight decay applies to
``matrix``, ``embedding`` and ``head`` kernels; a low-rank gradient projection (GaLore,
Fira, APOLLO) applies to ``matrix`` only -- the attention and MLP kernels, never
embeddings, norms, biases or heads.

=============  ================================================================
label          rule (first match wins)
=============  ================================================================
``scalar``     0-d (a learned temperature)
``factor``     logical axes contain ``rank`` or ``nnz``: the trainable factors of a
               parameterized projection (LoRA ``lora_a`` / ``lora_b``, SLTrain ``a``,
               ``b`` and sparse ``values``)
``norm``       logical axes contain ``norm`` (LayerNorm scale / bias)
``bias``       1-d
``embedding``  logical axes contain ``vocab``, or the leaf is an ``embedding`` table
``head``       under a ``pooler`` / ``mlm`` / ``head`` module, or an axis with no
               logical name (pooler and MLM transform kernels are ``(embed, None)``)
``matrix``     every other array of rank >= 2 (attention q/k/v/o, MLP up/down)
=============  ================================================================

``factor`` is its own label because neither ``matrix`` nor ``bias`` fits: a factor is
already low-rank (``[in, r]`` / ``[r, out]``) or a list of kernel entries, so a low-rank
gradient projection of it is meaningless (GaLore, Fira and APOLLO project ``matrix``
only); and it is not in the default decay labels
(:data:`jaxir.optim.build.DECAY_LABELS`): the SLTrain reference recipes train with
weight decay 0 (andyjm3/SLTrain ``scripts/llm_pretrain``), and for LoRA the frozen base
is the prior the adapter should stay near, which decay of the factors does not express
(``peft`` under the ``transformers`` Trainer does decay them; a builder that wants that
adds ``factor`` to its decay labels). The frozen LoRA base and the SLTrain support are
not parameters: no label.

Example:
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS, Model
    >>> model = Model(PRESETS["tiny"].replace(mlm_head=False), rngs=nnx.Rngs(0))
    >>> labels = param_labels(nnx.state(model, nnx.Param))
    >>> flat = {"/".join(map(str, k)): v for k, v in label_items(labels)}
    >>> flat["layers/0/attention/query/kernel"], flat["layers/0/attention/query/bias"]
    ('matrix', 'bias')
    >>> flat["embeddings/word/embedding"], flat["embeddings/norm/scale"]
    ('embedding', 'norm')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
from flax import nnx

LABELS = ("scalar", "factor", "norm", "bias", "embedding", "head", "matrix")
HEAD_MODULES = ("pooler", "mlm", "head")


def label_of(path: tuple[Any, ...], ndim: int, axes: tuple[str | None, ...] | None) -> str:
    """The label of one parameter (see the module docstring for the rules)."""
    axes = tuple(axes or ())
    names = {str(p) for p in path}
    if ndim == 0:
        return "scalar"
    if "rank" in axes or "nnz" in axes:
        return "factor"
    if "norm" in axes:
        return "norm"
    if ndim == 1:
        return "bias"
    if "vocab" in axes or (path and str(path[-1]) == "embedding"):
        return "embedding"
    if names & set(HEAD_MODULES) or (axes and None in axes):
        return "head"
    return "matrix"


def param_labels(params: nnx.State) -> nnx.State:
    """A state of the same structure as ``params`` whose leaves are label strings.

    ``params`` may be abstract (``jax.ShapeDtypeStruct`` leaves from ``nnx.eval_shape``):
    only shapes and the variables' ``out_sharding`` metadata are read.
    """
    flat = []
    for path, var in nnx.to_flat_state(params):
        axes = var.get_metadata().get("out_sharding")
        flat.append((path, var.replace(label_of(path, len(var.shape), axes))))
    return nnx.from_flat_state(flat)


def label_items(labels: nnx.State) -> Iterator[tuple[tuple[Any, ...], str]]:
    """``(path, label)`` pairs of a :func:`param_labels` tree."""
    for path, var in nnx.to_flat_state(labels):
        yield path, var.get_value()


def mask_for(labels: nnx.State, chosen: tuple[str, ...]) -> Any:
    """A boolean pytree (``params``' structure): True where the label is in ``chosen``.

    Usable as an optax ``mask`` (``optax.adamw(mask=...)``, ``optax.masked``).
    """
    unknown = set(chosen) - set(LABELS)
    if unknown:
        raise ValueError(f"Unknown parameter labels {sorted(unknown)}; known: {LABELS}.")
    return jax.tree.map(lambda label: label in chosen, labels)
