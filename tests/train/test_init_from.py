"""Tests for mmtx/train/init_from.py (``config.train.init_from``) and configs/lit.py: params
put by path into a new config's model (copied, new, dropped, resampled), shape mismatches
named, the source left untouched; a LiT run from an imported CLIP that resumes from its own
checkpoints."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from mmtx import config as config_lib
from mmtx.checkpoints import ImportedModel, write_workdir
from mmtx.import_checkpoint import main as import_main
from mmtx.models import MultiModalTransformer, dummy_batch
from mmtx.nn.posemb import resample_position_embedding
from mmtx.train import lora as lora_lib
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.init_from import InitFromError, load_params, resolve_source
from mmtx.train.loop import train_and_evaluate
from mmtx.train.trainable import param_paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(modalities=("text", "image"), **changes):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = modalities
    config.model.text.max_length = 8
    config.model.image.image_size = 16
    for dotted, value in changes.items():
        group, _, field = dotted.replace("__", ".").rpartition(".")
        node = config
        for part in group.split(".") if group else ():
            node = node[part]
        node[field] = value
    return config_lib.validate(config)


def random_params(config, seed=0, dtype=None):
    """Numpy params of ``config``'s model at a random point (shapes from eval_shape)."""
    module = MultiModalTransformer.from_config(config, vocab_size=259)
    shapes = nn.meta.unbox(
        jax.eval_shape(
            lambda r: module.init(r, dummy_batch(config, 1), train=False)["params"],
            jax.random.key(0),
        )
    )
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(dtype or s.dtype), shapes)


def write_source(path, config, params):
    return write_workdir(ImportedModel(config, params, {"family": "test"}), path)


def flat(params):
    return dict(zip(param_paths(params), jax.tree.leaves(params), strict=True))


def test_copies_by_path_keeps_new_params_and_lists_dropped_ones(tmp_path):
    source_config = tiny(fusion__type="concat", model__num_classes=10)
    source = flat(random_params(source_config, seed=1))
    workdir = write_source(tmp_path / "source", source_config, random_params(source_config, 1))
    config = tiny(
        ("text", "image", "audio"), fusion__type="none", model__num_classes=0,
        loss__classification_weight=0.0, param_dtype="bfloat16",
    )  # fmt: skip
    fresh = random_params(config, seed=2)
    params, report = load_params(workdir, fresh, config)
    got, before = flat(params), flat(fresh)
    assert set(report.copied) == {p for p in before if p.split("/")[0] in ("text", "image")} | {
        p for p in before if p in ("text_head/kernel", "image_head/bias", "logit_scale")
    } | {p for p in before if p in source and p not in report.new}
    assert report.new == [p for p in before if p not in source]
    assert any(p.startswith("audio/") for p in report.new) and "audio_head/kernel" in report.new
    assert report.dropped == [p for p in source if p not in before]
    assert "classifier/kernel" in report.dropped and "fusion/cls" in report.dropped
    for path, value in got.items():
        assert value.dtype == before[path].dtype  # bfloat16, as this config's params
        if path in report.copied:
            np.testing.assert_array_equal(value, source[path].astype(value.dtype), err_msg=path)
        else:
            np.testing.assert_array_equal(value, before[path], err_msg=path)
    lines = report.lines()
    assert lines[0] == f"init_from {workdir} (step 0):"
    assert lines[1].split()[:2] == ["copied", str(len(report.copied))]
    assert "... (" in lines[3]  # the new audio params: a few named, the rest counted


def test_learned_position_tables_are_resampled_to_the_new_grid(tmp_path):
    common = dict(
        model__image__class_token_posemb=True,
        model__audio__position_embedding="learned",
        model__audio__class_token_posemb=True,
        model__audio__pooling="cls_distill",
    )
    source_config = tiny(("image", "audio"), model__image__image_size=32, **common)
    source_params = random_params(source_config, seed=3)
    workdir = write_source(tmp_path / "source", source_config, source_params)
    config = tiny(("image", "audio"), model__audio__num_samples=8000, **common)
    params, report = load_params(workdir, random_params(config), config)
    image, audio = "image/posemb/embedding", "audio/posemb/embedding"
    assert sorted(report.resampled) == [audio, image]
    want_image = resample_position_embedding(
        flat(source_params)[image], (4, 4), (2, 2), num_prefix_tokens=1
    )
    # 16000 samples: 98 frames -> 6 x 4 patches of 16 x 16; 8000: 48 frames -> 3 x 4.
    want_audio = resample_position_embedding(
        flat(source_params)[audio], (6, 4), (3, 4), num_prefix_tokens=2
    )
    np.testing.assert_array_equal(flat(params)[image], want_image)
    np.testing.assert_array_equal(flat(params)[audio], want_audio)
    assert report.resampled[image] == ((17, 32), (5, 32))
    assert f"{image} [17, 32] -> [5, 32]" in "\n".join(report.lines())


