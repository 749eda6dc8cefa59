"""The audio modality's clip lengths (mmtx.modalities.audio): ``audio_length`` int32 [B] in
raw-input batches of the kaldi_fbank frontend, its checks, and how it reaches the encoder."""

import re

import numpy as np
import pytest

from mmtx import config as config_lib
from mmtx.batch_checks import check_batch
from mmtx.data import preprocessing
from mmtx.modalities import get_modality

SAMPLES = 1600
SPEC = get_modality("audio")


def audio_config(frontend):
    config = config_lib.default_config()
    config.model.audio.update(
        num_samples=SAMPLES, num_mel_bins=16, patch_size=(4, 8), frontend=frontend
    )
    return config_lib.validate(config)


def clips():
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, n).astype(np.float32) for n in (600, SAMPLES, 2500)]


def test_kaldi_fbank_raw_inputs_carry_each_clip_s_real_samples_log_mel_ones_do_not():
    config = audio_config("kaldi_fbank")
    batch = SPEC.from_raw(clips(), config=config, tokenizer=None)
    assert batch["audio"].shape == (3, SAMPLES) and batch["audio"].dtype == np.float32
    assert batch["audio_length"].dtype == np.int32
    np.testing.assert_array_equal(batch["audio_length"], [600, SAMPLES, SAMPLES])
    # Lengths after resampling (8 kHz -> 16 kHz doubles them), capped at num_samples.
    short, _, long = clips()
    resampled = SPEC.from_raw(
        [short, long[:700], long], config=config, tokenizer=None, audio_sample_rate=8000
    )
    np.testing.assert_array_equal(resampled["audio_length"], [1200, 1400, SAMPLES])
    # One array of clips [B, S]: every row has the array's length.
    array = SPEC.from_raw(np.zeros((2, 900), np.float32), config=config, tokenizer=None)
    np.testing.assert_array_equal(array["audio_length"], [900, 900])
    # The log_mel frontend reads no lengths: its raw inputs are the padded waveforms alone.
    log_mel = SPEC.from_raw(clips(), config=audio_config("log_mel"), tokenizer=None)
    assert set(log_mel) == {"audio"}
    want = np.stack([preprocessing.crop_or_pad(clip, SAMPLES) for clip in clips()])
    np.testing.assert_array_equal(log_mel["audio"], want)
    np.testing.assert_array_equal(batch["audio"], want)


def test_to_audio_batch_is_the_waveforms_of_to_audio_batch_with_lengths():
    clip = clips()[0]
    waves, lengths = preprocessing.to_audio_batch_with_lengths(clip, 1000)
    np.testing.assert_array_equal(waves, preprocessing.to_audio_batch(clip, 1000))
    np.testing.assert_array_equal(lengths, [600])


def test_the_batch_check_takes_lengths_within_the_clip():
    audio = np.zeros((2, SAMPLES), np.float32)
    encoders = {"audio": {"num_samples": SAMPLES}}
    for lengths in ([0, SAMPLES], np.asarray([5, 7], np.int64)):
        assert check_batch({"audio": audio, "audio_length": np.asarray(lengths)}, encoders) == [
            "audio"
        ]
    bad = [
        (np.asarray([1, 2, 3]), ValueError, "audio_length must be [batch] = (2,)"),
        (np.asarray([1.0, 2.0]), TypeError, "audio_length must hold integer sample counts"),
        (np.asarray([4, -1]), ValueError, f"audio_length[1] = -1 is not in [0, {SAMPLES}]"),
        (np.asarray([SAMPLES + 1, 1]), ValueError, f"audio_length[0] = {SAMPLES + 1} is not"),
    ]
    for lengths, error, message in bad:
        with pytest.raises(error, match=re.escape(message)):
            check_batch({"audio": audio, "audio_length": lengths}, encoders)
    # With presence flags the lengths' rows are picked by them: a wrong size is named first.
    # (Example 1 has an image instead.)
    flagged = {
        "audio": audio,
        "present/audio": np.asarray([True, False]),
        "image": np.zeros((2, 4, 4, 3), np.float32),
    }
    encoders = {**encoders, "image": {}}
    with pytest.raises(ValueError, match=re.escape("audio_length must have the batch size 2")):
        check_batch({**flagged, "audio_length": np.asarray([1, 2, 3])}, encoders)
    # An absent example's filler length is not checked.
    check_batch({**flagged, "audio_length": np.asarray([1, -5])}, encoders)


def test_encode_passes_the_lengths_to_the_encoder_when_the_batch_has_them():
    calls = []

    def encoder(audio, lengths, *, train):
        calls.append((audio, lengths, train))
        return audio, {}

    audio = np.zeros((2, SAMPLES), np.float32)
    lengths = np.asarray([600, SAMPLES], np.int32)
    SPEC.encode(encoder, {"audio": audio, "audio_length": lengths}, train=True)
    SPEC.encode(encoder, {"audio": audio}, train=False)
    assert calls[0][1] is lengths and calls[0][2] is True
    assert calls[1][1] is None and calls[1][2] is False
