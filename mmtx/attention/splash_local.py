"""Local (sliding-window + global tokens) attention as a fused Pallas splash-attention kernel.

:func:`splash_local_attention` has the contract of :func:`mmtx.attention.local_attention`
(same arguments, ``[B, T, H, Dh]`` layout, same output, also for rows with no visible key) and
runs JAX's TPU splash-attention kernel (``jax.experimental.pallas.ops.tpu.splash_attention``)
with a static mask computed inside the kernel from the query and key positions:

    visible(i, j) = (|i - j| <= radius or i < num_global or j < num_global) and j < T
                    [and j <= i when causal]

Splash skips the ``block x block`` tiles where that mask is all False, so the cost grows
linearly in ``T`` (band and global rows/columns only). ``T`` is padded up to a multiple of the
block size (the ``j < T`` term hides the padded keys; padded query rows are dropped), and the
key-padding ``mask`` becomes splash ``SegmentIds`` (query id 1, key id 1 for a real key, 0 for
a padded one). Splash does not scale the logits: ``q`` is multiplied by ``1/sqrt(Dh)`` first.

Splash is a Mosaic kernel, which XLA cannot partition over a device mesh: given the operands'
``partition`` (a ``PartitionSpec`` of ``[B, T, H, Dh]``) and a mesh of more than one device in
context (``jax.sharding.use_abstract_mesh``, as the train step has), the kernel runs on each
shard under ``jax.shard_map`` (batch and heads may be split; length and head dim are not).

The kernel is for TPU. ``interpret=True`` runs it in Pallas interpret mode on any backend
(slow; for tests on CPU); the environment variable ``MMTX_PALLAS_INTERPRET=1`` asks for that
mode where ``config.attention.implementation = "pallas"`` selects this kernel
(:func:`pallas_interpret_requested`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from mmtx.attention.local import _check_args

__all__ = ["PALLAS_INTERPRET_ENV", "pallas_interpret_requested", "splash_local_attention"]

# Splash tiles the key axis in lanes of 128: block sizes must be multiples of it.
_LANES = 128
# Default tiles, largest first: the largest that adds no padding beyond a multiple of 128.
_DEFAULT_BLOCKS = (512, 256, 128)

PALLAS_INTERPRET_ENV = "MMTX_PALLAS_INTERPRET"


def pallas_interpret_requested() -> bool:
    """True when ``MMTX_PALLAS_INTERPRET`` is set to something other than ``""``/``0``.

    Then ``implementation="pallas"`` runs the Pallas kernels in interpret mode and is accepted
    off TPU (for tests on CPU; far slower than XLA).
    """
    return os.environ.get(PALLAS_INTERPRET_ENV, "").strip() not in ("", "0")


class _BandWithGlobalMask(splash_mask.Mask):
    """The static ``[Tp, Tp]`` mask of :func:`splash_local_attention`, computed in-kernel.

    Splash evaluates ``mask_function(q_ids, kv_ids)`` inside the kernel when a mask has
    ``q_sequence`` and ``mask_function`` (as its own ``LocalMask`` does), so no mask blocks are
    stored; ``__getitem__`` gives the same values on the host for its block-sparsity analysis.
    """

    def __init__(self, padded: int, length: int, radius: int, num_global: int, causal: bool):
        self._shape = (padded, padded)
        self._key = (padded, length, radius, num_global, causal)
        self.q_sequence = np.arange(padded, dtype=np.int32)

        def mask_function(q_ids, kv_ids):
            # Works on numpy arrays (host analysis) and on jax arrays (inside the kernel).
            visible = ((q_ids - kv_ids) <= radius) & ((kv_ids - q_ids) <= radius)
            visible = visible | (q_ids < num_global) | (kv_ids < num_global)
            visible = visible & (kv_ids < length)
            if causal:
                visible = visible & (kv_ids <= q_ids)
            return visible

        self.mask_function = mask_function

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def __getitem__(self, idx) -> np.ndarray:
        rows, cols = idx
        if not (isinstance(rows, slice) and isinstance(cols, slice)):
            raise NotImplementedError(f"unsupported mask index {idx}")
        q_ids = np.arange(self._shape[0], dtype=np.int32)[rows]
        kv_ids = np.arange(self._shape[1], dtype=np.int32)[cols]
        return self.mask_function(q_ids[:, None], kv_ids[None, :])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BandWithGlobalMask) and self._key == other._key

    def __hash__(self) -> int:
        return hash((_BandWithGlobalMask, self._key))


def _splash_kernel(
    padded: int,
    length: int,
    heads: int,
    radius: int,
    num_global: int,
    causal: bool,
    block: int,
    interpret: bool,
) -> splash.SplashAttentionKernel:
    """The splash MHA kernel for one static mask.

    Built at each trace (its mask arrays belong to that trace); splash caches the host-side
    block-sparsity analysis of an equal mask (``process_mask`` is an ``lru_cache``).
    """
    head_mask = _BandWithGlobalMask(padded, length, radius, num_global, causal)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return splash.make_splash_mha(
        splash_mask.MultiHeadMask([head_mask] * heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )


def _default_block_size(length: int) -> int:
    """The largest of 512, 256, 128 dividing ``length`` rounded up to a multiple of 128."""
    padded = -(-length // _LANES) * _LANES
    return next(block for block in _DEFAULT_BLOCKS if padded % block == 0)


def _has_visible_key(key_ok: jax.Array, radius: int, num_global: int, causal: bool) -> jax.Array:
    """bool ``[B, T]``: whether query ``i`` sees at least one real key (prefix sums, O(T))."""
    batch, t = key_ok.shape
    counts = jnp.concatenate(
        [jnp.zeros((batch, 1), jnp.int32), jnp.cumsum(key_ok.astype(jnp.int32), axis=1)], axis=1
    )  # counts[:, n] = real keys among positions < n
    i = np.arange(t)
    hi = i if causal else np.minimum(t - 1, i + radius)
    band = counts[:, hi + 1] - counts[:, np.maximum(0, i - radius)]
    globals_seen = (
        counts[:, np.minimum(num_global, i + 1)] if causal else counts[:, num_global:][:, :1]
    )
    all_seen = counts[:, i + 1] if causal else counts[:, t:]
    return (band > 0) | (globals_seen > 0) | ((i < num_global) & (all_seen > 0))


def _per_shard(
    fn: Callable[..., jax.Array],
    partition: PartitionSpec | None,
    operands: tuple[jax.Array, ...],
    mask: jax.Array | None,
) -> jax.Array:
    """``fn(*operands, mask)``, under ``shard_map`` over the mesh in context when there is one.

    The batch and head entries of ``partition`` are kept where they divide those dims (else
    that dim is replicated); length and head dim are never split.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if partition is None or mesh.empty or mesh.size == 1:
        return fn(*operands, mask)
    batch, _, heads, _ = operands[0].shape
    entries = (*partition, None, None, None, None)

    def kept(axes: str | tuple[str, ...] | None, size: int) -> str | tuple[str, ...] | None:
        names = axes if isinstance(axes, tuple) else (axes,) if axes else ()
        return axes if size % math.prod(mesh.shape[name] for name in names) == 0 else None

    batch_axes, head_axes = kept(entries[0], batch), kept(entries[2], heads)
    if batch_axes is None and head_axes is None:
        return fn(*operands, mask)
    spec = PartitionSpec(batch_axes, None, head_axes, None)

    def local(*args: jax.Array) -> jax.Array:
        return fn(*args) if mask is not None else fn(*args, None)

    args = operands if mask is None else (*operands, mask)
    in_specs = (spec,) * len(operands) + (
        (PartitionSpec(batch_axes, None),) if mask is not None else ()
    )
    # check_vma=False: pallas_call's outputs carry no varying-manual-axes annotation.
    sharded = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)
    return sharded(*args)


