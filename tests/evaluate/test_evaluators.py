"""Tests for mmtx/evaluate/evaluators.py and its use by mmtx/evaluate/split.py: the tasks the
eval data offers (synthetic class names, every TFDS caption) and the all-caption evaluation
of a real TFDS eval pipeline, against plain-loop references."""

import re
import zlib

import numpy as np
import pytest
import tfds_builders

from mmtx import config as config_lib
from mmtx.data.pipeline import create_dataset, create_source
from mmtx.data.synthetic import CLASS_NAMES, COLOURS, SHAPES, SyntheticSource
from mmtx.data.tokenizer import ByteTokenizer
from mmtx.evaluate.evaluators import EvalTasks, eval_tasks, evaluate_tasks
from mmtx.evaluate.split import evaluate, text_embedder

NUM_TEST = tfds_builders.SPLIT_SIZES["test"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tfds"))
    tfds_builders.prepare(tfds_builders.TinyImageText, directory)
    return directory


def tfds_config(data_dir, **evaluation):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    config.model.image.image_size = 32
    config.data.update(source="tfds:tiny_image_text", data_dir=data_dir, eval_split="test")
    config.data.features.update(text="captions/text", image="image", label="label")
    config.eval.update(evaluation)
    return config_lib.validate(config)


def test_synthetic_tasks_are_shape_x_colour_zero_shot():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    tasks = eval_tasks(config)
    assert tasks.classnames == CLASS_NAMES and len(CLASS_NAMES) == 64
    assert tasks.templates == tuple(config.eval.zero_shot_templates)
    assert tasks.captions == () and tasks.caption_examples is None  # one caption each
    for example in (SyntheticSource("eval", size=5)[i] for i in range(5)):
        name = CLASS_NAMES[int(example["label"])]
        assert name == f"{COLOURS[example['colour']]} {SHAPES[example['shape']]}"
    config.eval.zero_shot = False
    assert eval_tasks(config).classnames == ()
    config.model.modalities = ("image", "audio")  # no text tower: nothing to prompt
    config.eval.zero_shot = True
    assert eval_tasks(config) == EvalTasks()


def example_numbers(config):
    """The generator's example number at each split position (TFDS shuffles the order)."""
    source = create_source(config, "eval")
    return [int(str(source[i]["caption"][0], "utf-8").split()[-1]) for i in range(len(source))]


def test_tfds_tasks_read_every_caption(data_dir):
    tasks = eval_tasks(tfds_config(data_dir))
    numbers = example_numbers(tfds_config(data_dir))
    assert sorted(numbers) == list(range(NUM_TEST))
    expected = [(f"test example {i}", f"another caption {i}") for i in numbers]
    assert tasks.captions == tuple(c for pair in expected for c in pair)
    np.testing.assert_array_equal(tasks.caption_examples, np.repeat(np.arange(NUM_TEST), 2))
    assert tasks.classnames == tuple(str(i) for i in range(tfds_builders.NUM_LABELS))
    assert eval_tasks(tfds_config(data_dir, all_captions=False)).captions == ()
    named = eval_tasks(tfds_config(data_dir, classnames=("a", "b", "c", "d", "e")))
    assert named.classnames == ("a", "b", "c", "d", "e")


DIM = 2 * NUM_TEST + 8


def text_vector(caption):
    """Second captions point exactly at their example's image, first ones nowhere near any
    image (as prompts, a hash): only an evaluation with every caption finds most pairs."""
    vector = np.zeros(DIM, np.float32)
    second = re.fullmatch(r"another caption (\d+)", caption)
    if second:
        vector[int(second.group(1))] = 1.0
    else:
        vector[2 * NUM_TEST + zlib.crc32(caption.encode()) % 8] = 1.0
    return vector


def make_eval_step(numbers):
    """A stand-in for the jitted step: captions embedded by :func:`text_vector`, images as the
    one-hot of their example number (found from the batch's split positions)."""

    def eval_step(params, batch):
        out = fake_eval_step(params, {k: v for k, v in batch.items() if k != "image"})
        if "image" in batch:
            out["image"] = np.eye(DIM, dtype=np.float32)[np.asarray(numbers)[batch["index"]]]
        return out

    return eval_step


def fake_eval_step(params, batch):
    tokenizer = ByteTokenizer()
    rows = zip(batch["text"], batch["text_mask"], strict=True)
    texts = [tokenizer.decode(ids[mask]) for ids, mask in rows]
    return {"text": np.stack([text_vector(t) for t in texts])}


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_all_caption_recall(numbers, k):
    """Plain loops over images and captions in split order (``numbers``: the example number
    at each position)."""
    captions, owner = [], []
    for position, number in enumerate(numbers):
        captions += [f"test example {number}", f"another caption {number}"]
        owner += [position, position]
    texts = [text_vector(c) for c in captions]
    images = [np.eye(DIM)[number] for number in numbers]
    image_hits = 0
    for i, image in enumerate(images):
        scores = [cosine(image, t) for t in texts]
        order = sorted(range(len(texts)), key=lambda j: (-scores[j], j))
        image_hits += any(owner[j] == i for j in order[:k])
    text_hits = 0
    for text, i in zip(texts, owner, strict=True):
        scores = [cosine(text, image) for image in images]
        order = sorted(range(len(images)), key=lambda j: (-scores[j], j))
        text_hits += i in order[:k]
    return image_hits / len(images), text_hits / len(texts)


def test_tfds_eval_uses_every_caption(data_dir):
    config = tfds_config(data_dir)
    tokenizer = ByteTokenizer()
    batches = create_dataset(config, "eval", tokenizer, batch_size=4, train=False, with_index=True)
    tasks = eval_tasks(config)
    numbers = example_numbers(config)
    eval_step = make_eval_step(numbers)
    embed_text = text_embedder(
        eval_step, None, tokenizer, 64, local_batch_size=4, to_global=lambda b: b
    )
    metrics = evaluate(
        eval_step,
        None,
        batches,
        local_batch_size=4,
        to_global=lambda b: b,
        tasks=tasks,
        embed_text=embed_text,
    )
    assert metrics["num_examples"] == NUM_TEST and metrics["num_captions"] == 2 * NUM_TEST
    for k in (1, 5):
        image_to_text, text_to_image = reference_all_caption_recall(numbers, k)
        assert metrics[f"image_to_text_recall@{k}"] == image_to_text, k
        assert metrics[f"text_to_image_recall@{k}"] == text_to_image, k
    assert metrics["image_to_text_recall@1"] == 1.0  # the second captions
    # The second captions hit; the first ones tie on every image, and the tie goes to the
    # image at position 0: only its own first caption hits.
    assert metrics["text_to_image_recall@1"] == (NUM_TEST + 1) / (2 * NUM_TEST)
    # The first caption only (eval.all_captions off): only position 0's query hits.
    first_only = evaluate(
        eval_step,
        None,
        create_dataset(config, "eval", tokenizer, batch_size=4, train=False, with_index=True),
        local_batch_size=4,
        to_global=lambda b: b,
        tasks=eval_tasks(tfds_config(data_dir, all_captions=False)),
        embed_text=embed_text,
    )
    assert first_only["text_to_image_recall@1"] == 1 / NUM_TEST
    assert "num_captions" not in first_only
    # Zero-shot over the ClassLabel names ran too.
    assert {"image_zero_shot_top1", "image_zero_shot_top5"} <= set(metrics)


def test_text_embedder_keeps_order_across_chunks_and_padding():
    texts = [f"another caption {i}" for i in range(NUM_TEST)] + ["", "a prompt"]
    embed_text = text_embedder(
        fake_eval_step, None, ByteTokenizer(), 64, local_batch_size=4, to_global=lambda b: b
    )
    got = embed_text(texts)
    expected = np.stack([text_vector(t) for t in texts])
    np.testing.assert_array_equal(got, expected)


def test_evaluate_tasks_zero_shot_against_a_reference():
    rng = np.random.default_rng(0)
    classnames = ("red circle", "blue square", "green star")
    templates = ("a {}.", "a photo of a {}.")
    prompt_vectors = {t.format(c): rng.normal(size=4) for c in classnames for t in templates}
    images = rng.normal(size=(12, 4))
    labels = rng.integers(0, 3, 12)
    metrics = evaluate_tasks(
        EvalTasks(classnames=classnames, templates=templates),
        lambda texts: np.stack([prompt_vectors[t] for t in texts]),
        {"image": images, "label": labels},
    )
    assert set(metrics) == {"image_zero_shot_top1", "image_zero_shot_top5"}
    hits = 0
    for image, label in zip(images, labels, strict=True):
        scores = []
        for name in classnames:
            units = [prompt_vectors[t.format(name)] for t in templates]
            mean = sum(u / np.linalg.norm(u) for u in units) / len(units)
            scores.append(cosine(image, mean))
        hits += int(np.argmax(scores)) == label
    assert metrics["image_zero_shot_top1"] == pytest.approx(hits / len(labels))
    assert metrics["image_zero_shot_top5"] == 1.0  # 3 classes
    with pytest.raises(ValueError, match="one per label"):
        evaluate_tasks(
            EvalTasks(classnames=classnames[:2], templates=templates),
            lambda texts: np.stack([prompt_vectors[t] for t in texts]),
            {"image": images, "label": labels},
        )
