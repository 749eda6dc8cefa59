"""Tests for mmtx/embed.py (named apart from tests/nn/test_embed.py, which tests mmtx/nn/embed.py):
files -> embeddings .npz, in-process on a tiny model's workdir."""

import io
import os
import re
import struct
import zlib

import flax.linen as nn
import numpy as np
import pytest
import scipy.io.wavfile
from helpers import random_params
from PIL import Image

from mmtx import Model, MultiModalTransformer
from mmtx import config as config_lib
from mmtx import embed as embed_lib
from mmtx.data.tokenizer import ByteTokenizer
from mmtx.models import dummy_batch
from mmtx.train.checkpoint import Checkpointer

SIZE, SAMPLES, RATE = 16, 1600, 16000


def tiny_config(modalities=("text", "image", "audio")):
    c = config_lib.apply_variant(config_lib.default_config(), "tiny")
    c.model.modalities = tuple(modalities)
    c.model.text.max_length = 8
    c.model.image.image_size, c.model.image.patch_size = SIZE, 8
    c.model.audio.num_samples, c.model.audio.num_mel_bins = SAMPLES, 16
    c.model.audio.patch_size = (4, 8)
    c.dtype = "float32"
    return config_lib.validate(c)


def save_workdir(path, modalities=("text", "image", "audio")):
    """A workdir as a run leaves it (checkpoint with its config), params random: no training
    and no init compile."""
    config = tiny_config(modalities)
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    params = nn.meta.unbox(random_params(module, dummy_batch(config, 1))["params"])
    checkpointer = Checkpointer(str(path / "checkpoints"), config=config.to_dict())
    checkpointer.save(5, {"params": params}, force=True)
    checkpointer.wait()
    checkpointer.close()
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return save_workdir(tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="module")
def model(workdir):
    return Model.from_checkpoint(workdir)


