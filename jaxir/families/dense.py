"""The dense dual-encoder family (DPR / Contriever / TAS-B style) as the training loop runs it.

:class:`DenseObjective` is the loss: the in-batch softmax over the global batch (each
query against every passage of every group, duplicate positives masked), plus a weighted
distillation term fitting the batch's ``teacher_scores`` over each query's own group (KL
or Margin-MSE, :mod:`jaxir.losses.distill`) when ``distill`` is set. It factors through
the representations (``represent`` -> ``loss_from_reps``), so GradCache applies.

:class:`DenseFamily` adds what the loop needs around it: the model (a preset or a
Hugging Face directory for each tower), batches from training groups
(:class:`jaxir.data.pipeline.TrainingData`), the dev set and its on-device validation
(:mod:`jaxir.training.validation`) and the saved model (:func:`save_dual_encoder`).

Example:
    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS
    >>> from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
    >>> model = DualEncoder.create(PRESETS["tiny"], DualEncoderSpec(), rngs=nnx.Rngs(0))
    >>> ids = np.full((2, 4), 5, np.int32)
    >>> batch = {"query_ids": ids, "query_mask": ids > 0,
    ...          "passage_ids": ids[:, None], "passage_mask": ids[:, None] > 0,
    ...          "passage_key": np.array([[0], [1]]), "query_key": np.array([0, 1])}
    >>> loss, aux = DenseObjective().loss(model, batch, nnx.Rngs(dropout=0))
    >>> sorted(aux)
    ['accuracy', 'contrastive']
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.families.text_inputs import TextPairInputs, is_hf_dir
from jaxir.layers.linear import LinearSpec, parameterize_pretrained
from jaxir.losses.contrastive import in_batch_softmax
from jaxir.losses.distill import group_distillation
from jaxir.models import hf
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, save_dual_encoder
from jaxir.training.family import Aux, Batch
from jaxir.training.validation import ValidationSet, validate

DISTILL = ("none", "kl", "margin_mse")


@dataclasses.dataclass(frozen=True)
class DenseObjective:
    """``in_batch_softmax + distill_weight * distillation`` of a :class:`DualEncoder`.

    Attributes:
      symmetric: add the passage-to-query direction to the in-batch softmax.
      distill: ``"none"``, ``"kl"`` (KL from the teacher's softmax over each query's
        group, at ``distill_temperature``) or ``"margin_mse"`` (positive minus each
        negative, teacher vs student). The student's scores are the model's logits
        (similarity times its scale, the same logits the softmax sees); the batch must
        hold ``teacher_scores`` ``[B, G]`` (NaN marks passages without one).
      distill_weight: weight of the distillation term.
      distill_temperature: divides student and teacher scores in the KL.

    Aux metrics: ``contrastive`` (the in-batch softmax term), ``accuracy`` (share of
    queries whose own positive scores highest in the global batch) and, when
    distilling, ``distill`` (the unweighted term).
    """

    symmetric: bool = False
    distill: str = "none"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.distill not in DISTILL:
            raise ValueError(
                f"train.distill must be 'none', 'kl' or 'margin_mse', got {self.distill!r}."
            )

    def represent(self, model: DualEncoder, batch: Batch, rngs: nnx.Rngs) -> tuple:
        """``(q_bd, p_bgd)``: query vectors and each query's group of passage vectors."""
        ids = batch["passage_ids"]
        b, g, length = ids.shape
        q_bd = model.encode_queries(batch["query_ids"], batch["query_mask"], rngs=rngs)
        p_nd = model.encode_passages(
            ids.reshape(-1, length), batch["passage_mask"].reshape(-1, length), rngs=rngs
        )
        return q_bd, p_nd.reshape(b, g, -1)

    def loss_from_reps(
        self, model: DualEncoder, reps: tuple, batch: Batch
    ) -> tuple[jax.Array, Aux]:
        """The objective of the whole batch from :meth:`represent`'s vectors."""
        q_bd, p_bgd = reps
        b, g, d = p_bgd.shape
        scale = model.scale()
        p_nd = p_bgd.reshape(b * g, d)
        contrastive = in_batch_softmax(
            q_bd * scale,
            p_nd,
            temperature=1.0,
            group_size=g,
            positive_ids=batch["passage_key"].reshape(-1),
            query_ids=batch["query_key"],
            symmetric=self.symmetric,
        )
        scores_bn = jnp.einsum("bd,nd->bn", q_bd, p_nd, preferred_element_type=jnp.float32)
        accuracy = (scores_bn.argmax(-1) == jnp.arange(b) * g).mean()
        aux = {"contrastive": contrastive, "accuracy": accuracy}
        if self.distill == "none":
            return contrastive, aux
        student_bg = jnp.einsum(
            "bd,bgd->bg", q_bd * scale, p_bgd, preferred_element_type=jnp.float32
        )
        term = group_distillation(
            self.distill,
            student_bg,
            batch.get("teacher_scores"),
            temperature=self.distill_temperature,
        )
        return contrastive + self.distill_weight * term, aux | {"distill": term}

    def loss(self, model: DualEncoder, batch: Batch, rngs: nnx.Rngs) -> tuple[jax.Array, Aux]:
        """``loss_from_reps(model, represent(model, batch, rngs), batch)``."""
        return self.loss_from_reps(model, self.represent(model, batch, rngs), batch)


