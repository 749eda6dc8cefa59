"""Does the input pipeline keep the train step fed? Examples/s of each, on this machine.

Usage, from the repository root::

    .venv/bin/python benchmarks/input_pipeline.py [--config configs/base.py[:variant]]
        [--batch_size 64] [--num_workers 0,2] [--batches 30] [--steps 8]
        [--tfds_demo DIR] [--set data.x=y ...]

Three measurements, one after the other (not at once, so they don't share the cores):

* ``pipeline``: batches of the config's training split straight from
  :func:`mmtx.data.pipeline.create_dataset` (the loop's own pipeline: shuffle, shard,
  preprocess, batch, prefetch), once for every ``--num_workers`` value, after one warm-up
  batch (workers started). Examples/s = batch x batches / seconds.
* ``step``: the jitted train step as the loop runs it (``train_step`` of
  :func:`mmtx.train.build.build`) on one batch held in memory: the rate at which training
  consumes examples. Median of ``--steps`` steps after a compile and a warm-up step.
* ``fed``: the same step fed by the pipeline (``--num_workers`` = the config's value), i.e.
  what the loop sees; ``fed / step`` near 1 means input is not the bottleneck.

``ratio = pipeline / step`` for each worker count is the headroom; the target is >= 3.

``--tfds_demo DIR`` prepares (once, needs TensorFlow: ``pip install 'mmtx[tfds]'``) a TFDS
dataset of ``--tfds_demo_size`` COCO-like examples in ``DIR`` (640 x 480 JPEG photos-like
images, five captions each) and benchmarks ``configs/coco_captions.py`` at the variant given
by ``--config`` (e.g. ``configs/coco_captions.py:small``) over it: the real decode + resize
+ crop path of a TFDS image-text dataset. ``--set`` overrides config fields (dotted path =
Python literal).

Prints a table and ends with one JSON line holding every number.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx import launch
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.train.build import build

DEFAULT_CONFIG = "configs/base.py"
TARGET_RATIO = 3.0
DEMO_NAME = "coco_like_demo"


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", default=DEFAULT_CONFIG, help="configs/x.py[:variant] or a JSON file")
    add("--batch_size", type=int, default=64, help="global batch (train.batch_size)")
    add("--num_workers", type=_int_list, default=None, help="worker counts (default: config's)")
    add("--batches", type=int, default=30, help="timed pipeline batches per worker count")
    add("--steps", type=int, default=8, help="timed train steps (median); 0 = no step timing")
    add("--tfds_demo", default="", help="prepare/use a COCO-like TFDS dataset in this dir")
    add("--tfds_demo_size", type=int, default=512, help="examples in the demo dataset")
    add("--set", action="append", default=[], help="config override, dotted.path=value")
    return parser.parse_args(list(argv))


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The benchmarked config: ``--config`` with ``--batch_size`` and ``--set`` applied."""
    config = config_lib.load_config(args.config)
    config.train.batch_size = args.batch_size
    if args.tfds_demo:
        config.data.source = f"tfds:{DEMO_NAME}"
        config.data.data_dir = args.tfds_demo
        config.data.train_split = "train"
        config.data.eval_split = "train"
        config.data.features.update({"text": "captions/text", "image": "image"})
    for item in args.set:
        path, _, text = item.partition("=")
        *groups, field = path.split(".")
        node = config
        for group in groups:
            node = node[group]
        try:
            node[field] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            node[field] = text
    return config_lib.validate(config)


# --- the COCO-like demo dataset ------------------------------------------------------------


