"""Does the input pipeline keep the train step fed? Examples/s of each, on this machine.

Usage, from the repository root::

    .venv/bin/python benchmarks/input_pipeline.py [--config configs/base.py[:variant]]
        [--batch_size 64] [--num_workers 0,2] [--batches 30] [--steps 8]
        [--tfds_demo DIR] [--set data.x=y ...]
    .venv/bin/python benchmarks/input_pipeline.py --own_data DIR [--own_data_size 3000]
        [--formats csv,wds,parquet] [--num_workers 0,1,2] [--config configs/base.py]
        [--rounds 2] [--own_data_step]

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

``--own_data DIR`` benchmarks your-own-data sources instead (``config.data.source`` =
``csv:``, ``wds:``, ``parquet:``): it prepares (once, into ``DIR``) ``--own_data_size``
synthetic image-caption pairs as ``--own_data_image_size`` px JPEGs (tests/own_data.py's
scenes) in three layouts, the same examples in each: open_clip's CSV (``DIR/csv/train.csv``
+ ``images/``), WebDataset tar shards (``DIR/wds``, by ``python -m mmtx.data.pack``) and
img2dataset-style Parquet files (``DIR/parquet``, columns ``jpg`` + ``caption``), each
``--shard_size`` examples a file. It then measures ``pipeline`` of ``--own_data_config``
(``configs/csv_image_text.py``: 64 px images, byte tokenizer; ``data.holdout`` 0) over each
format for each ``--num_workers`` (default 0,1,2): JPEG decode, resize + random crop + flip
to 64 px, tokenise, batch. Beside examples/s it reports examples per CPU-second of the whole
process tree (this process and grain's workers, from /proc) and the cores kept busy, as the
per-core figure: a random-access source (csv) also runs ``data.num_threads`` threads per
process. In the same run, when ``--peer_python`` (default the peer virtualenv of
``benchmarks/peers/setup_peers.sh``) exists, ``benchmarks/peers/open_clip_wds_pipeline.py``
measures open_clip's own WebDataset training pipeline (``get_wds_dataset``, its
``RandomResizedCrop`` transform at 64 px, CLIP's BPE tokenizer) over the same tar shards for
the same worker counts; otherwise it says so and goes on. ``step`` (and ``fed``) are then
measured for ``--config`` (``configs/base.py``) and, with ``--own_data_step``, also for the
own-data config over the CSV.

Prints a table and ends with one JSON line holding every number.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx import launch
from mmtx.data.bad_examples import SkipTally
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.train.build import build

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # process_cpu.py, beside this
from process_cpu import tree_cpu_seconds

DEFAULT_CONFIG = "configs/base.py"
TARGET_RATIO = 3.0
DEMO_NAME = "coco_like_demo"
OWN_DATA_CONFIG = "configs/csv_image_text.py"
OWN_DATA_FORMATS = ("csv", "wds", "parquet")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PYTHON = os.path.join(REPO, "benchmarks", "peers", ".venv-peers", "bin", "python")
PEER_SCRIPT = os.path.join(REPO, "benchmarks", "peers", "open_clip_wds_pipeline.py")


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
    add("--own_data", default="", help="prepare/use CSV, tar and Parquet data in this dir")
    add("--own_data_size", type=int, default=3000, help="image-caption pairs in --own_data")
    add("--own_data_image_size", type=int, default=256, help="JPEG side in --own_data, px")
    add("--shard_size", type=int, default=250, help="examples per tar / Parquet file")
    add("--formats", default=",".join(OWN_DATA_FORMATS), help="own-data formats measured")
    add("--own_data_config", default=OWN_DATA_CONFIG, help="the config read over --own_data")
    add("--own_data_step", action="store_true", help="also time the own-data config's step")
    add("--peer_python", default=PEER_PYTHON, help="python of the open_clip peer venv")
    add("--rounds", type=int, default=1, help="own-data: measure all R times, keep the best")
    args = parser.parse_args(list(argv))
    if args.own_data and args.tfds_demo:
        parser.error("--own_data and --tfds_demo are separate modes; give one")
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if unknown := sorted(set(args.formats) - set(OWN_DATA_FORMATS)):
        parser.error(f"--formats: unknown {unknown}; use some of {OWN_DATA_FORMATS}")
    return args


def load_config(
    args: argparse.Namespace, path: str | None = None, source: str = ""
) -> ml_collections.ConfigDict:
    """The benchmarked config: ``--config`` (or ``path``) with ``--batch_size``, ``source``
    (a ``data.source``, holdout 0) and ``--set`` applied."""
    config = config_lib.load_config(path or args.config)
    config.train.batch_size = args.batch_size
    if args.tfds_demo:
        config.data.source = f"tfds:{DEMO_NAME}"
        config.data.data_dir = args.tfds_demo
        config.data.train_split = "train"
        config.data.eval_split = "train"
        config.data.features.update({"text": "captions/text", "image": "image"})
    if source:
        config.data.source = source
        config.data.holdout = 0  # every format reads the same examples
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


# --- the own-data formats -----------------------------------------------------------------


def prepare_own_data(directory: str, size: int, image_size: int, shard_size: int) -> dict:
    """Writes (unless ``directory`` holds them already, for the same arguments) ``size``
    synthetic image-caption pairs, ``image_size`` px JPEGs, as ``csv/train.csv`` + images,
    ``wds/NNNNN.tar`` (``python -m mmtx.data.pack``) and ``parquet/NNNNN.parquet`` (columns
    ``jpg``, ``caption``; ``shard_size`` rows a file, as img2dataset writes them). Returns
    ``{"csv": path, "wds": dir, "parquet": dir, "wds_shards": brace pattern}``."""
    wanted = {"size": size, "image_size": image_size, "shard_size": shard_size}
    marker = os.path.join(directory, "own_data.json")
    paths = {
        "csv": os.path.join(directory, "csv", "train.csv"),
        "wds": os.path.join(directory, "wds"),
        "parquet": os.path.join(directory, "parquet"),
    }
    if os.path.exists(marker):
        with open(marker) as f:
            made = json.load(f)
        if made != wanted:
            raise SystemExit(
                f"{directory} holds data made with {made}, not {wanted}: remove it or pick "
                "another --own_data directory"
            )
    else:
        for path in (os.path.join(directory, "csv"), paths["wds"], paths["parquet"]):
            shutil.rmtree(path, ignore_errors=True)  # a run cut short; made again
        started = time.perf_counter()
        sys.path.insert(0, os.path.join(REPO, "tests"))
        import own_data  # tests/own_data.py: the synthetic scenes as user files

        own_data.write_csv_dataset(os.path.join(directory, "csv"), size, image_size=image_size)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mmtx.data.pack",
                f"--from=csv:{paths['csv']}",
                f"--to=wds:{paths['wds']}",
                f"--shard_size={shard_size}",
            ],
            check=True,
            cwd=REPO,
        )
        write_parquet(paths["csv"], paths["parquet"], shard_size)
        with open(marker, "w") as f:
            json.dump(wanted, f)
        print(
            f"prepared {size} pairs ({image_size} px JPEG) as csv, wds, parquet in {directory} "
            f"({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    tars = sorted(name for name in os.listdir(paths["wds"]) if name.endswith(".tar"))
    first, last = tars[0].removesuffix(".tar"), tars[-1].removesuffix(".tar")
    paths["wds_shards"] = os.path.join(paths["wds"], f"{{{first}..{last}}}.tar")
    return paths


def write_parquet(csv_path: str, directory: str, shard_size: int) -> None:
    """The CSV's images and captions as Parquet files of ``shard_size`` rows: ``jpg`` (the
    JPEG file's bytes, unchanged) and ``caption``, img2dataset's columns."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    base = os.path.dirname(csv_path)
    os.makedirs(directory, exist_ok=True)
    for number, start in enumerate(range(0, len(rows), shard_size)):
        chunk = rows[start : start + shard_size]
        images = []
        for row in chunk:
            with open(os.path.join(base, row["filepath"]), "rb") as f:
                images.append(f.read())
        table = pa.table(
            {
                "jpg": pa.array(images, pa.binary()),
                "caption": pa.array([row["title"] for row in chunk], pa.string()),
            }
        )
        pq.write_table(table, os.path.join(directory, f"{number:05d}.parquet"))