@dataclasses.dataclass(frozen=True)
class DenseFamily(TextPairInputs, DenseObjective):
    """The dense dual encoder as a :class:`~jaxir.training.family.Family`.

    Attributes (besides :class:`DenseObjective`'s):
      spec: the dual encoder's serving contract (pooling, prefixes, max lengths, ...).
      init: a preset name (:data:`jaxir.models.bert.PRESETS`, random weights) or a
        Hugging Face encoder directory whose weights both towers start from (its pooler
        and MLM head, unused by a dual encoder, are dropped with a note).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"``.
      dropout_mask, attention: the encoder's dropout-mask generator and attention kernel
        (``model.dropout_mask`` / ``model.attention``, :class:`jaxir.models.bert.EncoderConfig`).
      linear: the projections' parameterization (:class:`jaxir.layers.linear.LinearSpec`).
        With a Hugging Face ``init`` the towers load dense and are then parameterized
        (:func:`jaxir.layers.linear.parameterize_linears`: LoRA on the checkpoint's
        kernels, SLTrain from their truncated SVD).
      seed: seeds what that parameterization draws (LoRA's ``lora_a``); ``train.seed``.
    """

    spec: DualEncoderSpec = dataclasses.field(default_factory=DualEncoderSpec)
    init: str = "small"
    dtype: str = "float32"
    dropout_mask: str = "stored"
    attention: str = "xla"
    linear: LinearSpec = dataclasses.field(default_factory=LinearSpec)
    mlm_head: ClassVar[bool] = False
    seed: int = 0

    @classmethod
    def from_config(cls, config: Any) -> DenseFamily:
        """The family a run config describes (``model.*``, ``data.*`` lengths, ``train.*`` loss)."""
        mc, dc, tc = config.model, config.data, config.train
        spec = DualEncoderSpec(
            pooling=mc.pooling,
            normalize=mc.normalize,
            temperature=mc.temperature,
            learn_temperature=mc.learn_temperature,
            tied=mc.tied,
            query_prefix=mc.query_prefix,
            passage_prefix=mc.passage_prefix,
            query_max_length=dc.max_query_length,
            passage_max_length=dc.max_passage_length,
        )
        return cls(
            symmetric=tc.symmetric,
            distill=tc.distill,
            distill_weight=tc.distill_weight,
            distill_temperature=tc.distill_temperature,
            spec=spec,
            init=mc.init,
            dtype=mc.dtype,
            dropout_mask=mc.dropout_mask,
            attention=mc.attention,
            linear=mc.linear_spec(),
            seed=tc.seed,
        )

    def init_model(self, *, vocab_size: int, rngs: nnx.Rngs) -> DualEncoder:
        """A randomly initialised :class:`DualEncoder` (no MLM head, no pooler)."""
        return DualEncoder.create(self.encoder_config(vocab_size), self.spec, rngs=rngs)

    def pretrained(self, model: DualEncoder) -> tuple[nnx.State, str] | None:
        """Both towers from ``init`` when it is a Hugging Face directory, else ``None``.

        Each tower loads dense and is then parameterized as ``model`` is (``linear``).
        """
        if not is_hf_dir(self.init):
            return None
        dropped = hf.unused_heads(self.init, mlm_head=False, pooler=False)
        if dropped:
            print(f"{self.init}: not used by a dual encoder, dropped: {', '.join(dropped)}.")
        state = nnx.state(model)
        config = model.query_encoder.config
        for i, name in enumerate(("query_encoder", "passage_encoder")):
            if getattr(model, name) is not None:
                tower = hf.load_pretrained(
                    self.init, dtype=self.dtype, mlm_head=False, pooler=False
                )
                key = jax.random.fold_in(jax.random.key(self.seed), i)
                tower = parameterize_pretrained(
                    tower, config.linear, key=key, source=self.init, warn=i == 0
                )
                state[name] = nnx.state(tower)
        return state, self.init

    def validate(
        self, model: DualEncoder, dev: ValidationSet, *, progress: bool = False
    ) -> dict[str, float]:
        """nDCG@10 and R@100 of exact search over the dev set, on device."""
        return validate(model, dev, progress=progress)

    def save(self, model: DualEncoder, directory: pathlib.Path, tokenizer: Any) -> None:
        """The towers as Hugging Face directories, each with the tokenizer and its contract."""
        save_dual_encoder(model, directory, tokenizer=tokenizer)
