"""Tests for mmtx/data/pipeline.py: the grain pipeline over the synthetic source."""

import itertools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmtx import config as config_lib
from mmtx.data import synthetic
from mmtx.data.pipeline import create_dataset, create_source, make_preprocess
from mmtx.data.tokenizer import ByteTokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def config():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.data.train_size = 64
    config.data.eval_size = 10
    config.data.num_threads = 2
    return config


def take(dataset, n):
    return list(itertools.islice(iter(dataset), n))


def test_batches_have_model_inputs(config):
    (batch,) = take(create_dataset(config, "train", ByteTokenizer(), batch_size=4, train=True), 1)
    assert batch["text"].shape == (4, 64) and batch["text"].dtype == np.int32
    assert batch["text_mask"].dtype == np.bool_
    assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.float32
    assert batch["audio"].shape == (4, 16000) and batch["audio"].dtype == np.float32
    assert batch["label"].shape == (4,)
    for key in ("shape", "colour", "size", "position"):
        assert batch[key].shape == (4,)
    # The mask marks exactly the caption's bytes.
    assert np.array_equal(batch["text_mask"], batch["text"] != 0)


def test_preprocess_matches_source(config):
    tokenizer = ByteTokenizer()
    example = create_source(config, "train")[3]
    processed = make_preprocess(config, tokenizer)(example)
    ids = processed["text"][processed["text_mask"]]
    assert tokenizer.decode(ids) == example["caption"]
    np.testing.assert_array_equal(processed["image"], example["image"])
    assert int(processed["label"]) == int(example["label"])


def test_only_configured_modalities(config):
    config.model.modalities = ("text",)
    (batch,) = take(create_dataset(config, "train", ByteTokenizer(), batch_size=2, train=True), 1)
    assert "image" not in batch and "audio" not in batch and "text" in batch


def test_deterministic(config):
    first = take(create_dataset(config, "train", ByteTokenizer(), batch_size=4, train=True), 3)
    second = take(create_dataset(config, "train", ByteTokenizer(), batch_size=4, train=True), 3)
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_seed_changes_order(config):
    first = take(create_dataset(config, "train", ByteTokenizer(), batch_size=8, train=True), 1)
    config.data.seed = 1
    second = take(create_dataset(config, "train", ByteTokenizer(), batch_size=8, train=True), 1)
    assert not np.array_equal(first[0]["image"], second[0]["image"])


def test_train_is_shuffled_and_repeats(config):
    batches = take(create_dataset(config, "train", ByteTokenizer(), batch_size=16, train=True), 8)
    source = create_source(config, "train")
    in_order = np.stack([source[i]["label"] for i in range(16)])
    assert not np.array_equal(batches[0]["label"], in_order)
    # 8 batches of 16 = two epochs of 64 examples: each epoch holds every example once,
    # in a different order.
    everything = {np.asarray(source[i]["image"], np.float32).tobytes() for i in range(64)}
    epochs = [
        [row.tobytes() for b in epoch for row in b["image"]] for epoch in (batches[:4], batches[4:])
    ]
    for images in epochs:
        assert len(images) == 64 and set(images) == everything
    assert epochs[0] != epochs[1]


def test_process_shards_are_disjoint_and_cover(config):
    def epoch_images(index):
        dataset = create_dataset(
            config,
            "train",
            ByteTokenizer(),
            batch_size=8,
            train=True,
            process_index=index,
            process_count=2,
        )
        batches = take(dataset, 4)  # 32 examples = one epoch of this process's half
        return {row.tobytes() for batch in batches for row in batch["image"]}

    shard0, shard1 = epoch_images(0), epoch_images(1)
    assert len(shard0) == len(shard1) == 32
    assert not shard0 & shard1
    source = create_source(config, "train")
    everything = {np.asarray(source[i]["image"], np.float32).tobytes() for i in range(64)}
    assert shard0 | shard1 == everything


def test_eval_reads_once_in_order_with_partial_batch(config):
    batches = list(create_dataset(config, "eval", ByteTokenizer(), batch_size=4, train=False))
    assert [len(b["label"]) for b in batches] == [4, 4, 2]
    source = create_source(config, "eval")
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(10)])


def test_unknown_source_raises(config):
    config.data.source = "nope"
    with pytest.raises(ValueError, match=r"config\.data\.source"):
        create_source(config, "train")