def run_peer(args: argparse.Namespace, shards: str, workers: list[int]) -> dict[str, Any]:
    """open_clip's WebDataset pipeline over ``shards`` (benchmarks/peers/
    open_clip_wds_pipeline.py, in the peer venv): its JSON report, or ``{"skipped": why}``."""
    if not os.path.exists(args.peer_python):
        why = (
            f"no peer venv at {args.peer_python} (run benchmarks/peers/setup_peers.sh); "
            "open_clip's pipeline not measured"
        )
        print(why, file=sys.stderr)
        return {"skipped": why}
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # torch as users run it
    command = [
        args.peer_python,
        PEER_SCRIPT,
        f"--shards={shards}",
        f"--batch_size={args.batch_size}",
        f"--num_workers={','.join(map(str, workers))}",
        f"--batches={args.batches}",
        "--image_size=64",
    ]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if done.returncode != 0:
        why = f"open_clip_wds_pipeline.py failed (exit {done.returncode}): see its stderr above"
        print(why, file=sys.stderr)
        return {"skipped": why}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["loadavg_1m"] = os.getloadavg()[0]
    return report


def best_round(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Of one measurement's rounds, the fastest (the one least disturbed by other work on the
    machine), with every round's examples/s under ``rounds_examples_per_sec``."""
    best = max(entries, key=lambda e: e["examples_per_sec"])
    return {**best, "rounds_examples_per_sec": [e["examples_per_sec"] for e in entries]}


