"""Writes tests/nn/fixtures/kaldi_fbank.npz: transformers' AST features of a few fixed clips.

The reference for ``mmtx.nn.kaldi_fbank`` (tests/nn/test_kaldi_fbank.py). Runs in its own
virtualenv, not mmtx's, with transformers' numpy filterbank path (no torchaudio)::

    python3.11 -m venv /tmp/fbankref
    /tmp/fbankref/bin/pip install transformers==5.24.0 numpy \\
        /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /tmp/fbankref/bin/python benchmarks/peers/make_fbank_fixture.py

torch is needed although the filterbank is numpy: ``ASTFeatureExtractor`` is marked
``@requires(backends=("torch",))`` and refuses to construct without it, and its numpy branch
still pads with ``torch.nn.ZeroPad2d``. torchaudio must be absent (checked below): with it the
extractor would call ``torchaudio.compliance.kaldi.fbank`` instead.

Clips (16 kHz float32 in [-1, 1], as AST is fed; no 16-bit scaling):
  0. white noise, 12000 samples (73 frames: truncated to ``max_length`` = 64);
  1. a linear chirp 100 Hz -> 7.5 kHz plus faint noise (-60 dB), 11000 samples (67 frames);
  2. noise, a stretch of digital silence (frames at the mel floor) and a 440 Hz tone,
     6000 samples (36 frames: padded to 64).
Stored: ``waveforms`` [3, 12000] float32 (zero-padded) and ``lengths`` [3]; ``fbank_<i>``
the raw log-mel of clip i (no padding, no normalisation) [frames_i, 128] float32;
``input_values`` [3, 64, 128] float32, the extractor's normalised output; the settings.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import transformers
from transformers import ASTFeatureExtractor
from transformers.utils import is_speech_available

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "nn" / "fixtures" / "kaldi_fbank.npz"
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
MAX_LENGTH = 64


def clips() -> list[np.ndarray]:
    """The three fixed test clips, float32 [S_i]."""
    rng = np.random.default_rng(17)
    noise = (0.1 * rng.standard_normal(12000)).astype(np.float32)

    t = np.arange(11000) / SAMPLE_RATE
    f0, f1, duration = 100.0, 7500.0, t[-1]
    phase = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / duration * t**2)
    chirp = (0.5 * np.sin(phase) + 5e-4 * rng.standard_normal(t.size)).astype(np.float32)

    mixed = 0.05 * rng.standard_normal(6000)
    mixed[1500:3200] = 0.0  # Frames 10..17 fully silent: log(mel_floor).
    mixed[4000:] += 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(2000) / SAMPLE_RATE)
    return [noise, chirp, mixed.astype(np.float32)]


def main() -> None:
    assert transformers.__version__ == "5.24.0", transformers.__version__
    assert importlib.util.find_spec("torchaudio") is None, "uninstall torchaudio: numpy path only"
    assert not is_speech_available()
    extractor = ASTFeatureExtractor(
        sampling_rate=SAMPLE_RATE, num_mel_bins=NUM_MEL_BINS, max_length=MAX_LENGTH
    )
    # Only the numpy branch sets these (the torchaudio branch needs none).
    assert hasattr(extractor, "mel_filters") and hasattr(extractor, "window")
    mean, std = extractor.mean, extractor.std

    waves = clips()
    raw = {}
    for i, wave in enumerate(waves):
        # The extractor's own fbank, padded with zero rows to a length no clip reaches; the
        # clip's frames are the rows before the zero padding.
        padded = extractor._extract_fbank_features(wave, max_length=1000)
        frames = 1 + (wave.size - 400) // 160
        assert not np.any(np.all(padded[:frames] == 0.0, axis=1))
        assert np.all(padded[frames:] == 0.0)
        raw[f"fbank_{i}"] = padded[:frames].astype(np.float32)

    out = extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="np")
    input_values = np.asarray(out["input_values"], np.float32)
    assert input_values.shape == (len(waves), MAX_LENGTH, NUM_MEL_BINS), input_values.shape

    lengths = np.array([w.size for w in waves], np.int32)
    batch = np.zeros((len(waves), lengths.max()), np.float32)
    for i, wave in enumerate(waves):
        batch[i, : wave.size] = wave

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        waveforms=batch,
        lengths=lengths,
        input_values=input_values,
        sample_rate=SAMPLE_RATE,
        num_mel_bins=NUM_MEL_BINS,
        max_length=MAX_LENGTH,
        mean=np.float64(mean),
        std=np.float64(std),
        mel_filters=extractor.mel_filters,
        transformers_version=transformers.__version__,
        **raw,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
    for name, value in raw.items():
        print(f"  {name}: {value.shape}, min {value.min():.3f}, max {value.max():.3f}")


if __name__ == "__main__":
    main()