def test_a_shape_mismatch_names_the_param_and_both_shapes(tmp_path):
    source_config = tiny(("text",), model__text__max_length=16)
    workdir = write_source(tmp_path / "source", source_config, random_params(source_config))
    config = tiny(("text",))
    with pytest.raises(InitFromError, match=r"text/posemb/embedding is \[16, 32\] in the source "
                       r"but \[8, 32\] in this config"):  # fmt: skip
        load_params(workdir, random_params(config), config)


def test_sources_a_step_directory_and_leaves_the_source_untouched(tmp_path):
    config = tiny(("text",))
    source_params = random_params(config, seed=4)
    workdir = write_source(tmp_path / "source", config, source_params)

    def snapshot():
        return sorted(
            (os.path.relpath(os.path.join(d, f), workdir), os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(workdir)
            for f in files
        )

    before = snapshot()
    step_dir = os.path.join(workdir, "checkpoints", "0")
    assert resolve_source(step_dir) == (workdir, os.path.join(workdir, "checkpoints"), 0)
    assert resolve_source(workdir)[2] is None
    params, report = load_params(step_dir, random_params(config), config)
    assert report.step == 0 and not report.new and not report.dropped
    for path, value in flat(params).items():
        np.testing.assert_array_equal(value, flat(source_params)[path])
    assert snapshot() == before
    with pytest.raises(InitFromError, match="not a workdir with checkpoints"):
        load_params(str(tmp_path), random_params(config), config)
    with pytest.raises(InitFromError, match="no checkpoint at step 7"):
        load_params(os.path.join(workdir, "checkpoints", "7"), random_params(config), config)


def test_a_lora_source_is_merged_into_a_config_without_adapters(tmp_path):
    config = tiny(("text",))
    lora_config = tiny(("text",), train__lora__rank=2, train__lora__alpha=4.0)
    base = random_params(config, seed=5)
    with_adapters = lora_lib.add_adapters(base, lora_config.train.lora, jax.random.key(1))
    # Non-zero B, so that merging changes the kernels.
    with_adapters = jax.tree_util.tree_map_with_path(
        lambda p, x: np.full(x.shape, 0.1, np.float32) if p[-1].key == "b" else np.asarray(x),
        with_adapters,
    )
    workdir = str(tmp_path / "lora")
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), config=config_lib.validate(lora_config).to_dict()
    )
    checkpointer.save(3, {"params": with_adapters}, force=True)
    checkpointer.wait()
    checkpointer.close()
    params, report = load_params(workdir, random_params(config), config)
    assert report.merged_lora == 6 * 1 and not report.dropped and not report.new
    merged = flat(lora_lib.merge_lora(with_adapters, 2.0))
    for path, value in flat(params).items():
        np.testing.assert_allclose(value, merged[path], rtol=1e-6, err_msg=path)
    query = "text/tower/encoder/blocks/attention/query/kernel"
    assert not np.allclose(flat(params)[query], flat(base)[query])


def import_clip(workdir):
    """The small random open_clip fixture, with mmtx's byte tokenizer (its 500-token
    vocabulary holds every byte id; the synthetic captions need no BPE)."""
    status = import_main([
        "mmtx.import_checkpoint", "--family=open_clip",
        f"--path={REPO}/tests/checkpoints/fixtures/open_clip/model.safetensors",
        f"--workdir={workdir}",
    ])  # fmt: skip
    assert status == 0


def test_lit_tunes_the_text_tower_of_an_imported_clip_then_resumes_its_own_run(tmp_path, capsys):
    clip = str(tmp_path / "clip")
    import_clip(clip)
    config = config_lib.load_config(f"{REPO}/configs/lit.py:{clip}")
    assert config.model.image.width == 64 and config.model.text.causal  # the import's sizes
    assert config.train.init_from == clip
    config.train.update(steps=2, batch_size=8, log_every=1, eval_every=100, checkpoint_every=100)
    config.eval.batch_size = 8
    config.data.eval_size = 8
    run = str(tmp_path / "lit")
    train_and_evaluate(config, run)
    out = capsys.readouterr().out
    assert f"init_from {clip} (step 0):" in out

    def params(workdir):
        state, _ = Checkpointer(
            os.path.join(workdir, "checkpoints"), read_only=True
        ).restore_arrays()
        return flat(state["params"])

    source, tuned = params(clip), params(run)
    assert f"  copied    {len(source):>5}\n" in out and "  new           0\n" in out, out
    assert "trainable: " in out and "the rest frozen" in out
    for path, value in tuned.items():
        if path.startswith(("image/", "image_head/")):
            assert value.tobytes() == source[path].tobytes(), path
    assert not np.array_equal(tuned["text_head/kernel"], source["text_head/kernel"])

    # A rerun resumes from its own checkpoint; init_from is not read again.
    config.train.steps = 3
    train_and_evaluate(config, run)
    out = capsys.readouterr().out
    assert "resumed from checkpoint at step 2" in out and "init_from" not in out
