"""Tests for mmtx.data.preprocessing: raw images and audio -> model inputs."""

import numpy as np
import pytest

from mmtx.data.preprocessing import to_audio_batch, to_image_batch


def test_uint8_is_scaled_to_unit_interval():
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = [0, 128, 255]
    out = to_image_batch(image, image_size=4)
    assert out.shape == (1, 4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(out[0, 1:], 0.0)


def test_float_in_range_passes_through():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 8, 8, 3))  # float64
    out = to_image_batch(images, image_size=8)
    assert out.dtype == np.float32 and out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out, images, rtol=1e-6)


@pytest.mark.parametrize("shape", [(20, 30, 3), (2, 32, 32, 3), (5, 5, 3)])
def test_resize_to_image_size(shape):
    colour = np.array([0.2, 0.5, 0.9], np.float32)
    images = np.broadcast_to(colour, shape).copy()
    out = to_image_batch(images, image_size=16)
    batch = shape[0] if len(shape) == 4 else 1
    assert out.shape == (batch, 16, 16, 3) and out.dtype == np.float32
    np.testing.assert_allclose(
        out, np.broadcast_to(colour, out.shape), atol=1e-5
    )  # flat stays flat


def test_resize_keeps_range_and_structure():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 255  # left half black, right half white
    out = to_image_batch(image, image_size=8)[0]
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[:, :3], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 5:], 1.0, atol=1e-6)


def test_grey_becomes_rgb():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = to_image_batch(grey, image_size=4)
    assert out.shape == (1, 4, 4, 3)
    for c in range(3):
        np.testing.assert_allclose(out[0, ..., c], grey / 255.0, rtol=1e-6)
    out = to_image_batch(np.zeros((2, 4, 4, 1), np.float32), image_size=4)
    assert out.shape == (2, 4, 4, 3)
    assert to_image_batch(np.zeros((4, 4, 1), np.float32), 4, channels=1).shape == (1, 4, 4, 1)


@pytest.mark.parametrize("shape", [(16,), (1, 2, 16, 16, 3)])
def test_image_bad_rank_raises(shape):
    with pytest.raises(ValueError, match=r"\[H, W, C\] or \[B, H, W, C\]"):
        to_image_batch(np.zeros(shape, np.float32), image_size=16)


@pytest.mark.parametrize("value", [1.5, -0.5, 255.0])
def test_float_out_of_range_raises(value):
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[0, 0, 0] = value
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_image_batch(image, image_size=8)


def test_image_other_errors():
    with pytest.raises(ValueError, match="3 channels"):
        to_image_batch(np.zeros((8, 8, 4), np.float32), image_size=8)
    with pytest.raises(TypeError, match="uint8 or float"):
        to_image_batch(np.zeros((8, 8, 3), np.int32), image_size=8)
    with pytest.raises(ValueError, match="empty"):
        to_image_batch(np.zeros((0, 8, 8, 3), np.float32), image_size=8)


def test_audio_crop_keeps_the_start():
    wav = np.arange(10, dtype=np.float64)
    out = to_audio_batch(wav, num_samples=4)
    assert out.shape == (1, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [0, 1, 2, 3])


def test_audio_pad_with_zeros_at_the_end():
    wav = np.ones((2, 3), np.float32)
    out = to_audio_batch(wav, num_samples=5)
    np.testing.assert_array_equal(out, [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    same = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_array_equal(to_audio_batch(same, 5), same)


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_audio_bad_rank_raises(shape):
    with pytest.raises(ValueError, match=r"\[samples\] or \[batch, samples\]"):
        to_audio_batch(np.zeros(shape, np.float32), num_samples=4)


def test_audio_other_errors():
    with pytest.raises(TypeError, match="float"):
        to_audio_batch(np.zeros((2, 8), np.int16), num_samples=8)
    with pytest.raises(ValueError, match="empty"):
        to_audio_batch(np.zeros((2, 0), np.float32), num_samples=8)
    with pytest.raises(ValueError, match="empty"):
        to_audio_batch(np.zeros((0, 8), np.float32), num_samples=8)