def prepare_demo(data_dir: str, size: int) -> None:
    """Prepares ``size`` COCO-like examples (640 x 480 JPEG, five captions) into ``data_dir``
    as array_record, unless already there. Needs TensorFlow (image encoding)."""
    import tensorflow_datasets as tfds

    class CocoLikeDemo(tfds.core.GeneratorBasedBuilder):
        """Smooth random colour fields with noise, JPEG-encoded like COCO's photos."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self) -> tfds.core.DatasetInfo:
            features = {
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
            return {"train": self._generate_examples()}

        def _generate_examples(self) -> Any:
            for index in range(size):
                rng = np.random.default_rng(index)
                height, width = (480, 640) if index % 3 else (640, 480)
                corners = rng.uniform(0, 255, (2, 2, 3))
                ys, xs = np.linspace(0, 1, height)[:, None, None], np.linspace(0, 1, width)
                xs = xs[None, :, None]
                top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
                bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
                image = top * (1 - ys) + bottom * ys + rng.normal(0, 12, (height, width, 3))
                captions = [f"photo {index}, caption {k} of five" for k in range(5)]
                yield (
                    index,
                    {
                        "image": np.clip(image, 0, 255).astype(np.uint8),
                        "captions": {"text": captions},
                    },
                )

    builder = CocoLikeDemo(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()


# --- measurements -------------------------------------------------------------------------


def pipeline_rate(
    config: ml_collections.ConfigDict, num_workers: int, batches: int
) -> dict[str, float]:
    """Examples/s of the training pipeline with ``num_workers`` worker processes."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.num_workers = num_workers
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    batch_size = config.train.batch_size
    iterator = iter(create_dataset(config, "train", tokenizer, batch_size=batch_size, train=True))
    started = time.perf_counter()
    next(iterator)  # starts the workers / threads
    first_batch_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in itertools.islice(iterator, batches):
        pass
    seconds = time.perf_counter() - started
    return {
        "num_workers": num_workers,
        "examples_per_sec": batch_size * batches / seconds,
        "first_batch_s": first_batch_s,
    }


def step_rates(config: ml_collections.ConfigDict, steps: int) -> dict[str, float]:
    """Examples/s of the jitted train step on a batch in memory (``step``) and fed by the
    pipeline (``fed``), each the median over ``steps`` steps."""
    built = build(config)
    state, train_step = built.init_state(), built.train_step
    batch_size = config.train.batch_size
    iterator = iter(
        create_dataset(config, "train", built.tokenizer, batch_size=batch_size, train=True)
    )

    def to_device(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return jax.device_put(batch, built.data_sharding)

    fixed = to_device(next(iterator))
    started = time.perf_counter()
    state, metrics = train_step(state, fixed)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started
    state, metrics = train_step(state, fixed)  # warm-up
    jax.block_until_ready(metrics)

    def median_step_s(next_batch: Any) -> float:
        nonlocal state
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            state, metrics = train_step(state, next_batch())
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    step_s = median_step_s(lambda: fixed)
    fed_s = median_step_s(lambda: to_device(next(iterator)))
    return {
        "step_examples_per_sec": batch_size / step_s,
        "step_ms": 1000 * step_s,
        "fed_examples_per_sec": batch_size / fed_s,
        "fed_ms": 1000 * fed_s,
        "compile_s": compile_s,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the measurements; returns the report dict (also the JSON line)."""
    if args.tfds_demo:
        prepare_demo(args.tfds_demo, args.tfds_demo_size)
    config = load_config(args)
    workers = args.num_workers if args.num_workers is not None else [config.data.num_workers]
    pipelines = [pipeline_rate(config, n, args.batches) for n in workers]
    report: dict[str, Any] = {
        "config": args.config,
        "source": config.data.source,
        "batch_size": config.train.batch_size,
        "num_threads": config.data.num_threads,
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "pipeline": pipelines,
    }
    if args.steps > 0:
        report.update(step_rates(config, args.steps))
        step_rate = report["step_examples_per_sec"]
        for entry in pipelines:
            entry["ratio_to_step"] = entry["examples_per_sec"] / step_rate
            entry["target_pass"] = entry["ratio_to_step"] >= TARGET_RATIO
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a markdown table (one row per worker count)."""
    lines = [
        f"config {report['config']} ({report['source']}), batch {report['batch_size']}, "
        f"{report['num_threads']} threads, {report['cpu_count']} CPUs, {report['backend']}",
        "",
        "| workers | pipeline ex/s | first batch s | train step ex/s | pipeline / step |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    step = report.get("step_examples_per_sec")
    for entry in report["pipeline"]:
        ratio = f"{entry['ratio_to_step']:.1f}x" if step else "—"
        lines.append(
            f"| {entry['num_workers']} | {entry['examples_per_sec']:,.0f} | "
            f"{entry['first_batch_s']:.1f} | {f'{step:,.1f}' if step else '—'} | {ratio} |"
        )
    if step:
        lines.append("")
        lines.append(
            f"train step {report['step_ms']:.0f} ms on a batch in memory, "
            f"{report['fed_ms']:.0f} ms fed by the pipeline (fed/in-memory rate "
            f"{report['fed_examples_per_sec'] / step:.2f}); target pipeline/step >= "
            f"{TARGET_RATIO:g}x"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    report = run(parse_args(argv))
    print(format_table(report))
    print(json.dumps(report))


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main(sys.argv[1:])
