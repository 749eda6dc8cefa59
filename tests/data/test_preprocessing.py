"""Tests for mmtx.data.preprocessing: raw images and audio -> model inputs."""

import re

import numpy as np
import pytest
from helpers import torchvision_eval_reference

from mmtx.data.preprocessing import (
    _stack_each,
    audio_to_float,
    center_crop,
    crop_or_pad,
    decode_image,
    preprocess_audio,
    preprocess_image,
    random_crop,
    random_flip,
    random_resized_crop,
    resample,
    resize_shorter_side,
    select_text,
    to_audio_batch,
    to_image_batch,
)


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
        to_image_batch(np.zeros((8, 8, 5), np.float32), image_size=8)
    with pytest.raises(TypeError, match="uint8 or float"):
        to_image_batch(np.zeros((8, 8, 3), np.int32), image_size=8)
    with pytest.raises(ValueError, match="empty"):
        to_image_batch(np.zeros((0, 8, 8, 3), np.float32), image_size=8)


def test_list_of_images_of_different_sizes():
    """Each entry is resized on its own: uint8 and float arrays, nested lists and PIL images
    (a list numpy cannot stack used to fail with its "inhomogeneous shape")."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(20, 30, 3), (41, 17, 3)]]
    reference = np.stack([preprocess_image(image, 16) for image in images])
    as_float = [image.astype(np.float32) / 255 for image in images]
    for batch in (images, tuple(images)):
        np.testing.assert_array_equal(to_image_batch(batch, 16), reference)
    float_reference = np.stack([preprocess_image(image, 16) for image in as_float])
    for batch in (as_float, [image.tolist() for image in as_float]):
        np.testing.assert_allclose(to_image_batch(batch, 16), float_reference, atol=1e-6)
    pil = [Image.fromarray(image) for image in images]
    np.testing.assert_array_equal(to_image_batch(pil, 16), reference)
    np.testing.assert_array_equal(to_image_batch(pil[1], 16), reference[1:])
    assert to_image_batch([as_float[0].tolist()] * 2, 16).shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match=re.escape("image[1]: image must be [H, W, C]")):
        to_image_batch([images[0], np.zeros(5, np.uint8)], 16)


def test_alpha_is_dropped_as_pil_convert_rgb_does():
    """RGBA and grey + alpha, as PNG bytes, PIL images or arrays: the colour channels are
    kept and alpha dropped (not composited), the result of PIL's ``convert("RGB")``."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (24, 36, 4), dtype=np.uint8)
    rgba[:8, :, 3] = 0  # fully transparent rows with random colours
    rgba[8:12, :, :] = 0  # transparent black, as most PNG encoders store transparency
    png = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(png, format="PNG")
    with Image.open(io.BytesIO(png.getvalue())) as opened:
        assert opened.mode == "RGBA"
        expected = to_image_batch(np.asarray(opened.convert("RGB")), 16)
        np.testing.assert_array_equal(to_image_batch(opened, 16), expected)
    np.testing.assert_array_equal(expected, to_image_batch(rgba[..., :3], 16))
    for image in (png.getvalue(), rgba, [rgba, png.getvalue()]):
        out = to_image_batch(image, 16)
        np.testing.assert_array_equal(out, np.repeat(expected, len(out), axis=0))
    as_float = rgba.astype(np.float32) / 255
    np.testing.assert_array_equal(
        to_image_batch(as_float, 16), to_image_batch(as_float[..., :3], 16)
    )

    grey_alpha = rng.integers(0, 256, (24, 36, 2), dtype=np.uint8)
    la = io.BytesIO()
    Image.fromarray(grey_alpha, mode="LA").save(la, format="PNG")
    grey = to_image_batch(grey_alpha[..., 0], 16)
    assert grey.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(to_image_batch(la.getvalue(), 16), grey)
    np.testing.assert_array_equal(to_image_batch(grey_alpha, 16), grey)
    one_channel = to_image_batch(grey_alpha, 16, channels=1)
    np.testing.assert_array_equal(one_channel, grey[..., :1])
    np.testing.assert_array_equal(to_image_batch(la.getvalue(), 16, channels=1), one_channel)


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


