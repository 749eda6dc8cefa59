"""Text encoder: token ids -> transformer tokens and a pooled embedding."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.encoders.tower import Tower, TowerOptions
from mmtx.nn import LearnedPositionEmbedding, TokenEmbed, sincos_1d
from mmtx.nn.options import options


class TextEncoder(TowerOptions):
    """A transformer over token ids, bidirectional (or ``causal``, as CLIP's text tower).

    ``tokens`` int32 ``[B, T]`` (``T <= max_length``) and ``mask`` bool ``[B, T]`` ->
    ``(x, out)`` with ``x`` ``[B, T', width]`` and ``out["pooled"]`` ``[B, width]``; with
    ``capture_weights``, ``out["attention_weights"]`` holds every block's attention
    probabilities, ``[depth, B, H, T', T']`` for the dense kernel (see :class:`Tower`).
    Pooling (see :class:`mmtx.encoders.Tower`): ``cls``, ``mean``, ``eot`` (the output at
    each row's highest token id, its first occurrence: the end-of-text token of OpenAI
    CLIP's vocabulary) or ``last`` (the output at the last position whose mask is True).
    The transformer options (:class:`mmtx.encoders.TowerOptions`, keyword-only) go whole to
    the :class:`mmtx.encoders.Tower` (``tower``).
    """

    vocab_size: int
    max_length: int
    width: int
    position_embedding: str = "learned"

    @nn.compact
    def __call__(
        self, tokens: jax.Array, mask: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes token ids; padded positions (``mask == False``) are never attended to."""
        chex.assert_rank(tokens, 2)
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"text tokens must be integer ids; got dtype {tokens.dtype}")
        if tokens.shape[1] > self.max_length:
            raise ValueError(
                f"text has {tokens.shape[1]} tokens, more than max_length {self.max_length}"
            )
        if mask is not None:
            chex.assert_equal_shape([tokens, mask])
        x = TokenEmbed(
            self.vocab_size, self.width, self.dtype, self.param_dtype, name="token_embed"
        )(tokens)
        if self.position_embedding == "learned":
            x = LearnedPositionEmbedding(self.max_length, self.param_dtype, name="posemb")(x)
        else:
            x = x + sincos_1d(tokens.shape[1], self.width)[None].astype(x.dtype)
        stem = x
        pool_index = jnp.argmax(tokens, axis=1) if self.pooling == "eot" else None
        tower = Tower(**options(self, TowerOptions), name="tower")
        x, out = tower(x, mask, train=train, pool_index=pool_index)
        out["stem"] = stem
        return x, out
