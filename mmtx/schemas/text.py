"""Text's schema: its config group, ranges and token count (the encoder:
:mod:`mmtx.modalities.text`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import ml_collections

from mmtx.schemas.schema import ModalitySchema


class TextSchema(ModalitySchema):
    """Captions as token ids (see :class:`mmtx.modalities.TextSpec`)."""

    name = "text"
    raw_input = "text_inputs"
    example_key = "caption"
    extra_keys = ("text_mask",)
    # cls (learned CLS token) | mean | eot (the output at each row's highest token id,
    # OpenAI CLIP) | last (at the last position whose mask is True).
    poolings = ("cls", "mean", "eot", "last")
    ranges: ClassVar[Mapping[str, str]] = {"vocab_size": ">= 0", "max_length": "> 0"}
    attributes = ("shape", "colour", "size", "position", "motion")
    description = "captions (token ids)"

    def default_config(self) -> ml_collections.ConfigDict:
        g = ml_collections.ConfigDict()
        g.vocab_size = 0  # 0 = take it from the tokenizer.
        g.max_length = 64  # Tokens per caption after padding / truncation.
        g.width = 128  # Token width D.
        g.depth = 2  # Transformer blocks.
        g.num_heads = 4  # Attention heads; width must be divisible by it.
        g.mlp_dim = 256  # Hidden width of each block's MLP.
        g.attention = "dense"  # Attention kernel name (see mmtx.nn.attention).
        # cls (learned CLS token) | mean (masked mean of tokens) | eot (the output at each row's
        # highest token id, OpenAI CLIP) | last (at the last position whose mask is True).
        g.pooling = "cls"
        g.position_embedding = "learned"  # learned | sincos.
        g.causal = False  # Causal self-attention in every block (CLIP's text tower).
        g.activation = "gelu_tanh"  # MLP's: gelu_tanh | gelu (exact erf) | quick_gelu.
        g.norm_eps = 1e-6  # Epsilon of every LayerNorm in the tower (CLIP 1e-5).
        g.pre_norm = False  # A LayerNorm before the first block (CLIP's ln_pre).
        g.final_norm = True  # The LayerNorm after the last block, on every token.
        # Projection of the pooled output to model.embed_dim: dense | no_bias (kernel only) |
        # none (the pooled output itself; needs width == model.embed_dim).
        g.projection = "dense"
        return g

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        return group.max_length  # padding is masked, not dropped