def encode(pixels, format="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def test_embed_images_equals_the_model_and_writes_names(workdir, model, tmp_path):
    """Images of different sizes and formats (RGBA PNG, grey PNG, JPEG) in sorted order,
    batches of 2 with the last padded; other files skipped."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    files = {
        "b.png": encode(rng.integers(0, 256, (20, 31, 4), dtype=np.uint8)),  # RGBA
        "a.JPG": encode(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8), "JPEG"),
        "c.png": encode(rng.integers(0, 256, (16, 16), dtype=np.uint8)),  # grey
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "README.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(files["c.png"])
    out = tmp_path / "images.npz"
    progress = io.StringIO()
    embeddings = embed_lib.embed(workdir, "image", folder, out, 2, progress=progress)

    saved = np.load(out)
    assert list(saved["names"]) == ["a.JPG", "b.png", "c.png"]
    assert str(saved["modality"]) == "image" and not saved["normalized"] and saved["step"] == 5
    assert saved["embeddings"].dtype == np.float32 and saved["embeddings"].shape == (3, 32)
    np.testing.assert_array_equal(saved["embeddings"], embeddings)
    reference = model(image_features=[files[name] for name in sorted(files)])["image"]
    np.testing.assert_allclose(embeddings, reference, rtol=1e-5, atol=1e-6)
    bar = progress.getvalue()
    assert bar.startswith("\rembedding image [") and "] 2/3" in bar and bar.endswith("\n")
    assert "] 3/3" in bar.split("\r")[-1]


def test_embed_texts_and_audio_with_normalize(workdir, model, tmp_path):
    """Captions: one per non-empty line. WAVs: int16 stereo at 8 kHz, float32 and int32 mono
    at the model's rate; resampled and mixed as Model does them."""
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n\n  two cats  \n   \nmusic\n", encoding="utf-8")
    out = tmp_path / "texts.npz"
    assert embed_lib.main(["embed", f"--workdir={workdir}", f"--texts={captions}",
                           f"--out={out}", "--normalize"], io.StringIO()) == 0  # fmt: skip
    saved = np.load(out)
    lines = ["a red circle", "two cats", "music"]
    assert list(saved["names"]) == lines and bool(saved["normalized"])
    reference = model(text_inputs=lines, normalize=True)["text"]
    np.testing.assert_allclose(saved["embeddings"], reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(saved["embeddings"], axis=1), 1.0, rtol=1e-5)

    rng = np.random.default_rng(1)
    folder = tmp_path / "wavs"
    folder.mkdir()
    stereo = rng.uniform(-0.5, 0.5, (1000, 2))
    clips = {
        "1_stereo.wav": (8000, (stereo * 32768).astype(np.int16)),
        "2_float.wav": (RATE, rng.uniform(-1, 1, 2000).astype(np.float32)),
        "3_int32.wav": (RATE, (rng.uniform(-0.5, 0.5, 900) * 2**31).astype(np.int32)),
    }
    for name, (rate, samples) in clips.items():
        scipy.io.wavfile.write(folder / name, rate, samples)
    embeddings = embed_lib.embed(workdir, "audio", folder, tmp_path / "audio.npz", 8)
    for row, (rate, samples) in zip(embeddings, clips.values(), strict=True):
        floats = samples / {np.dtype(np.int16): 32768, np.dtype(np.int32): 2**31}.get(
            samples.dtype, 1
        )
        expected = model(audio_inputs=floats.astype(np.float32), audio_sample_rate=rate)
        np.testing.assert_allclose(row, expected["audio"][0], rtol=1e-4, atol=1e-5)
    assert list(np.load(tmp_path / "audio.npz")["names"]) == sorted(clips)


def one_error_line(argv):
    stderr = io.StringIO()
    assert embed_lib.main(["embed", *argv], stderr) == 1
    # As a terminal shows it: a progress bar that was blanked with \r shows nothing.
    shown = [line.split("\r")[-1] for line in stderr.getvalue().split("\n")]
    lines = [line for line in shown if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_command_errors_are_one_line_and_exit_1(workdir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = f"--out={tmp_path / 'x.npz'}"
    assert "no image files" in one_error_line([f"--workdir={workdir}", f"--images={empty}", out])
    assert "no .wav files" in one_error_line([f"--workdir={workdir}", f"--audio={empty}", out])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    assert "no non-empty lines" in one_error_line([f"--workdir={workdir}", f"--texts={blank}", out])
    missing = tmp_path / "nope"
    message = one_error_line([f"--workdir={missing}", f"--texts={blank}", out])
    assert "no non-empty lines" in message  # inputs are checked first
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    assert re.search("--workdir: no such directory: .*nope", one_error_line(
        [f"--workdir={missing}", f"--texts={captions}", out]))  # fmt: skip
    assert "no checkpoint in" in one_error_line([f"--workdir={empty}", f"--texts={captions}", out])
    assert "exactly one of" in one_error_line(
        [f"--workdir={workdir}", f"--texts={captions}", f"--images={empty}", out]
    )
    assert "no such folder" in one_error_line(
        [f"--workdir={workdir}", f"--texts={captions}", f"--out={missing / 'x.npz'}"]
    )
    assert "batch_size" in one_error_line(
        [f"--workdir={workdir}", f"--texts={captions}", out, "--batch_size=zero"]
    )
    assert not (tmp_path / "x.npz").exists()


def test_model_without_the_modality_and_unreadable_files(model, tmp_path):
    text_only = save_workdir(tmp_path / "text_only", modalities=("text",))
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "fine.png").write_bytes(encode(np.zeros((8, 8, 3), np.uint8)))
    out = f"--out={tmp_path / 'x.npz'}"
    message = one_error_line([f"--workdir={text_only}", f"--images={folder}", out])
    assert message == "error: the model has no image encoder; its modalities are text"

    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(embed_lib.EmbedError, match=r"broken.png: .*cannot identify image file"):
        embed_lib.embed_files(model, embed_lib.find_inputs("image", folder), "image", 4)
    (folder / "bad.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(embed_lib.EmbedError, match=r"bad.wav: "):
        embed_lib.embed_files(model, embed_lib.find_inputs("audio", folder), "audio", 4)


def png_bomb(width, height):
    """A valid PNG header for a ``width`` x ``height`` 1-bit image with almost no data: PIL
    refuses to open it when it holds more than twice ``Image.MAX_IMAGE_PIXELS`` pixels."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_out_never_clobbers_an_input_a_workdir_file_or_a_directory(workdir, tmp_path):
    captions = tmp_path / "c.txt"
    captions.write_text("a red circle\n")
    base = [f"--workdir={workdir}", f"--texts={captions}"]
    assert "is one of this command's inputs" in one_error_line([*base, f"--out={captions}"])
    assert captions.read_text() == "a red circle\n"
    assert "inputs" in one_error_line([*base, f"--out={captions}", "--overwrite"])

    run = tmp_path / "run"  # another run's workdir, with the config.json it needs to resume
    run.mkdir()
    (run / "mmtx-workdir.json").write_text("{}")
    (run / "config.json").write_text("{}")
    message = one_error_line([*base, f"--out={run / 'config.json'}", "--overwrite"])
    assert "inside the mmtx workdir" in message and (run / "config.json").read_text() == "{}"
    message = one_error_line([*base, f"--out={workdir / 'embeddings.npz'}"])
    assert "is inside --workdir" in message  # the model's own workdir, marked or not

    assert "is a directory" in one_error_line([*base, f"--out={tmp_path}"])
    out = tmp_path / "e.npz"
    out.write_bytes(b"keep me")
    message = one_error_line([*base, f"--out={out}"])
    assert message == f"error: --out={out} exists; pass --overwrite to replace it"
    assert out.read_bytes() == b"keep me"
    assert embed_lib.main(["embed", *base, f"--out={out}", "--overwrite"], io.StringIO()) == 0
    assert np.load(out)["embeddings"].shape[0] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.txt", "e.npz", "run"]  # no temporary left


def test_a_decompression_bomb_is_one_line_naming_file_and_pixels(workdir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "fine.png").write_bytes(encode(np.zeros((8, 8, 3), np.uint8)))
    (folder / "bomb.png").write_bytes(png_bomb(20_000, 20_000))
    message = one_error_line(
        [f"--workdir={workdir}", f"--images={folder}", f"--out={tmp_path / 'x.npz'}"]
    )
    assert re.search(r"bomb\.png: .*400000000 pixels", message), message
    assert sorted(os.listdir(tmp_path)) == ["images"]


def test_a_wav_beyond_the_sample_range_is_one_line_naming_it(workdir, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    scipy.io.wavfile.write(folder / "fine.wav", RATE, np.zeros(SAMPLES, np.float32))
    scipy.io.wavfile.write(folder / "loud.wav", RATE, np.full(SAMPLES, 1e30, np.float32))
    message = one_error_line(
        [f"--workdir={workdir}", f"--audio={folder}", f"--out={tmp_path / 'x.npz'}"]
    )
    assert re.search(r"loud\.wav: audio\[0\] has values up to 1e\+30 in magnitude", message)
    assert not (tmp_path / "x.npz").exists()
