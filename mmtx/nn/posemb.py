"""Resampling a learned 2-D position embedding to another patch grid."""

from __future__ import annotations

import jax
import numpy as np


def resample_position_embedding(
    table: np.ndarray,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 0,
) -> np.ndarray:
    """A learned position table for ``old_grid`` patches, bilinearly resampled to ``new_grid``.

    The first ``num_prefix_tokens`` rows (class / distillation tokens) are kept as they are;
    the remaining ``gh * gw`` rows, a row-major grid, are resized as a ``[gh, gw, D]`` image
    with bilinear interpolation on pixel centres (``align_corners=False``, antialiased when
    shrinking: torch's ``F.interpolate(mode="bilinear", antialias=True)``, which open_clip's
    and timm's ``resize_pos_embed`` call). So a checkpoint trained at 224 px runs at another
    size.

    Args:
      table: float ``[num_prefix_tokens + gh * gw, D]``.
      old_grid: ``(gh, gw)`` of ``table``.
      new_grid: ``(gh', gw')`` wanted.
      num_prefix_tokens: rows before the grid.

    Returns:
      float32 ``[num_prefix_tokens + gh' * gw', D]``; ``table`` itself (as float32) when the
      grids are equal.
    """
    table = np.asarray(table, np.float32)
    gh, gw = old_grid
    if table.ndim != 2 or table.shape[0] != num_prefix_tokens + gh * gw:
        raise ValueError(
            f"position table of shape {table.shape} does not hold {num_prefix_tokens} prefix "
            f"rows and a {gh}x{gw} grid"
        )
    if tuple(old_grid) == tuple(new_grid):
        return table
    prefix, grid = table[:num_prefix_tokens], table[num_prefix_tokens:]
    width = table.shape[1]
    with jax.default_device(jax.devices("cpu")[0]):
        resized = jax.image.resize(
            grid.reshape(gh, gw, width),
            (*new_grid, width),
            method="linear",
            antialias=True,
            precision=jax.lax.Precision.HIGHEST,
        )
    resized = np.asarray(resized, np.float32).reshape(-1, width)
    return np.concatenate([prefix, resized], axis=0)
