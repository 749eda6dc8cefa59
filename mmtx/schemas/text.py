"""Text's schema: its config group, ranges and token count (the encoder:
:mod:`mmtx.modalities.text`)."""

from __future__ import annotations

import ml_collections

from mmtx.schemas import tower_options
from mmtx.schemas.field import Field
from mmtx.schemas.ranges import Above, AtLeast
from mmtx.schemas.schema import ModalitySchema


class TextSchema(ModalitySchema):
    """Captions as token ids (see :class:`mmtx.modalities.TextSpec`)."""

    name = "text"
    raw_input = "text_inputs"
    example_key = "caption"
    extra_keys = ("text_mask",)
    # cls (learned CLS token) | mean (masked mean of tokens) | eot (the output at each row's
    # highest token id, OpenAI CLIP) | last (at the last position whose mask is True).
    poolings = ("cls", "mean", "eot", "last")
    fields = (
        Field("vocab_size", 0, "0 = take it from the tokenizer.", range=AtLeast(0)),
        Field("max_length", 64, "Tokens per caption after padding / truncation.", range=Above(0)),
        *tower_options.SIZES,
        tower_options.ATTENTION,
        tower_options.POOLING,
        tower_options.POSITION_EMBEDDING,
        Field("causal", False, "Causal self-attention in every block (CLIP's text tower)."),
        *tower_options.NORMS_AND_HEAD,
    )
    attributes = ("shape", "colour", "size", "position", "motion")
    description = "captions (token ids)"

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        return group.max_length  # padding is masked, not dropped
