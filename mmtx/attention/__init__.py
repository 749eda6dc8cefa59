"""Attention kernels: pure functions on ``[batch, length, heads, head_dim]`` arrays (no Flax)."""

from mmtx.attention.dense import attention_weights, dot_product_attention

__all__ = ["attention_weights", "dot_product_attention"]