# ------------------------------------------------------------- per-example pipeline functions


def test_select_text():
    assert select_text("a") == "a"
    assert select_text(b"caf\xc3\xa9") == "café"
    assert select_text(np.array([b"first", b"second"])) == "first"
    assert select_text(["first", "second"]) == "first"
    picks = {select_text(["x", "y", "z"], np.random.default_rng(s)) for s in range(30)}
    assert picks == {"x", "y", "z"}
    with pytest.raises(ValueError, match="no captions"):
        select_text([])
    with pytest.raises(TypeError, match="str, bytes"):
        select_text(3)


def test_resize_shorter_side_keeps_aspect():
    image = np.zeros((30, 60, 3), np.uint8)
    assert resize_shorter_side(image, 10).shape == (10, 20, 3)
    assert resize_shorter_side(image.transpose(1, 0, 2), 10).shape == (20, 10, 3)
    assert resize_shorter_side(np.zeros((7, 7, 3), np.float32), 14).shape == (14, 14, 3)


def test_crops_and_flip():
    image = np.arange(6 * 8, dtype=np.float32).reshape(6, 8, 1)
    np.testing.assert_array_equal(center_crop(image, 4), image[1:5, 2:6])
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(200):
        crop = random_crop(image, 4, rng)
        top, left = divmod(int(crop[0, 0, 0]), 8)
        offsets.add((top, left))
        np.testing.assert_array_equal(crop, image[top : top + 4, left : left + 4])
    assert offsets == {(r, c) for r in range(3) for c in range(5)}  # every placement occurs
    flips = [random_flip(image, rng) for _ in range(100)]
    flipped = sum(np.array_equal(f, image[:, ::-1]) for f in flips)
    assert 30 < flipped < 70 and all(
        np.array_equal(f, image) or np.array_equal(f, image[:, ::-1]) for f in flips
    )
    with pytest.raises(ValueError, match="cannot crop"):
        center_crop(image, 7)


def test_preprocess_image_centre_crops_non_square():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # a white square in the middle of a black strip
    out = preprocess_image(image, 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.float32
    # The centre crop is the white square (its outer columns blurred by the antialiasing).
    np.testing.assert_allclose(out[:, 1:-1], 1.0, atol=1e-6)
    rng = np.random.default_rng(1)
    augmented = [preprocess_image(image, 10, rng=rng) for _ in range(10)]
    assert all(a.shape == (10, 10, 3) for a in augmented)
    assert any(a.min() < 0.5 for a in augmented)  # an off-centre crop shows black


def test_audio_to_float_scales_pcm():
    np.testing.assert_allclose(audio_to_float(np.array([-32768, 0, 16384], np.int16)), [-1, 0, 0.5])
    np.testing.assert_allclose(
        audio_to_float(np.array([0, 128, 255], np.uint8)), [-1, 0, 127 / 128]
    )
    assert audio_to_float(np.array([0.25], np.float64)).dtype == np.float32
    with pytest.raises(TypeError, match="PCM"):
        audio_to_float(np.array([True]))


@pytest.mark.parametrize(("from_rate", "to_rate"), [(8000, 16000), (22050, 16000), (16000, 16000)])
def test_resample_keeps_a_tone(from_rate, to_rate):
    seconds, hz = 0.5, 440.0
    t = np.arange(int(from_rate * seconds)) / from_rate
    out = resample(np.sin(2 * np.pi * hz * t), from_rate, to_rate)
    assert out.dtype == np.float32 and len(out) == int(np.ceil(len(t) * to_rate / from_rate))
    expected = np.sin(2 * np.pi * hz * np.arange(len(out)) / to_rate)
    inner = slice(len(out) // 10, -len(out) // 10)  # away from the filter's edge effects
    np.testing.assert_allclose(out[inner], expected[inner], atol=2e-3)


def test_resample_removes_what_the_new_rate_cannot_hold():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 6000.0 * t)  # above the 4 kHz Nyquist of 8 kHz
    assert np.abs(resample(tone, 16000, 8000)[800:-800]).max() < 0.01


def test_crop_or_pad():
    clip = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(clip, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(crop_or_pad(clip[:3], 5), [0, 1, 2, 0, 0])
    rng = np.random.default_rng(0)
    starts = {int(crop_or_pad(clip, 4, rng)[0]) for _ in range(200)}
    assert starts == set(range(7))


def test_preprocess_audio_and_to_audio_batch_resample():
    clip = (np.sin(np.arange(800) / 5) * 10000).astype(np.int16)
    out = preprocess_audio(clip, 2000, sample_rate=8000, target_rate=16000)
    assert out.shape == (2000,) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1600:], 0.0)
    batch = to_audio_batch(audio_to_float(clip)[None], 2000, sample_rate=8000, target_rate=16000)
    np.testing.assert_array_equal(batch[0], out)
    stereo = np.stack([clip, clip], axis=1)
    np.testing.assert_allclose(
        preprocess_audio(stereo, 2000, sample_rate=8000, target_rate=16000), out, atol=1e-6
    )


