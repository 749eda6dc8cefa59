"""Pure preprocessing functions that turn raw images and audio into model inputs.

They take and return numpy arrays, so the same code runs in the input pipeline and in
:class:`mmtx.Model`'s raw-input calls.
"""

from __future__ import annotations

import jax
import numpy as np


def to_image_batch(images: np.ndarray, image_size: int, channels: int = 3) -> np.ndarray:
    """Raw images -> float32 ``[B, image_size, image_size, channels]`` in ``[0, 1]``.

    Accepts one image ``[H, W, C]`` or a batch ``[B, H, W, C]`` (also ``[H, W]`` grey);
    ``uint8`` pixels are scaled by 1/255, floats must already be in ``[0, 1]``. Images of
    another size are resized (bilinear, antialiased); grey images are repeated to RGB.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[..., None]
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(
            f"image must be [H, W, C] or [B, H, W, C]; got shape {images.shape} ({images.ndim}-D)"
        )
    if images.shape[0] == 0:
        raise ValueError("image batch is empty")
    if images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[-1] != channels:
        raise ValueError(f"image must have {channels} channels; got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
        if images.size and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
            raise ValueError(
                "float images must be in [0, 1]; got values in "
                f"[{images.min():.3g}, {images.max():.3g}] (pass uint8 for 0..255 pixels)"
            )
    else:
        raise TypeError(f"image dtype must be uint8 or float; got {images.dtype}")
    if images.shape[1:3] != (image_size, image_size):
        shape = (images.shape[0], image_size, image_size, channels)
        images = np.asarray(jax.image.resize(images, shape, method="bilinear", antialias=True))
        images = np.clip(images, 0.0, 1.0)
    return images


def to_audio_batch(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Raw waveforms -> float32 ``[B, num_samples]``: cropped (keep the start) or zero-padded.

    Accepts one clip ``[S]`` or a batch ``[B, S]``.
    """
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise ValueError(
            f"audio must be [samples] or [batch, samples]; got shape {audio.shape} ({audio.ndim}-D)"
        )
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"audio batch is empty: shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"audio must be a float waveform; got dtype {audio.dtype}")
    audio = audio[:, :num_samples].astype(np.float32)
    if audio.shape[1] < num_samples:
        audio = np.pad(audio, ((0, 0), (0, num_samples - audio.shape[1])))
    return audio
