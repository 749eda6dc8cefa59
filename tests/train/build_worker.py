"""Run by tests/train/test_build.py in a subprocess with 8 simulated CPU devices.

Builds a tiny run on a (2, 2, 2) mesh (with EMA and LoRA adapters), compares its abstract
state with its real init (shapes, dtypes, shardings, leaf by leaf; the values are compared
with a reference init in test_build.py, on one device), and prints one JSON line.
"""

import json
import sys
import time

import jax

from mmtx import config as config_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train.build import build

BATCH = 16


def tiny_config(lora_rank=0, batch_size=BATCH):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")  # no audio frontend: a quicker compile
    config.model.text.max_length = 16
    config.model.image.image_size = 16
    config.train.batch_size = batch_size
    config.train.ema_decay = 0.5
    config.train.lora.rank = lora_rank
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    return config_lib.validate(config)


def compare_state(run, state):
    """Mismatches between the run's abstract state / shardings and a real state."""
    problems = []
    abstract = jax.tree_util.tree_leaves_with_path(run.abstract_state)
    real = jax.tree_util.tree_leaves_with_path(state)
    shardings = jax.tree.leaves(run.state_shardings)
    if jax.tree.structure(run.abstract_state) != jax.tree.structure(state):
        problems.append("tree structure")
    for (path, a), (_, r), s in zip(abstract, real, shardings, strict=True):
        name = jax.tree_util.keystr(path)
        if a.shape != r.shape or a.dtype != r.dtype:
            problems.append(f"{name}: {a.shape} {a.dtype} vs {r.shape} {r.dtype}")
        if not r.sharding.is_equivalent_to(s, r.ndim):
            problems.append(f"{name}: sharding {r.sharding} vs {s}")
    return problems


def sharded_fraction(params):
    total = sharded = 0
    for leaf in jax.tree.leaves(params):
        total += leaf.size
        if leaf.addressable_shards[0].data.size < leaf.size:
            sharded += leaf.size
    return sharded / total


def check(lora_rank):
    """The config's AdamW: its moments must be sharded as their params (with LoRA: the
    moments of the adapters only, which are replicated)."""
    config = tiny_config(lora_rank)
    run = build(config, mesh_lib.create_mesh(config.mesh))
    state = run.init_state()
    return {
        "problems": compare_state(run, state),
        "num_params": run.num_params,
        "real_num_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "sharded_fraction": sharded_fraction(state.params),
        "batch_sharding": str(run.data_sharding.spec),
    }


def main():
    started = time.perf_counter()
    assert jax.device_count() == 8, jax.devices()
    results = {"lora": check(4)}
    try:
        build(tiny_config(batch_size=10))  # 10 does not split over data x fsdp = 4
        results["indivisible_error"] = None
    except ValueError as error:
        results["indivisible_error"] = str(error)
    results["seconds"] = time.perf_counter() - started
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
