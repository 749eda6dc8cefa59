"""The part every encoder shares: class tokens, transformer stack, pooling."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.nn import Encoder, LearnedPositionEmbedding, MAPHead, sincos_2d
from mmtx.nn.options import options
from mmtx.nn.params import logical_param
from mmtx.nn.transformer import EncoderOptions, layer_norm

# Every pooling the tower knows (each modality's config allows a subset: mmtx.config.POOLINGS).
TOWER_POOLINGS = ("cls", "mean", "cls_distill", "map", "eot", "last")
# The learned tokens each pooling prepends, in order (their params are named so; the
# counts are mmtx.config.CLASS_TOKENS).
CLASS_TOKEN_NAMES = {"cls": ("cls",), "cls_distill": ("cls", "distill")}


def num_class_tokens(pooling: str) -> int:
    """How many class tokens the tower prepends with ``pooling``."""
    return len(CLASS_TOKEN_NAMES.get(pooling, ()))


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over axis 1 of ``[B, T, D]`` counting only ``mask`` ``[B, T]`` positions -> ``[B, D]``.

    A row with no valid token pools to zeros.
    """
    if mask is None:
        return jnp.mean(x, axis=1)
    weights = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)


def last_true_index(mask: jax.Array) -> jax.Array:
    """int32 ``[B]``: the last position whose bool ``mask`` ``[B, T]`` is True (``T - 1`` for
    a row with none)."""
    length = mask.shape[1]
    return (length - 1 - jnp.argmax(mask[:, ::-1], axis=1)).astype(jnp.int32)


def grid_position_embedding(
    encoder: nn.Module, x: jax.Array, grid: tuple[int, int]
) -> tuple[jax.Array, nn.Module | None]:
    """The position embedding of a patch encoder's tokens ``x`` ``[B, gh * gw, width]`` over
    its ``grid`` ``(gh, gw)``, as its fields ``position_embedding``, ``class_token_posemb``,
    ``pooling``, ``width`` and ``param_dtype`` say (:class:`mmtx.encoders.ImageEncoder`,
    :class:`mmtx.encoders.AudioEncoder`).

    ``"sincos"``: ``x`` plus :func:`mmtx.nn.sincos_2d` (in ``x``'s dtype), and None.
    ``"learned"``: a :class:`mmtx.nn.LearnedPositionEmbedding` ``posemb`` of ``encoder`` with a
    row per token, plus one per class token with ``class_token_posemb``; without it, ``x``
    with the table added and None; with it, ``x`` unchanged and the module, for the
    :class:`Tower` to add after its class tokens. Call it from ``encoder``'s compact
    ``__call__``; returns ``(x, posemb)``.
    """
    grid_h, grid_w = grid
    if encoder.position_embedding != "learned":
        return x + sincos_2d(grid_h, grid_w, encoder.width)[None].astype(x.dtype), None
    rows = grid_h * grid_w
    if encoder.class_token_posemb:
        rows += num_class_tokens(encoder.pooling)
    posemb = LearnedPositionEmbedding(rows, encoder.param_dtype, name="posemb")
    if encoder.class_token_posemb:
        return x, posemb
    return posemb(x), None


class TowerOptions(EncoderOptions, kw_only=True):
    """The options of a :class:`Tower`, declared once (keyword-only): the transformer's
    (:class:`mmtx.nn.transformer.EncoderOptions`: ``depth``, ``num_heads``, ``mlp_dim``,
    ``dropout_rate``, ``attention``, ``attention_options``, ``attention_implementation``,
    ``activation``, ``norm_eps``, ``causal``, ``remat``, ``scan``, ``final_norm``,
    ``capture_weights``, ``dtype``, ``param_dtype``), plus ``pooling`` (one of
    :data:`TOWER_POOLINGS`) and ``pre_norm`` (a LayerNorm ``pre_norm`` before the blocks).

    Every encoder inherits them and builds its tower with them whole:
    ``Tower(**options(self, TowerOptions), name="tower")`` (:func:`mmtx.nn.options.options`).
    """

    pooling: str = "cls"
    pre_norm: bool = False