def splash_local_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    radius: int,
    num_global: int = 0,
    causal: bool = False,
    mask: jax.Array | None = None,
    interpret: bool = False,
    block_size: int | None = None,
    partition: PartitionSpec | None = None,
) -> jax.Array:
    """:func:`mmtx.attention.local_attention` computed by the Pallas splash-attention kernel.

    Args:
      q: ``[B, T, H, Dh]`` float queries.
      k: ``[B, T, H, Dh]`` float keys (same shape as ``q``: self-attention).
      v: ``[B, T, H, Dh]`` float values.
      radius: non-negative int; query ``i`` sees key ``j`` when ``|i - j| <= radius``.
      num_global: int in ``[0, T]``; positions ``< num_global`` see and are seen by all.
      causal: if True, query ``i`` additionally only sees keys ``j <= i``.
      mask: optional key-padding mask, bool ``[B, T]``, ``True`` = real key.
      interpret: run the kernel in Pallas interpret mode (any backend; slow). ``False`` needs
        a TPU.
      block_size: splash's query and key tile, a positive multiple of 128; ``T`` is padded up
        to a multiple of it. Default: the largest of 512, 256 and 128 that divides ``T``
        rounded up to a multiple of 128 (no more padding than 128-token tiles need).
      partition: how ``q``/``k``/``v`` are split over the mesh in context (e.g.
        ``PartitionSpec(("data", "fsdp"), None, "tensor", None)``); with a mesh of more than
        one device the kernel then runs per shard under ``shard_map``. ``None``: unsharded.

    Returns:
      ``[B, T, H, Dh]`` in the dtype of ``q``, equal to :func:`local_attention`'s output: the
      masked softmax attention (float32 softmax statistics), and for a query row with no
      visible key (only through ``mask``) the mean of ``v`` over all ``T`` positions.

    Raises:
      ValueError: the arguments :func:`local_attention` rejects, or a bad ``block_size``.
    """
    _check_args(q, k, v, radius, num_global, mask)
    batch, t, heads, dh = q.shape
    radius, num_global, causal = int(radius), int(num_global), bool(causal)
    if t == 0:
        return jnp.zeros_like(q)
    if block_size is None:
        block_size = _default_block_size(t)
    if isinstance(block_size, bool) or block_size <= 0 or block_size % _LANES:
        raise ValueError(f"block_size must be a positive multiple of {_LANES}; got {block_size}")
    padded = -(-t // block_size) * block_size
    scale = 1.0 / math.sqrt(dh)
    q_scaled = (q.astype(jnp.float32) * scale).astype(q.dtype)
    key_ok = None if mask is None else jnp.asarray(mask, jnp.bool_)

    def run(q: jax.Array, k: jax.Array, v: jax.Array, key_ok: jax.Array | None) -> jax.Array:
        """The kernel on (a shard of) the batch and heads: [b, T, h, Dh] -> [b, T, h, Dh]."""
        kernel = _splash_kernel(
            padded, t, q.shape[2], radius, num_global, causal, block_size, bool(interpret)
        )

        def to_heads_major(x: jax.Array) -> jax.Array:  # [b, T, h, Dh] -> [b, h, Tp, Dh]
            x = jnp.pad(x, [(0, 0), (0, padded - t), (0, 0), (0, 0)])
            return jnp.swapaxes(x, 1, 2)

        qh, kh, vh = (to_heads_major(x) for x in (q, k, v))
        if key_ok is None:
            out = jax.vmap(kernel)(qh, kh, vh)
        else:
            kv_ids = jnp.pad(key_ok.astype(jnp.int32), [(0, 0), (0, padded - t)])
            ids = splash.SegmentIds(q=jnp.ones_like(kv_ids), kv=kv_ids)
            out = jax.vmap(kernel)(qh, kh, vh, segment_ids=ids)
        return jnp.swapaxes(out, 1, 2)[:, :t]

    out = _per_shard(run, partition, (q_scaled, k, v), key_ok)

    if key_ok is not None:
        # Splash gives a row with no visible key a meaningless average; local_attention gives
        # the mean of v (and no gradient to q or k), as dense attention does.
        mean_v = jnp.mean(v.astype(jnp.float32), axis=1)  # [B, H, Dh]
        seen = _has_visible_key(key_ok, radius, num_global, causal)[:, :, None, None]
        out = jnp.where(seen, out.astype(jnp.float32), mean_v[:, None])

    chex.assert_shape(out, (batch, t, heads, dh))
    return out.astype(q.dtype)
