"""Tests for mmtx/import_checkpoint.py, the command a user runs: it writes a workdir that
Model.from_checkpoint loads with the family's tokenizer and image normalisation, and fails
with one error line and nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

import numpy as np
import safetensors.numpy
from synthetic_checkpoints import open_clip_state_dict

from mmtx import Model
from mmtx.checkpoints.clip import CLIP_MEAN, CLIP_STD
from mmtx.import_checkpoint import main

TOKENIZERS = os.path.join(os.path.dirname(__file__), "data", "fixtures", "tokenizers")


def clip_reference() -> dict:
    with open(os.path.join(TOKENIZERS, "reference.json")) as f:
        reference = json.load(f)
    return {"texts": reference["texts"], **reference["clip_bpe"]}


def command(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["mmtx.import_checkpoint", *args], stderr=stderr)
    return status, stdout.getvalue(), stderr.getvalue()


def test_import_with_the_clip_tokenizer_then_embed_raw_inputs(tmp_path):
    reference = clip_reference()
    weights = str(tmp_path / "clip.safetensors")
    safetensors.numpy.save_file(
        open_clip_state_dict(vocab=reference["vocab_size"], context=16, grid=4, patch=8), weights
    )
    tokenizer = os.path.join(TOKENIZERS, reference["file"])
    workdir = str(tmp_path / "clip")
    status, out, err = command(
        "--family=open_clip",
        f"--path={weights}",
        f"--workdir={workdir}",
        f"--tokenizer={tokenizer}",
    )
    assert status == 0, err
    assert "text: 1 x 64 wide, 1 heads, 16 tokens, vocab 2514, pooling eot, quick_gelu" in out
    # No open_clip_config.json beside the weights and no flags: each guess is said.
    assumed = [line for line in out.splitlines() if line.startswith("assumed ")]
    assert [line.split(":")[0] for line in assumed] == [
        "assumed text heads",
        "assumed image heads",
        "assumed activation",
    ]
    assert "tokenizer: clip_bpe" in out
    assert os.listdir(os.path.join(workdir, "tokenizer")) == [reference["file"]]

    model = Model.from_checkpoint(workdir)
    texts = reference["texts"][:3]
    batch = model.preprocess(texts)
    np.testing.assert_array_equal(batch["text"], np.asarray(reference["ids"][:3]))
    # Pixels in [0, 1] are normalised with CLIP's statistics inside the image tower, as
    # open_clip's preprocessing does (tests/checkpoints/test_families.py compares the
    # embeddings of [0, 1] images with open_clip's).
    assert tuple(model.config.model.image.mean) == CLIP_MEAN
    assert tuple(model.config.model.image.std) == CLIP_STD
    images = np.random.default_rng(0).random((3, 32, 32, 3), np.float32)
    out = model(text_inputs=texts, image_features=images)
    same = model.run({**batch, "image": images})
    np.testing.assert_array_equal(out["image"], same["image"])
    np.testing.assert_array_equal(out["text"], same["text"])


def test_errors_are_one_line_and_write_nothing(tmp_path):
    weights = str(tmp_path / "clip.safetensors")
    state = open_clip_state_dict()
    del state["visual.proj"]
    safetensors.numpy.save_file(state, weights)
    workdir = str(tmp_path / "out")
    status, out, err = command("--family=open_clip", f"--path={weights}", f"--workdir={workdir}")
    assert status == 1 and out == ""
    assert err.startswith("error: checkpoint") and "missing 1: visual.proj" in err
    assert not os.path.exists(workdir)

    status, _, err = command("--family=clip", f"--path={weights}", f"--workdir={workdir}")
    assert status == 1 and "unknown family 'clip'" in err

    status, _, err = command("--family=open_clip", f"--workdir={workdir}")
    assert status == 2 and err == "error: --path is required\n"
    status, _, err = command("--famly=open_clip")
    assert status == 2 and err.startswith("error: ")
    assert sorted(os.listdir(tmp_path)) == ["clip.safetensors"]


def test_num_heads_flag_replaces_the_assumption_and_a_bad_one_is_one_line(tmp_path):
    weights = str(tmp_path / "clip.safetensors")
    safetensors.numpy.save_file(open_clip_state_dict(), weights)
    status, out, err = command(
        "--family=open_clip",
        f"--path={weights}",
        f"--workdir={tmp_path / 'a'}",
        "--num_heads=text:2,image:4",
        "--activation=gelu",
    )
    assert status == 0, err
    assert [line.split(":")[0] for line in out.splitlines() if "assumed" in line] == [
        "assumed tokenizer"
    ]
    assert "differs" not in out
    assert ", 2 heads," in out and ", 4 heads," in out
    # The summary says where each value came from.
    assert re.search(r"^  model\.image\.num_heads = 4 +<- --num_heads$", out, re.M), out
    assert re.search(r"^  model\.text\.activation = gelu +<- --activation$", out, re.M), out
    assert re.search(
        r"^  model\.image\.interpolation = bicubic +<- default: open_clip's", out, re.M
    ), out
    status, _, err = command(
        "--family=open_clip", f"--path={weights}", f"--workdir={tmp_path / 'b'}", "--num_heads=8"
    )
    assert status == 1
    assert err == "error: --num_heads: '8' is not MODALITY:COUNT (e.g. text:8,image:12)\n"
    assert not os.path.exists(tmp_path / "b")


def test_a_cut_short_file_or_a_nan_weight_is_one_error_line(tmp_path):
    state = open_clip_state_dict()
    whole = tmp_path / "whole.safetensors"
    safetensors.numpy.save_file(state, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-1000])
    state["visual.proj"][0, :3] = np.nan
    nan = tmp_path / "nan.safetensors"
    safetensors.numpy.save_file(state, str(nan))
    for weights, says in [
        (cut, "ends at byte"),
        (nan, "tensor visual.proj has 3 non-finite values (NaN or inf)"),
    ]:
        workdir = tmp_path / "out"
        status, out, err = command(
            "--family=open_clip", f"--path={weights}", f"--workdir={workdir}"
        )
        assert status == 1 and out == ""
        assert err.startswith(f"error: {weights}: ") and err.count("\n") == 1, err
        assert says in err, err
        assert not workdir.exists()