def run_own_data(args: argparse.Namespace) -> dict[str, Any]:
    """``--own_data``: the pipeline over each format and worker count, open_clip's wds
    pipeline over the same shards, and the train step(s); returns the report."""
    paths = prepare_own_data(
        args.own_data, args.own_data_size, args.own_data_image_size, args.shard_size
    )
    workers = args.num_workers if args.num_workers is not None else [0, 1, 2]
    configs = {
        kind: load_config(args, args.own_data_config, f"{kind}:{paths[kind]}")
        for kind in args.formats
    }
    config = next(iter(configs.values()), None)
    mmtx_rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
    peer_rounds: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for kind, kind_config in configs.items():
            for n in workers:
                entry = {
                    "format": kind,
                    **pipeline_rate(kind_config, n, args.batches),
                    "loadavg_1m": os.getloadavg()[0],
                }
                print(
                    f"round {round_index}: mmtx {kind}, {n} workers: "
                    f"{entry['examples_per_sec']:,.0f} ex/s, "
                    f"{entry['examples_per_cpu_sec'] or 0:,.0f} ex/CPU-s "
                    f"({entry['cpu_cores_busy']:.2f} cores busy, load {entry['loadavg_1m']:.1f}),"
                    f" skipped {entry['skipped']}",
                    file=sys.stderr,
                    flush=True,
                )
                mmtx_rounds.setdefault((kind, n), []).append(entry)
        peer_rounds.append(run_peer(args, paths["wds_shards"], workers))
    pipelines = [best_round(entries) for entries in mmtx_rounds.values()]
    peer = next((r for r in peer_rounds if "skipped" in r), peer_rounds[0])
    if "skipped" not in peer:
        peer = {
            **peer,
            "pipeline": [
                best_round([r["pipeline"][i] for r in peer_rounds]) for i in range(len(workers))
            ],
        }
    report: dict[str, Any] = {
        "mode": "own_data",
        "own_data": {
            "dir": args.own_data,
            "size": args.own_data_size,
            "image_size": args.own_data_image_size,
            "shard_size": args.shard_size,
        },
        "own_data_config": args.own_data_config,
        "tokenizer": config.tokenizer.type if config is not None else None,
        "batch_size": args.batch_size,
        "num_threads": config.data.num_threads if config is not None else None,
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "rounds": args.rounds,
        "pipeline": pipelines,
        "open_clip": peer,
    }
    if args.steps > 0:
        report["step"] = {"config": args.config, **step_rates(load_config(args), args.steps)}
        if args.own_data_step:
            own = load_config(args, args.own_data_config, f"csv:{paths['csv']}")
            report["own_step"] = {
                "config": args.own_data_config,
                **step_rates(own, args.steps),
            }
    return report