def test_decode_image_png_exact_and_jpeg_at_reduced_scale():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    np.testing.assert_array_equal(decode_image(png.getvalue(), min_size=8), pixels)
    smooth = np.broadcast_to(np.linspace(0, 255, 640)[None, :, None], (480, 640, 3))
    jpeg = io.BytesIO()
    Image.fromarray(smooth.astype(np.uint8)).save(jpeg, format="JPEG", quality=95)
    full = decode_image(jpeg.getvalue())
    assert full.shape == (480, 640, 3)
    small = decode_image(jpeg.getvalue(), min_size=64)
    assert small.shape == (120, 160, 3)  # 1/4 scale: the smallest with both sides >= 64
    assert decode_image(jpeg.getvalue(), min_size=300).shape == (480, 640, 3)
    out = preprocess_image(jpeg.getvalue(), 64)  # bytes straight into preprocessing
    reference = preprocess_image(full, 64)
    assert out.shape == (64, 64, 3) and np.abs(out - reference).max() < 0.03
    grey = decode_image(png.getvalue(), channels=1)
    assert grey.shape == (30, 50, 1)


# ------------------------------------------------- raw inputs that would give a wrong result


def png_bytes(pixels):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_rejected_naming_the_example(value):
    images = np.full((3, 8, 8, 3), 0.5, np.float32)
    images[1, 2, 3, 0] = value
    with pytest.raises(ValueError, match=re.escape("image_features[1]: image has non-finite")):
        to_image_batch(images, 8, name="image_features")
    with pytest.raises(ValueError, match=re.escape("image_features: image has non-finite")):
        to_image_batch(images[1], 8, name="image_features")  # one image: no index
    with pytest.raises(ValueError, match="non-finite"):
        preprocess_image(images[1], 8)  # the input pipeline's path


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_audio_is_rejected_naming_the_example(value):
    clips = np.zeros((3, 100), np.float32)
    clips[2, 50] = value
    with pytest.raises(ValueError, match=re.escape("audio_inputs[2] has non-finite samples")):
        to_audio_batch(clips, 100, name="audio_inputs")
    with pytest.raises(ValueError, match=re.escape("audio_inputs has non-finite samples")):
        to_audio_batch(clips[2], 100, name="audio_inputs")
    with pytest.raises(ValueError, match="non-finite"):
        preprocess_audio(clips[2], 100, sample_rate=16000, target_rate=16000)


