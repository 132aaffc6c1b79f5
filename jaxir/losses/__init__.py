"""Pure loss functions: contrastive (InfoNCE), distillation and sparsity regularizers.

All take arrays with shapes in their names (``q_bd``, ``p_nd``, ``scores_bn``) and an
optional ``where`` mask, return a scalar mean over valid entries, and never produce NaN
for fully masked rows.
"""

from jaxir.losses.contrastive import in_batch_softmax, softmax_cross_entropy_with_mask
from jaxir.losses.distill import kl_distill, margin_mse
from jaxir.losses.regularizers import flops, l1

__all__ = [
    "flops",
    "in_batch_softmax",
    "kl_distill",
    "l1",
    "margin_mse",
    "softmax_cross_entropy_with_mask",
]
