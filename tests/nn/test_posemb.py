"""Tests for mmtx/nn/posemb.py against a plain numpy bilinear resampler."""

from __future__ import annotations

import numpy as np
import pytest

from mmtx.checkpoints import resample_position_embedding


def bilinear_reference(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Half-pixel-centre bilinear upsampling of ``[h, w, D]`` (torch's align_corners=False)."""
    h, w, _ = grid.shape

    def weights(old: int, new: int) -> np.ndarray:
        matrix = np.zeros((new, old))
        for i in range(new):
            x = min(max((i + 0.5) * old / new - 0.5, 0.0), old - 1)
            lo = int(np.floor(x))
            hi = min(lo + 1, old - 1)
            matrix[i, lo] += 1 - (x - lo)
            matrix[i, hi] += x - lo
        return matrix

    return np.einsum("ia,jb,abd->ijd", weights(h, size[0]), weights(w, size[1]), grid)


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_upsampling_keeps_prefix_rows_and_is_bilinear(prefix):
    rng = np.random.default_rng(prefix)
    table = rng.normal(size=(prefix + 3 * 4, 5)).astype(np.float32)
    got = resample_position_embedding(table, (3, 4), (5, 7), prefix)
    assert got.shape == (prefix + 35, 5) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:prefix], table[:prefix])
    want = bilinear_reference(table[prefix:].reshape(3, 4, 5).astype(np.float64), (5, 7))
    np.testing.assert_allclose(got[prefix:].reshape(5, 7, 5), want, atol=1e-6)


def test_same_grid_is_unchanged_and_shrinking_keeps_constants():
    table = np.arange(2 * 17, dtype=np.float32).reshape(17, 2)
    np.testing.assert_array_equal(resample_position_embedding(table, (4, 4), (4, 4), 1), table)
    constant = np.full((1 + 36, 3), 0.25, np.float32)
    shrunk = resample_position_embedding(constant, (6, 6), (3, 3), 1)
    assert shrunk.shape == (10, 3)
    np.testing.assert_allclose(shrunk, 0.25, atol=1e-7)


def test_a_table_that_does_not_fit_the_grid_is_refused():
    with pytest.raises(ValueError, match=r"1 prefix rows and a 4x4 grid"):
        resample_position_embedding(np.zeros((16, 3)), (4, 4), (5, 5), 1)