def test_zero_height_or_width_image_is_rejected():
    for shape in [(0, 16, 3), (16, 0, 3), (0, 0)]:
        with pytest.raises(ValueError, match=re.escape("image_features: image has zero height")):
            to_image_batch(np.zeros(shape, np.uint8), 8, name="image_features")
    with pytest.raises(ValueError, match=re.escape("image_features[0]: image has zero height")):
        to_image_batch(np.zeros((2, 0, 16, 3), np.uint8), 8, name="image_features")


def test_stereo_clip_is_mixed_down_to_mono():
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-1, 1, (1000, 2)).astype(np.float32)  # one clip [samples, channels]
    out = to_audio_batch(stereo, 1200)
    reference = np.zeros((1, 1200), np.float32)
    reference[0, :1000] = (stereo[:, 0] + stereo[:, 1]) / 2
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-7)
    surround = rng.uniform(-1, 1, (1000, 8)).astype(np.float32)  # 8 channels: the most
    np.testing.assert_allclose(to_audio_batch(surround, 1000)[0], surround.mean(axis=1), atol=1e-6)
    mono_column = stereo[:, :1]  # [samples, 1] is one mono clip
    np.testing.assert_array_equal(to_audio_batch(mono_column, 1000), stereo[None, :, 0])
    resampled = to_audio_batch(stereo, 2000, sample_rate=8000, target_rate=16000)
    expected = to_audio_batch(stereo.mean(axis=1), 2000, sample_rate=8000, target_rate=16000)
    np.testing.assert_allclose(resampled, expected, atol=1e-6)


def test_batch_of_multichannel_clips_is_mixed_down_per_clip():
    rng = np.random.default_rng(1)
    clips = rng.uniform(-1, 1, (3, 500, 2)).astype(np.float32)  # [batch, samples, channels]
    out = to_audio_batch(clips, 500)
    assert out.shape == (3, 500)
    for index in range(3):
        np.testing.assert_allclose(out[index], clips[index].mean(axis=1), atol=1e-7)


def test_2d_audio_layout_rule():
    """[B, S] with S longer than 8 stays a batch of mono clips; [S, C] with C <= 8 < S is
    one clip of C channels."""
    assert to_audio_batch(np.zeros((2, 1000), np.float32), 1000).shape == (2, 1000)
    assert to_audio_batch(np.zeros((9, 9), np.float32), 9).shape == (9, 9)  # 9 > 8 channels
    assert to_audio_batch(np.zeros((8, 9), np.float32), 9).shape == (8, 9)
    assert to_audio_batch(np.zeros((16000, 2), np.float32), 100).shape == (1, 100)


@pytest.mark.parametrize("shape", [(2, 3, 16000), (2, 100, 9), (2, 4, 4)])
def test_multichannel_layout_errors_name_the_layouts(shape):
    with pytest.raises(ValueError, match=re.escape("audio_inputs must be [samples] or")) as info:
        to_audio_batch(np.zeros(shape, np.float32), 100, name="audio_inputs")
    assert "at most 8 channels" in str(info.value) and str(shape) in str(info.value)


def test_encoded_images_are_decoded_as_the_pipeline_does():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 12, 20, 3), dtype=np.uint8)
    reference = to_image_batch(pixels, 8)
    np.testing.assert_array_equal(to_image_batch(png_bytes(pixels[0]), 8), reference[:1])
    pngs = [png_bytes(p) for p in pixels]
    np.testing.assert_array_equal(to_image_batch(pngs, 8), reference)
    np.testing.assert_array_equal(to_image_batch([pngs[0], pixels[1]], 8), reference)  # a mix
    np.testing.assert_array_equal(to_image_batch(np.array(pngs, dtype=object), 8), reference)
    other_size = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)  # list entries: any size
    mixed = to_image_batch([pixels[0], other_size], 8)
    np.testing.assert_array_equal(mixed[1], preprocess_image(other_size, 8))
    with pytest.raises(ValueError, match=re.escape("image_features[1]:")):
        to_image_batch([pngs[0], b"not an image"], 8, name="image_features")
    with pytest.raises(ValueError, match=re.escape("image_features: cannot identify image")):
        to_image_batch(b"not an image", 8, name="image_features")