def format_own_table(report: dict[str, Any]) -> str:
    """The ``--own_data`` report as markdown: ex/s per format x workers, mmtx and open_clip."""
    own = report["own_data"]
    peer = report["open_clip"]
    peer_rows = {e["num_workers"]: e for e in peer.get("pipeline", [])}
    lines = [
        f"{own['size']} pairs, {own['image_size']} px JPEG, {report['own_data_config']} "
        f"(64 px, tokenizer {report['tokenizer']}), batch {report['batch_size']}, "
        f"{report['num_threads']} threads, {report['cpu_count']} CPUs",
        "",
        f"best of {report['rounds']} round(s) per cell; all rounds' ex/s in the last column",
        "",
        "| pipeline | format | workers | ex/s | ex/CPU-s | cores busy | first batch s | rounds |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | :--- |",
    ]

    def row(name: str, kind: str, n: int, e: dict[str, Any]) -> str:
        rounds = " / ".join(f"{r:,.0f}" for r in e["rounds_examples_per_sec"])
        per_cpu = e["examples_per_cpu_sec"]
        return (
            f"| {name} | {kind} | {n} | {e['examples_per_sec']:,.0f} | "
            f"{f'{per_cpu:,.0f}' if per_cpu else '—'} | {e['cpu_cores_busy']:.2f} | "
            f"{e['first_batch_s']:.1f} | {rounds} |"
        )

    lines += [row("mmtx", e["format"], e["num_workers"], e) for e in report["pipeline"]]
    lines += [row("open_clip", "wds", n, e) for n, e in peer_rows.items()]
    if "skipped" in peer:
        lines += ["", f"open_clip: {peer['skipped']}"]
    elif 1 in peer_rows:
        ref = peer_rows[1]
        lines.append("")
        for e in report["pipeline"]:
            if e["num_workers"] == 1 and e["examples_per_cpu_sec"] and ref["examples_per_cpu_sec"]:
                lines.append(
                    f"mmtx {e['format']} / open_clip wds at 1 worker: "
                    f"{e['examples_per_sec'] / ref['examples_per_sec']:.2f}x ex/s, "
                    f"{e['examples_per_cpu_sec'] / ref['examples_per_cpu_sec']:.2f}x ex/CPU-s"
                )
    for key in ("step", "own_step"):
        if key in report:
            step = report[key]
            rate = step["step_examples_per_sec"]
            best = max(e["examples_per_sec"] for e in report["pipeline"])
            lines.append(
                f"train step of {step['config']}: {rate:,.1f} ex/s ({step['step_ms']:.0f} ms on "
                f"a batch in memory, {step['fed_ms']:.0f} ms fed by its pipeline); best "
                f"pipeline / step {best / rate:.1f}x"
            )
    return "\n".join(lines)


# --- measurements -------------------------------------------------------------------------


def pipeline_rate(
    config: ml_collections.ConfigDict, num_workers: int, batches: int
) -> dict[str, Any]:
    """Examples/s of the training pipeline with ``num_workers`` worker processes, as the loop
    iterates it (:class:`SkipTally`, which counts skipped bad examples), and examples per
    CPU-second of this process and its workers over the timed batches."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.num_workers = num_workers
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    batch_size = config.train.batch_size
    dataset = create_dataset(config, "train", tokenizer, batch_size=batch_size, train=True)
    iterator = SkipTally(iter(dataset))
    try:
        started = time.perf_counter()
        batch = next(iterator)  # starts the workers / threads
        first_batch_s = time.perf_counter() - started
        cpu_before, started = tree_cpu_seconds(), time.perf_counter()
        for _ in range(batches):
            batch = next(iterator)
        seconds = time.perf_counter() - started
        cpu_seconds = tree_cpu_seconds() - cpu_before
        skipped = iterator.counts
    finally:
        iterator.close()  # stops the workers before the next measurement
    return {
        "num_workers": num_workers,
        "examples_per_sec": batch_size * batches / seconds,
        "examples_per_cpu_sec": batch_size * batches / cpu_seconds if cpu_seconds else None,
        "cpu_cores_busy": cpu_seconds / seconds,
        "first_batch_s": first_batch_s,
        "skipped": skipped,
        "batch_shapes": {k: list(np.shape(v)) for k, v in batch.items()},
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
    args = parse_args(argv)
    if args.own_data:
        report = run_own_data(args)
        print(format_own_table(report))
    else:
        report = run(args)
        print(format_table(report))
    print(json.dumps(report))


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main(sys.argv[1:])