class Tower(TowerOptions):
    """Class tokens + optional ``pre_norm`` + :class:`mmtx.nn.Encoder` + pooling.

    ``[B, T, D]`` embedded tokens and a bool ``[B, T]`` mask in; ``(tokens [B, K + T, D],
    out)`` out, where ``K`` is the number of class tokens the pooling prepends (``cls``: one,
    param ``cls``; ``cls_distill``: two, ``cls`` then ``distill`` (AST); others none) and
    ``out`` has ``"pooled"`` ``[B, D]``, ``"mask"`` ``[B, K + T]``, ``"encoded"`` (the
    returned tokens) and ``"pre_norm"``. With ``capture_weights`` it also has
    ``"attention_weights"``, every block's attention probabilities stacked over layers
    (dense: float32 ``[depth, B, H, K + T, K + T]``; local: a
    :class:`mmtx.attention.LocalWeights` band, see :class:`mmtx.nn.Encoder`), and with
    ``map`` pooling ``"map_attention_weights"``, the probe's ``[B, H, 1, K + T]``.

    Pooling: ``cls`` the output at position 0; ``cls_distill`` the mean of positions 0 and 1;
    ``mean`` the masked mean; ``map`` a :class:`mmtx.nn.MAPHead` (``map_head``) over the
    tokens; ``eot`` the output at ``pool_index`` ``[B]`` (given by the caller: the text
    encoder passes the position of each row's highest token id); ``last`` the output at the
    last position whose mask is True.

    The order inside: class tokens are prepended, then ``posemb`` (a callable
    ``[B, K + T, D] -> [B, K + T, D]``, for position tables with rows for the class tokens)
    is applied if given, then dropout, the ``pre_norm`` LayerNorm (param ``pre_norm``), the
    blocks, the final LayerNorm (with ``final_norm``) and the pooling. Its options are
    :class:`TowerOptions`; the :class:`mmtx.nn.Encoder` (``encoder``) gets them all but
    ``pooling`` and ``pre_norm`` (``norm_eps`` is every LayerNorm's epsilon, ``pre_norm``'s
    too).
    """

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        *,
        train: bool = False,
        posemb: Callable[[jax.Array], jax.Array] | None = None,
        pool_index: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """See the class docstring; ``train`` enables dropout."""
        if self.pooling not in TOWER_POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; use one of {TOWER_POOLINGS}")
        if self.pooling == "eot" and pool_index is None:
            raise ValueError("pooling 'eot' needs pool_index (the position to pool per row)")
        batch, length, width = x.shape
        if mask is None:
            mask = jnp.ones((batch, length), dtype=jnp.bool_)
        names = CLASS_TOKEN_NAMES.get(self.pooling, ())
        if names:
            tokens = [
                logical_param(
                    self, name, nn.initializers.zeros, (None, None, "embed"), (1, 1, width)
                )
                for name in names
            ]
            tokens = jnp.concatenate(tokens, axis=1).astype(x.dtype)
            x = jnp.concatenate([jnp.broadcast_to(tokens, (batch, len(names), width)), x], 1)
            mask = jnp.concatenate([jnp.ones((batch, len(names)), dtype=jnp.bool_), mask], 1)
        if posemb is not None:
            x = posemb(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        if self.pre_norm:
            x = layer_norm(self.dtype, self.param_dtype, "pre_norm", self.norm_eps)(x)
        x, out = Encoder(**options(self, EncoderOptions), name="encoder")(x, mask, train=train)
        if self.pooling == "cls":
            pooled = x[:, 0]
        elif self.pooling == "cls_distill":
            pooled = (x[:, 0] + x[:, 1]) / 2
        elif self.pooling == "mean":
            pooled = masked_mean(x, mask)
        elif self.pooling == "map":
            pooled, head_out = MAPHead(
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                activation=self.activation,
                norm_eps=self.norm_eps,
                attention_implementation=self.attention_implementation,
                capture_weights=self.capture_weights,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="map_head",
            )(x, mask)
            if "attention_weights" in head_out:
                out["map_attention_weights"] = head_out["attention_weights"]
        else:
            index = pool_index if self.pooling == "eot" else last_true_index(mask)
            pooled = jnp.take_along_axis(x, index.astype(jnp.int32)[:, None, None], axis=1)[:, 0]
        out.update(encoded=x, pooled=pooled, mask=mask)
        return x, out