# A program that never parses absl flags (a notebook, a script without absl.app) reads
# batches from worker processes, the same as without workers, and its own flags stay
# unparsed: the pipeline parses nothing.
_NO_ABSL_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    from absl import flags
    from mmtx import config as config_lib
    from mmtx.data.pipeline import create_dataset
    from mmtx.data.tokenizer import ByteTokenizer

    OWN = flags.DEFINE_integer("own_flag", 3, "the program's own flag")

    def first_batch(workers):
        config = config_lib.apply_variant(config_lib.default_config(), "tiny")
        config.data.num_workers = workers
        config = config_lib.validate(config)
        data = create_dataset(config, "train", ByteTokenizer(), batch_size=4, train=True)
        iterator = iter(data)
        try:
            return next(iterator)
        finally:
            getattr(iterator, "close", lambda: None)()

    if __name__ == "__main__":
        with_workers, without = first_batch(1), first_batch(0)
        same = sorted(with_workers) == sorted(without) and all(
            np.array_equal(with_workers[k], without[k]) for k in without
        )
        try:
            own = OWN.value
        except flags.UnparsedFlagAccessError:
            own = "unparsed"
        print(json.dumps({"same": bool(same), "parsed": flags.FLAGS.is_parsed(), "own": own}))
    """
)


def test_workers_outside_an_absl_program(tmp_path):
    script = tmp_path / "no_absl.py"
    script.write_text(_NO_ABSL_CHILD)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"same": True, "parsed": False, "own": "unparsed"}


def test_an_empty_value_becomes_an_absent_input_not_zeros_alone(config):
    config.model.modalities = ("text", "image", "audio")
    preprocess = make_preprocess(config, ByteTokenizer(), mark_presence=True)
    example = create_source(config, "eval")[0]
    full = preprocess(example)
    assert all(bool(full[f"present/{m}"]) for m in config.model.modalities)
    holes = preprocess(dict(example, caption=b"", audio=np.zeros((0,), np.int16)))
    assert not holes["present/text"] and not holes["present/audio"] and holes["present/image"]
    np.testing.assert_array_equal(holes["image"], full["image"])
    assert holes["audio"].shape == full["audio"].shape and not holes["audio"].any()
    assert holes["text"].shape == full["text"].shape
    # Without presence marking (the synthetic data, which never lacks an input) there are no
    # flags, and a missing value is an error naming it.
    plain = make_preprocess(config, ByteTokenizer())
    assert not any(k.startswith("present/") for k in plain(example))
    with pytest.raises(KeyError, match="'audio' for the audio modality"):
        plain({k: v for k, v in example.items() if k != "audio"})


def test_video_batches_carry_clips_and_motion(config):
    config.model.modalities = ("text", "video")
    config.model.video.num_frames, config.model.video.image_size = 4, 16
    data = create_dataset(config, "eval", ByteTokenizer(), batch_size=4, train=False)
    batch = next(iter(data))
    assert batch["video"].shape == (4, 4, 16, 16, 3) and batch["video"].dtype == np.float32
    assert batch["motion"].shape == (4,) and "image" not in batch
    # The clip shows the caption's motion: the caption names it.
    source = create_source(config, "eval")
    for index in range(4):
        phrases = synthetic.MOTION_SYNONYMS[batch["motion"][index]]
        assert any(phrase in source[index]["caption"] for phrase in phrases)


def test_file_examples_decode_jpegs_at_the_resize_size(config):
    import io

    from PIL import Image

    from mmtx.data.pipeline import make_file_preprocess
    from mmtx.data.preprocessing import decode_image, preprocess_image

    config.model.modalities = ("text", "image")
    config.model.image.update(image_size=16, patch_size=8, resize_size=80)
    config = config_lib.validate(config)
    rows, cols = np.mgrid[:320, :320]
    pixels = np.stack([rows % 37 * 7, cols % 23 * 11, (rows + cols) % 255], -1).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95)
    data = jpeg.getvalue()
    out = make_file_preprocess(config, ByteTokenizer())({"image": data, "caption": "a photo"})
    # Decoded at libjpeg's 1/4 scale (80 x 80), which still has the 80-pixel shorter side the
    # resize makes, not at the 1/8 scale (40 x 40) that image_size 16 alone would allow.
    expected = preprocess_image(decode_image(data, 80), 16, resize_size=80)
    np.testing.assert_array_equal(out["image"], expected)
    too_small = preprocess_image(decode_image(data, 16), 16, resize_size=80)
    assert not np.array_equal(out["image"], too_small)
    np.testing.assert_array_equal(preprocess_image(data, 16, resize_size=80), expected)
