"""Tests for mmtx/checkpoints/importer.py: bad checkpoints fail with names and write nothing;
an imported workdir loads with Model.from_checkpoint and equals the imported model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from synthetic_checkpoints import open_clip_state_dict

from mmtx import Model
from mmtx.checkpoints import (
    FAMILIES,
    CheckpointImportError,
    import_checkpoint,
    write_workdir,
)


def save(tmp_path, state, name="model.safetensors"):
    path = str(tmp_path / name)
    safetensors.numpy.save_file(state, path)
    return path


def test_the_family_names_scripts_rely_on():
    assert sorted(FAMILIES) == sorted(
        ["open_clip", "hf_clip", "hf_siglip", "big_vision_siglip", "hf_ast"]
    )


def test_config_is_read_from_the_tensor_shapes(tmp_path):
    state = open_clip_state_dict(width=128, layers=2, vocab=300, context=12, patch=8, grid=3)
    imported = import_checkpoint("open_clip", save(tmp_path, state))
    text, image = imported.config.model.text, imported.config.model.image
    assert (text.width, text.depth, text.num_heads, text.mlp_dim) == (128, 2, 2, 512)
    assert (text.vocab_size, text.max_length, text.pooling, text.causal) == (300, 12, "eot", True)
    assert (image.image_size, image.patch_size, image.depth, image.num_heads) == (24, 8, 2, 2)
    assert image.activation == text.activation == "quick_gelu"
    assert imported.config.model.embed_dim == 32
    assert imported.config.fusion.type == "none"
    assert imported.params["image"]["tower"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"].shape == (
        2,
        128,
        512,
    )
    np.testing.assert_array_equal(imported.params["text_head"]["kernel"], state["text_projection"])


def test_unknown_family(tmp_path):
    with pytest.raises(CheckpointImportError, match=r"unknown family 'clip'.*open_clip"):
        import_checkpoint("clip", save(tmp_path, open_clip_state_dict()))


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    state = open_clip_state_dict()
    del state["visual.ln_post.weight"], state["transformer.resblocks.0.mlp.c_fc.bias"]
    state["visual.extra_token"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointImportError) as error:
        import_checkpoint("open_clip", save(tmp_path, state))
    message = str(error.value)
    assert "missing 2: " in message
    assert "transformer.resblocks.0.mlp.c_fc.bias" in message and "visual.ln_post.weight" in message
    assert "unexpected 1: visual.extra_token" in message


def test_a_checkpoint_of_another_family_fails_with_its_names(tmp_path):
    with pytest.raises(CheckpointImportError, match=r"missing 1: text_model\.embeddings"):
        import_checkpoint("hf_clip", save(tmp_path, open_clip_state_dict()), hf_config={})


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    state = open_clip_state_dict(width=64)
    state["visual.transformer.resblocks.0.mlp.c_proj.bias"] = np.zeros(65, np.float32)
    with pytest.raises(
        CheckpointImportError, match=r"has shape \(1, 65\), the model needs \(1, 64\)"
    ):
        import_checkpoint("open_clip", save(tmp_path, state))


def test_bfloat16_checkpoints_are_widened_exactly(tmp_path):
    state = open_clip_state_dict()
    as_bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in state.items()}
    path = str(tmp_path / "bf16.safetensors")
    safetensors.numpy.save_file(as_bf16, path)
    imported = import_checkpoint("open_clip", path)
    np.testing.assert_array_equal(
        imported.params["text"]["posemb"]["embedding"],
        as_bf16["positional_embedding"].astype(np.float32),
    )


def test_a_torch_pickle_is_refused_with_the_conversion_command(tmp_path):
    path = tmp_path / "open_clip_model.bin"
    path.write_bytes(b"\x80\x02not really")
    with pytest.raises(CheckpointImportError, match=r"torch pickle.*safetensors.*save_file") as e:
        import_checkpoint("open_clip", str(path))
    assert "\n" not in str(e.value)  # one line, the command included


def test_workdir_round_trip_equals_the_imported_model(tmp_path):
    imported = import_checkpoint("open_clip", save(tmp_path, open_clip_state_dict()))
    workdir = write_workdir(imported, tmp_path / "clip")
    assert sorted(os.listdir(workdir)) == [
        "checkpoints",
        "config.json",
        "import.json",
        "mmtx-workdir.json",
    ]
    with open(os.path.join(workdir, "import.json")) as f:
        assert json.load(f)["family"] == "open_clip"
    loaded = Model.from_checkpoint(workdir)
    assert loaded.step == 0
    ids = np.array([[1, 7, 9, 299, 0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    batch = {
        "text": ids,
        "text_mask": ids != 0,
        "image": np.random.default_rng(0).random((1, 32, 32, 3), np.float32),
    }
    expected, got = imported.model().run(batch), loaded.run(batch)
    for key in ("text", "image"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_nothing_is_written_when_the_import_fails_or_the_workdir_is_taken(tmp_path):
    state = open_clip_state_dict()
    del state["ln_final.bias"]
    with pytest.raises(CheckpointImportError):
        import_checkpoint("open_clip", save(tmp_path, state))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    imported = import_checkpoint("open_clip", save(tmp_path, open_clip_state_dict()))
    with pytest.raises(FileExistsError, match="not empty"):
        write_workdir(imported, taken)
    assert os.listdir(taken) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "taken"]


def test_training_starts_from_an_imported_workdir(tmp_path):
    """An imported workdir holds no data position: training resumes from its step 0 with the
    data pipeline at its start, from the imported params."""
    from mmtx import config as config_lib
    from mmtx.train.checkpoint import Checkpointer
    from mmtx.train.loop import train_and_evaluate

    imported = import_checkpoint("open_clip", save(tmp_path, open_clip_state_dict()))
    workdir = write_workdir(imported, tmp_path / "clip")
    with open(os.path.join(workdir, "config.json")) as f:
        config = config_lib.merge_overrides(config_lib.default_config(), json.load(f))
    config.train.steps = 1
    config.train.warmup_steps = 0  # a first step with a nonzero learning rate
    config.train.batch_size = config.eval.batch_size = 4
    config.data.eval_size = 4
    summary = train_and_evaluate(config_lib.validate(config), workdir)
    assert summary["step"] == 1
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        assert checkpointer.all_steps() == [0, 1]
        assert not checkpointer.has_data_position(0) and checkpointer.has_data_position(1)
        trained, _ = checkpointer.restore_arrays(1)
    finally:
        checkpointer.close()
    start = np.asarray(imported.params["image"]["tower"]["cls"])
    moved = np.abs(np.asarray(trained["params"]["image"]["tower"]["cls"]) - start).max()
    assert 0 < moved < 0.1  # one small step away from the imported weights
    # CLIP's logit_scale sits at the cap; the step clamps it there, as open_clip does.
    assert float(trained["params"]["logit_scale"]) <= np.float32(np.log(100.0))


def test_the_command_line_fine_tunes_from_an_import_in_another_workdir(tmp_path):
    """``--config=<import>/config.json`` from another directory, with a new ``--workdir``:
    the tokenizer named in it (``tokenizer/<file>``, relative) resolves against the config
    file's own directory, and the run starts from the imported weights (init_from)."""
    hub = os.path.join(os.path.dirname(__file__), "fixtures", "hub", "hf_siglip")
    workdir = write_workdir(import_checkpoint(None, hub), tmp_path / "siglip")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    command = [
        sys.executable, "-m", "mmtx.main", f"--config={workdir}/config.json",
        f"--config.train.init_from={workdir}", "--workdir=run", "--config.train.steps=1",
        "--config.train.warmup_steps=0", "--config.train.batch_size=4",
        "--config.eval.batch_size=4", "--config.data.eval_size=4",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [line for line in result.stderr.splitlines() if line.startswith("E")]
    with open(elsewhere / "run" / "config.json") as f:
        assert json.load(f)["tokenizer"]["model_file"] == os.path.join(
            workdir, "tokenizer", "spiece.model"
        )
    assert json.loads((elsewhere / "run" / "summary.json").read_text())["step"] == 1
