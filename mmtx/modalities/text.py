"""Text: token ids through a :class:`mmtx.encoders.TextEncoder`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx.data import preprocessing
from mmtx.encoders import TextEncoder
from mmtx.modalities.spec import ExampleContext, ModalitySpec
from mmtx.schemas.text import TextSchema


class TextSpec(TextSchema, ModalitySpec):
    """Captions: ``text`` int32 ``[B, T]`` token ids and ``text_mask`` bool ``[B, T]``
    (True = a real token; padding is never attended to)."""

    def encoder_class(self) -> type[nn.Module]:
        return TextEncoder

    def encoder_fields(self, group: ml_collections.ConfigDict, vocab_size: int) -> dict[str, Any]:
        fields = super().encoder_fields(group, vocab_size)
        fields["vocab_size"] = group.vocab_size or vocab_size
        return fields

    def encode(
        self, encoder: nn.Module, batch: Mapping[str, jax.Array], *, train: bool
    ) -> tuple[jax.Array, dict[str, Any]]:
        mask = batch.get("text_mask")
        if mask is None:
            mask = batch["text"] != 0
        return encoder(batch["text"], mask, train=train)

    def dummy_input(
        self, group: ml_collections.ConfigDict, batch_size: int
    ) -> dict[str, jax.Array]:
        shape = (batch_size, group.max_length)
        return {"text": jnp.ones(shape, jnp.int32), "text_mask": jnp.ones(shape, jnp.bool_)}

    def check_values(self, batch: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        # An id past the embedding table would silently read a clipped row inside XLA.
        ids = np.asarray(batch["text"])
        vocab = fields["vocab_size"]
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"text must hold integer token ids; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(
                f"text token ids must be in [0, {vocab}) (the text vocabulary); got "
                f"values in [{ids.min()}, {ids.max()}]"
            )
        if "text_mask" in batch and np.shape(batch["text_mask"]) != ids.shape:
            raise ValueError(
                f"text_mask shape {np.shape(batch['text_mask'])} differs from text shape "
                f"{ids.shape}"
            )

    def as_list(self, inputs: Any) -> list[Any] | None:
        if isinstance(inputs, list | tuple | np.ndarray) and not isinstance(inputs, str):
            if isinstance(inputs, np.ndarray) and inputs.ndim == 0:
                return None
            return list(inputs)
        return None

    def from_raw(
        self, inputs: list[Any], *, config: ml_collections.ConfigDict, tokenizer: Any, **options
    ) -> dict[str, np.ndarray]:
        texts = _text_list(inputs)
        if not texts:
            raise ValueError("text_inputs is an empty list")
        ids, mask = tokenizer(texts, config.model.text.max_length)
        empty = [i for i, row in enumerate(mask) if not row.any()]
        if empty:
            raise ValueError(f"text_inputs{empty} encode to no tokens (empty strings?)")
        return {"text": ids, "text_mask": mask}

    def preprocess_example(
        self, value: Any, **context: Unpack[ExampleContext]
    ) -> dict[str, np.ndarray]:
        caption = preprocessing.select_text(value, context["rng"])
        ids, mask = context["tokenizer"](caption, context["config"].model.text.max_length)
        return {"text": ids[0], "text_mask": mask[0]}


def _text_list(text_inputs: Any) -> list[str]:
    """``text_inputs`` as a list of str: a str, or a list/tuple/numpy array of str."""
    if isinstance(text_inputs, np.ndarray) and text_inputs.ndim == 0:
        text_inputs = text_inputs.item()
    if isinstance(text_inputs, str):
        return [text_inputs]
    if isinstance(text_inputs, bytes | bytearray | np.bytes_):
        raise TypeError("text_inputs is bytes; decode it to str first (text.decode('utf-8'))")
    if not isinstance(text_inputs, list | tuple | np.ndarray):
        raise TypeError(
            f"text_inputs must be a str or a list of str; got {type(text_inputs).__name__}"
        )
    for index, text in enumerate(text_inputs):
        if isinstance(text, bytes | bytearray | np.bytes_):
            raise TypeError(
                f"text_inputs[{index}] is bytes; decode it to str first (text.decode('utf-8'))"
            )
        if not isinstance(text, str):
            raise TypeError(f"text_inputs[{index}] must be a str; got {type(text).__name__}")
    return [str(text) for text in text_inputs]
