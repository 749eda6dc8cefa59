"""Video encoder: a ViViT (Arnab et al. 2021) over tubelets, joint or factorised."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.encoders.tower import Tower, TowerOptions, num_class_tokens
from mmtx.nn import LearnedPositionEmbedding, TubeletEmbed, sincos_1d, sincos_2d
from mmtx.nn.options import options

VIDEO_LAYOUTS = ("joint", "factorised")
VIDEO_POOLINGS = ("cls", "mean", "map")


def video_grid(
    num_frames: int, image_size: int, patch_size: int, tubelet_size: int
) -> tuple[int, int]:
    """``(T', N)``: tubelet slices in time ``num_frames / tubelet_size`` and patches per slice
    ``(image_size / patch_size) ** 2``; ``ValueError`` unless both divide exactly."""
    if min(num_frames, image_size, patch_size, tubelet_size) < 1:
        raise ValueError(
            "video num_frames, image_size, patch_size and tubelet_size must be >= 1; got "
            f"{num_frames}, {image_size}, {patch_size}, {tubelet_size}"
        )
    if num_frames % tubelet_size:
        raise ValueError(
            f"video num_frames ({num_frames}) must be divisible by tubelet_size ({tubelet_size})"
        )
    if image_size % patch_size:
        raise ValueError(
            f"video image_size ({image_size}) must be divisible by patch_size ({patch_size})"
        )
    return num_frames // tubelet_size, (image_size // patch_size) ** 2


def video_num_tokens(
    *,
    num_frames: int,
    image_size: int,
    patch_size: int,
    tubelet_size: int,
    pooling: str = "cls",
    layout: str = "joint",
) -> int:
    """Tokens per example of :class:`VideoEncoder`'s output ``x`` (its class tokens included).

    ``joint``: ``T' * N + K``; ``factorised``: ``T' + K`` (the temporal tower's tokens), with
    ``T'``, ``N`` from :func:`video_grid` and ``K`` the class tokens of ``pooling`` (cls: 1).
    """
    if layout not in VIDEO_LAYOUTS:
        raise ValueError(f"unknown video layout {layout!r}; use one of {VIDEO_LAYOUTS}")
    slices, patches = video_grid(num_frames, image_size, patch_size, tubelet_size)
    tokens = slices * patches if layout == "joint" else slices
    return tokens + num_class_tokens(pooling)


class VideoEncoder(TowerOptions):
    """ViViT (Arnab et al. 2021) over ``tubelet_size x patch_size x patch_size`` tubelets.

    ``video`` float ``[B, num_frames, image_size, image_size, channels]`` in ``[0, 1]`` is
    normalised with ``mean``/``std`` (per channel), cut into non-overlapping tubelets and
    projected to ``width`` by a :class:`mmtx.nn.TubeletEmbed` (params ``patches/projection``,
    kernel ``[tubelet_size, patch_size, patch_size, channels, width]``), giving ``T' * N``
    tokens in time-major order (``T' = num_frames / tubelet_size``, ``N = (image_size /
    patch_size) ** 2`` row-major per slice; ``out["stem"]`` ``[B, T' * N, width]``, after
    the position embeddings of the joint layout, the spatial ones of the factorised layout).

    Position embeddings are separable, a spatial table ``[N, width]`` plus a temporal table
    ``[T', width]`` (ViViT, TimeSformer): ``position_embedding="learned"`` learns them (params
    ``posemb/embedding`` and ``temporal_posemb/embedding``); ``"sincos"`` fixes them as
    :func:`mmtx.nn.sincos_2d` over the patch grid plus :func:`mmtx.nn.sincos_1d` over the
    slices (no params; ``width`` divisible by 4).

    ``layout``:
      ``"joint"``: both tables are added to every token and one :class:`Tower` (``tower``,
        ``depth`` blocks, any attention kernel) attends over all ``T' * N`` tokens ->
        ``x`` ``[B, T' * N + K, width]``.
      ``"factorised"`` (ViViT's factorised encoder): the spatial table is added and a spatial
        tower (``tower``, ``depth`` blocks) encodes each time slice's ``N`` tokens on its own
        (the slices batched as ``[B * T', N, width]``) and pools it with ``pooling``; the
        temporal table is added to the ``[B, T', width]`` slice embeddings
        (``out["spatial_pooled"]``, before that addition) and a temporal tower (``temporal``,
        ``temporal_depth`` blocks, 4 by default as in ViViT-B's factorised encoder; its own
        params and class tokens; the other tower options, :class:`TowerOptions`, shared)
        encodes them ->
        ``x`` ``[B, T' + K, width]``. The joint layout ignores ``temporal_depth``.

    ``K`` is the number of class tokens of ``pooling`` (``cls``: 1; ``mean``, ``map``: 0), so
    ``x`` has :func:`video_num_tokens` tokens. ``out`` holds the (last) tower's intermediates:
    ``"pooled"`` ``[B, width]``, ``"mask"`` bool ``[B, L]`` (all True: what fusion may attend
    to), ``"encoded"``, ``"pre_norm"``; plus ``"stem"`` and ``"grid"`` int ``(T', H/p, W/p)``.
    ``x`` and the pooled output are in ``dtype``, params in ``param_dtype``. With
    ``capture_weights`` the towers sow their attention probabilities into ``intermediates``
    (``tower/...``; factorised: the spatial ones batched over ``B * T'`` slices, and
    ``temporal/...``). The transformer options (:class:`mmtx.encoders.TowerOptions`,
    keyword-only) go whole to the towers.
    """

    num_frames: int
    image_size: int
    patch_size: int
    tubelet_size: int
    width: int
    temporal_depth: int = 4
    channels: int = 3
    layout: str = "joint"
    position_embedding: str = "learned"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def num_tokens(self) -> int:
        """Tokens per example of ``x`` for this encoder (:func:`video_num_tokens`)."""
        return video_num_tokens(
            num_frames=self.num_frames,
            image_size=self.image_size,
            patch_size=self.patch_size,
            tubelet_size=self.tubelet_size,
            pooling=self.pooling,
            layout=self.layout,
        )

    def _check_options(self) -> None:
        if self.layout not in VIDEO_LAYOUTS:
            raise ValueError(f"unknown video layout {self.layout!r}; use one of {VIDEO_LAYOUTS}")
        if self.pooling not in VIDEO_POOLINGS:
            raise ValueError(f"unknown video pooling {self.pooling!r}; use one of {VIDEO_POOLINGS}")
        if self.position_embedding not in ("learned", "sincos"):
            raise ValueError(
                f"unknown video position_embedding {self.position_embedding!r}; "
                "use 'learned' or 'sincos'"
            )
        video_grid(self.num_frames, self.image_size, self.patch_size, self.tubelet_size)

    def _position_tables(self, grid: tuple[int, int, int]) -> tuple[jax.Array, jax.Array]:
        """The spatial ``[N, width]`` and temporal ``[T', width]`` tables, in ``dtype``."""
        grid_t, grid_h, grid_w = grid
        if self.position_embedding == "sincos":
            spatial = jnp.asarray(sincos_2d(grid_h, grid_w, self.width))
            temporal = jnp.asarray(sincos_1d(grid_t, self.width))
        else:
            # Adding each table to zeros reads it out whole (exactly), so it can be broadcast
            # over the other axis of the [T', N] grid.
            zeros = jnp.zeros((1, max(grid_t, grid_h * grid_w), self.width), self.param_dtype)
            rows = grid_h * grid_w
            spatial = LearnedPositionEmbedding(rows, self.param_dtype, name="posemb")(
                zeros[:, :rows]
            )[0]
            temporal = LearnedPositionEmbedding(grid_t, self.param_dtype, name="temporal_posemb")(
                zeros[:, :grid_t]
            )[0]
        return spatial.astype(self.dtype), temporal.astype(self.dtype)

    @nn.compact
    def __call__(
        self, video: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes a batch of videos (see the class docstring); ``train`` enables dropout."""
        expected = (self.num_frames, self.image_size, self.image_size, self.channels)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"video must be [batch, {self.num_frames}, {self.image_size}, {self.image_size}, "
                f"{self.channels}] (batch, frames, height, width, channels) floats in [0, 1]; "
                f"got shape {tuple(video.shape)}"
            )
        self._check_options()
        batch = video.shape[0]
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        x = ((video.astype(jnp.float32) - mean) / std).astype(self.dtype)
        tubelet = (self.tubelet_size, self.patch_size, self.patch_size)
        x, grid = TubeletEmbed(self.width, tubelet, self.dtype, self.param_dtype, name="patches")(x)
        grid_t, grid_h, grid_w = grid
        patches = grid_h * grid_w
        spatial_table, temporal_table = self._position_tables(grid)
        x = x.reshape(batch, grid_t, patches, self.width) + spatial_table[None, None]
        tower = options(self, TowerOptions)
        if self.layout == "joint":
            x = x + temporal_table[None, :, None]
            stem = x.reshape(batch, grid_t * patches, self.width)
            x, out = Tower(**tower, name="tower")(stem, None, train=train)
        else:
            stem = x.reshape(batch, grid_t * patches, self.width)
            _, spatial = Tower(**tower, name="tower")(
                x.reshape(batch * grid_t, patches, self.width), None, train=train
            )
            slices = spatial["pooled"].reshape(batch, grid_t, self.width)
            temporal = Tower(**dict(tower, depth=self.temporal_depth), name="temporal")
            x, out = temporal(slices + temporal_table[None], None, train=train)
            out["spatial_pooled"] = slices
        chex.assert_shape(stem, (batch, grid_t * patches, self.width))
        chex.assert_shape(x, (batch, self.num_tokens(), self.width))
        chex.assert_shape(out["pooled"], (batch, self.width))
        out.update(stem=stem, grid=jnp.asarray(grid))
        return x, out
