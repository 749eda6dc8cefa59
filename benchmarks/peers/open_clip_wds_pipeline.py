"""Examples/s of open_clip's own WebDataset training pipeline, for each DataLoader worker count.

Run by the peer virtualenv (``benchmarks/peers/setup_peers.sh``: torch, torchvision,
open_clip_torch with ``open_clip_train``, webdataset, pandas); ``benchmarks/input_pipeline.py
--own_data`` runs it on the same shards as mmtx's pipeline, in the same run::

    benchmarks/peers/.venv-peers/bin/python benchmarks/peers/open_clip_wds_pipeline.py \\
        --shards '/tmp/own/wds/{00000..00011}.tar' [--batch_size 64] [--num_workers 0,1,2]
        [--batches 30] [--image_size 64] [--model ViT-B-32]

The pipeline is the one open_clip's training builds, not a copy: ``get_wds_dataset`` of
``open_clip_train/data.py`` (``SimpleShardList`` -> ``detshuffle2`` -> ``split_by_node`` ->
``split_by_worker`` -> ``tarfile_to_samples_nothrow`` -> ``shuffle(5000, initial=1000)`` ->
``select`` -> ``decode("pilrgb")`` -> ``rename(image="jpg;png;jpeg;webp", text="txt")`` ->
``map_dict(image=preprocess_train, text=tokenizer)`` -> ``to_tuple`` -> ``batched`` ->
``WebLoader(num_workers)``), called with the arguments ``open_clip_train.main`` gives it. The
image transform is the one ``create_model_and_transforms`` makes (``image_transform_v2`` of a
``PreprocessCfg`` at ``--image_size``, training augmentation: ``RandomResizedCrop(scale=(0.9,
1))`` bicubic, RGB, ``ToTensor``, CLIP's ``Normalize``); the tokenizer is ``--model``'s
(``get_tokenizer``: CLIP's BPE, 77 tokens).

Each worker count: one warm-up batch (workers started, shuffle buffer filled), then
``--batches`` timed batches. Reports examples/s (wall) and examples per CPU-second of the
whole process tree (this process and its DataLoader workers, from /proc), and ends with one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import open_clip
import torch
import webdataset
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip_train.data import get_wds_dataset

# process_cpu.py (standard library only), in benchmarks/, shared with input_pipeline.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from process_cpu import tree_cpu_seconds


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def loader_rate(
    shards: str,
    *,
    num_workers: int,
    batch_size: int,
    batches: int,
    preprocess: Any,
    tokenizer: Any,
) -> dict[str, float]:
    """Examples/s of ``get_wds_dataset``'s DataLoader with ``num_workers`` workers."""
    args = SimpleNamespace(  # the fields get_wds_dataset reads, as open_clip_train.main sets them
        train_data=shards,
        val_data=None,
        dataset_resampled=False,
        train_num_samples=batch_size * (batches + 8) * max(1, num_workers),
        train_data_upsampling_factors=None,
        val_num_samples=None,
        seed=0,
        batch_size=batch_size,
        world_size=1,
        workers=num_workers,
    )
    info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    iterator = iter(info.dataloader)
    started = time.perf_counter()
    images, texts = next(iterator)
    first_batch_s = time.perf_counter() - started
    cpu_before, started = tree_cpu_seconds(), time.perf_counter()
    count = 0
    for _ in range(batches):
        images, texts = next(iterator)
        count += len(images)
    seconds = time.perf_counter() - started
    cpu_seconds = tree_cpu_seconds() - cpu_before
    shapes = {"image": list(images.shape), "text": list(texts.shape)}
    del iterator  # stops the (persistent) workers
    return {
        "num_workers": num_workers,
        "examples_per_sec": count / seconds,
        "examples_per_cpu_sec": count / cpu_seconds if cpu_seconds > 0 else None,
        "cpu_cores_busy": cpu_seconds / seconds,
        "first_batch_s": first_batch_s,
        "batch_shapes": shapes,
    }


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--shards", required=True, help="brace pattern or '::'-separated list of .tar shards")
    add("--batch_size", type=int, default=64)
    add("--num_workers", type=_int_list, default=[0, 1, 2])
    add("--batches", type=int, default=30, help="timed batches per worker count")
    add("--image_size", type=int, default=64)
    add("--model", default="ViT-B-32", help="whose tokenizer (open_clip.get_tokenizer)")
    args = parser.parse_args(list(argv))

    preprocess = image_transform_v2(PreprocessCfg(size=args.image_size), is_train=True)
    tokenizer = open_clip.get_tokenizer(args.model)
    results = []
    for workers in args.num_workers:
        result = loader_rate(
            args.shards,
            num_workers=workers,
            batch_size=args.batch_size,
            batches=args.batches,
            preprocess=preprocess,
            tokenizer=tokenizer,
        )
        results.append(result)
        print(
            f"open_clip wds, {workers} workers: {result['examples_per_sec']:,.0f} ex/s, "
            f"{result['examples_per_cpu_sec'] or 0:,.0f} ex/CPU-s "
            f"({result['cpu_cores_busy']:.2f} cores busy), first batch "
            f"{result['first_batch_s']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    report = {
        "pipeline": results,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "tokenizer": f"{args.model} ({type(tokenizer).__name__})",
        "transform": repr(preprocess).replace("\n", " "),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "open_clip": open_clip.__version__,
        "webdataset": webdataset.__version__,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