def _crops(monkeypatch, image, draws, **kwargs):
    """The windows random_resized_crop cuts (before resizing), found by spying on the resize:
    ``(top, left, height, width)`` read from a coordinate-valued image."""
    from mmtx.data import preprocessing

    seen = []
    monkeypatch.setattr(preprocessing, "_resize", lambda crop, *size: seen.append(crop) or crop)
    rng = np.random.default_rng(0)
    for _ in range(draws):
        preprocessing.random_resized_crop(image, 8, rng, **kwargs)
    return [(int(c[0, 0, 0]), int(c[0, 0, 1]), c.shape[0], c.shape[1]) for c in seen]


def test_random_resized_crop_draws_windows_of_the_asked_area_and_ratio(monkeypatch):
    height, width = 60, 90
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([rows, cols, rows * 0], axis=-1).astype(np.float32)
    crops = _crops(monkeypatch, image, 300, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    areas = np.asarray([h * w / (height * width) for _, _, h, w in crops])
    ratios = np.asarray([w / h for _, _, h, w in crops])
    assert all(0 <= t and t + h <= height and 0 <= left and left + w <= width
               for t, left, h, w in crops)  # fmt: skip
    assert 0.28 < areas.min() and areas.max() < 0.62  # rounding to whole pixels
    assert 0.45 < ratios.min() and ratios.max() < 2.1
    assert areas.std() > 0.05 and len({(t, left) for t, left, _, _ in crops}) > 100
    # Nothing fits (a 3:1 window of the whole area): the centred window of the nearest ratio.
    assert set(_crops(monkeypatch, image, 5, scale=(1.0, 1.0), ratio=(3.0, 4.0))) == {
        (15, 0, 30, 90)
    }


def test_preprocess_image_with_crop_scale_uses_the_resized_crop():
    image = np.random.default_rng(1).random((40, 50, 3)).astype(np.float32)
    out = preprocess_image(image, 16, rng=np.random.default_rng(2), crop_scale=(0.9, 1.0))
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    plain = preprocess_image(image, 16, rng=np.random.default_rng(2))
    assert not np.array_equal(out, plain)


# (H, W, image_size): odd sizes and both orientations. 33x47 -> 16x22 (torchvision truncates
# 22.8; rounding gave 23); 32x38 -> 16x19, a crop offset of 1.5 columns (round: 2, floor: 1);
# 38x32 the same in rows; 64x80 and 100x60 shrink by 4 and 6.25.
RESIZE_SHAPES = [(64, 80, 16), (100, 60, 16), (33, 47, 16), (32, 38, 16), (38, 32, 16)]
RESIZE_OPTIONS = [
    {},  # the defaults: shorter side, bilinear
    {"interpolation": "bicubic"},
    {"resize_size": 19},  # a larger shorter side, then the centre 16 (HF CLIP's 256 -> 224)
    {"resize_size": 21, "interpolation": "bicubic"},
    {"resize_size": 21, "interpolation": "bicubic", "crop_offset": "floor"},  # HF CLIP's
    {"resize": "squash"},
    {"resize": "squash", "interpolation": "bicubic"},
]


def _pixels(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*shape, 3)).astype(np.uint8)
    return image if dtype == np.uint8 else image.astype(np.float32) / 255


@pytest.mark.parametrize("options", RESIZE_OPTIONS, ids=lambda o: str(o) or "default")
@pytest.mark.parametrize("height, width, size", RESIZE_SHAPES)
def test_preprocess_image_matches_torchvision_eval_transform_on_uint8(height, width, size, options):
    image = _pixels((height, width))
    out = preprocess_image(image, size, **options)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    expected = torchvision_eval_reference(image, size, **options)
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), expected)
    batch = to_image_batch([image, image[:, ::-1]], size, **options)
    np.testing.assert_array_equal(batch[0], out)
    flipped = torchvision_eval_reference(np.ascontiguousarray(image[:, ::-1]), size, **options)
    np.testing.assert_array_equal(np.rint(batch[1] * 255).astype(np.uint8), flipped)


