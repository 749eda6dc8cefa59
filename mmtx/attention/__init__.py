"""Attention kernels: pure functions on ``[batch, length, heads, head_dim]`` arrays (no Flax).

- :func:`dot_product_attention`: dense softmax attention (XLA, or cuDNN flash on GPU).
- :func:`local_attention`: sliding window + global tokens, blockwise, linear in length.
- :func:`splash_local_attention`: the same contract as a fused Pallas splash kernel (TPU;
  interpret mode elsewhere).
- :func:`linear_attention`: elu+1 (Katharopoulos et al. 2020) or FAVOR+ (Choromanski et al.
  2021) feature maps, linear in length.

``return_weights=True`` makes the dense and local kernels also return the probabilities they
applied (dense ``[B, H, T, S]``; local a :class:`LocalWeights` band, see
:func:`local_weights_to_dense`); the linear kernel forms none and raises ``ValueError``.
"""

from mmtx.attention.dense import attention_weights, dot_product_attention
from mmtx.attention.linear import linear_attention
from mmtx.attention.local import (
    LocalWeights,
    local_attention,
    local_block_size,
    local_weights_to_dense,
)
from mmtx.attention.splash_local import splash_local_attention

__all__ = [
    "LocalWeights",
    "attention_weights",
    "dot_product_attention",
    "linear_attention",
    "local_attention",
    "local_block_size",
    "local_weights_to_dense",
    "splash_local_attention",
]