@pytest.mark.parametrize("options", RESIZE_OPTIONS, ids=lambda o: str(o) or "default")
def test_preprocess_image_matches_the_reference_on_float_images(options):
    image = _pixels((33, 47), seed=1, dtype=np.float32)
    out = preprocess_image(image, 16, **options)
    expected = np.clip(torchvision_eval_reference(image, 16, **options), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # Within a grey level of the uint8 path (PIL rounds uint8 results; bicubic overshoots).
    as_uint8 = preprocess_image(_pixels((33, 47), seed=1), 16, **options)
    np.testing.assert_allclose(out, as_uint8, atol=1.01 / 255)


def test_center_crop_rounds_the_offset_half_to_even_as_torchvision():
    image = np.arange(23 * 21, dtype=np.float32).reshape(23, 21, 1)
    # (23 - 16) / 2 = 3.5 -> row 4; (21 - 16) / 2 = 2.5 -> column 2.
    np.testing.assert_array_equal(center_crop(image, 16), image[4:20, 2:18])
    np.testing.assert_array_equal(center_crop(image[:19, :17], 16), image[2:18, 0:16])
    # HF's image processors floor it: row 3, column 2.
    np.testing.assert_array_equal(center_crop(image, 16, "floor"), image[3:19, 2:18])


def test_resize_shorter_side_truncates_the_longer_side_as_torchvision():
    assert resize_shorter_side(np.zeros((33, 47, 3), np.uint8), 16).shape == (16, 22, 3)
    assert resize_shorter_side(np.zeros((47, 33, 1), np.float32), 16).shape == (22, 16, 1)
    assert resize_shorter_side(np.zeros((480, 640, 3), np.uint8), 224).shape == (224, 298, 3)


def test_bicubic_uint8_with_other_channel_counts_does_not_wrap_around():
    image = np.zeros((20, 20, 4), np.uint8)
    image[:, 10:] = 255  # a hard edge: bicubic rings below 0 and above 255 beside it
    out = preprocess_image(image, 8, channels=4, interpolation="bicubic")
    assert out.shape == (8, 8, 4)
    # The float path clips the ringing to [0, 1]; uint8 must too (a cast alone wraps -3 to 253).
    as_float = preprocess_image(image / 255, 8, channels=4, interpolation="bicubic")
    np.testing.assert_allclose(out, as_float, atol=1.01 / 255)


def test_training_augmentation_follows_the_resize_options():
    image = _pixels((30, 44))
    # squash: the squashed image, mirrored or not, never cropped.
    squashed = preprocess_image(image, 16, resize="squash", interpolation="bicubic")
    seen = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        out = preprocess_image(image, 16, rng=rng, resize="squash", interpolation="bicubic")
        flipped = np.array_equal(out, squashed[:, ::-1])
        assert flipped or np.array_equal(out, squashed)
        seen.add(flipped)
    assert seen == {True, False}
    # shorter_side with resize_size: a random 16 square of the 20 x 29 resize, maybe mirrored.
    big = resize_shorter_side(image, 20)
    rows, cols = big.shape[0] - 15, big.shape[1] - 15
    windows = [big[t : t + 16, c : c + 16] for t in range(rows) for c in range(cols)]
    for seed in range(8):
        out = preprocess_image(image, 16, rng=np.random.default_rng(seed), resize_size=20)
        levels = np.rint(out * 255).astype(np.uint8)
        assert any(np.array_equal(levels, w) or np.array_equal(levels, w[:, ::-1]) for w in windows)
    # crop_scale: the random resized crop, resampled with the configured filter.
    rng = np.random.default_rng(3)
    window = random_resized_crop(image, 16, rng, (0.5, 1.0), interpolation="bicubic")
    expected = random_flip(window, rng).astype(np.float32) / 255
    out = preprocess_image(
        image, 16, rng=np.random.default_rng(3), crop_scale=(0.5, 1.0), interpolation="bicubic"
    )
    np.testing.assert_allclose(out, expected, atol=1e-7)
    bilinear = preprocess_image(image, 16, rng=np.random.default_rng(3), crop_scale=(0.5, 1.0))
    assert not np.array_equal(out, bilinear)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resize": "crop"}, "resize must be one of ('shorter_side', 'squash'); got 'crop'"),
        ({"interpolation": "nearest"}, "interpolation must be one of ('bilinear', 'bicubic')"),
        ({"resize_size": 12}, "resize_size must be 0 (= image_size) or >= image_size 16; got 12"),
        ({"resize": "squash", "resize_size": 20}, "resize_size applies to resize='shorter_side'"),
        ({"crop_offset": "ceil"}, "crop_offset must be one of ('round', 'floor'); got 'ceil'"),
    ],
)
def test_resize_options_not_allowed_are_refused(options, message):
    image = _pixels((20, 20))
    with pytest.raises(ValueError, match=re.escape(message)):
        preprocess_image(image, 16, **options)
    with pytest.raises(ValueError, match="^" + re.escape(message)):  # not blamed on image[0]
        to_image_batch([image], 16, **options)


def _stack_each_reference(examples, process, name, batched):
    """What _stack_each must do, written out: each example processed, stacked; the first
    failure re-raised naming the input (and the example in a batch), OSError as ValueError."""
    if len(examples) == 0:
        raise ValueError(name + " batch is empty")
    results = []
    for i in range(len(examples)):
        try:
            results.append(process(examples[i]))
        except OSError as error:
            prefix = name + "[" + str(i) + "]" if batched else name
            raise ValueError(prefix + ": " + str(error)) from error
        except (ValueError, TypeError) as error:
            prefix = name + "[" + str(i) + "]" if batched else name
            raise type(error)(prefix + ": " + str(error)) from error
    return np.stack(results)


def _outcome(function, *args, **kwargs):
    """The function's result, or the error it raised (type, message, and what it chains)."""
    try:
        out = function(*args, **kwargs)
    except Exception as error:
        return type(error), str(error), type(error.__cause__), str(error.__cause__)
    return out


def _fails_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    if x == 4:
        raise TypeError("four has the wrong type")
    if x == 5:
        raise OSError("cannot identify image file")
    if x == 6:
        raise KeyError("six")  # not one of the errors named: passes through untouched
    return np.full((2, 3), x, np.float32)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize(
    "examples",
    [[0], [0, 1, 2], [3], [1, 3], [0, 1, 4], [2, 5], [], [1, 3, 4]],
)
def test_stack_each_matches_the_written_out_loop(examples, batched):
    got = _outcome(_stack_each, examples, _fails_on_three, name="video_inputs", batched=batched)
    want = _outcome(_stack_each_reference, examples, _fails_on_three, "video_inputs", batched)
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want
    with pytest.raises(KeyError, match="six"):
        _stack_each([1, 6], _fails_on_three, name="x", batched=batched)


def test_stack_each_names_the_example_in_a_batch_only():
    with pytest.raises(ValueError, match=re.escape("image_features[1]: three is not allowed")):
        _stack_each([0, 3], _fails_on_three, name="image_features", batched=True)
    with pytest.raises(ValueError, match="^" + re.escape("image: three is not allowed")):
        _stack_each([3], _fails_on_three, name="image", batched=False)
    with pytest.raises(ValueError, match=re.escape("video[0]: cannot identify image file")):
        _stack_each([5], _fails_on_three, name="video", batched=True)
