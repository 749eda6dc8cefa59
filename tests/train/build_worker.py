"""Run by tests/train/test_build.py in a subprocess with 8 simulated CPU devices.

Builds a tiny run on a (2, 2, 2) mesh (with EMA and LoRA adapters), compares
its abstract state with its real init (shapes, dtypes, shardings) and with a state built by
hand on one device (values), and prints one JSON line.
"""

import json
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmtx import config as config_lib
from mmtx.models import dummy_batch
from mmtx.train import lora as lora_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train.build import build
from mmtx.train.state import TrainState

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


def reference_state(run):
    """The state built by hand, on one device, as the docs of ``build`` describe it."""
    return jax.jit(lambda rng: _reference_init(run, rng))(jax.random.PRNGKey(run.config.train.seed))


def _reference_init(run, rng):
    config = run.config
    init_rng, train_rng = jax.random.split(rng)
    variables = run.module.init(init_rng, dummy_batch(config, 1), train=False)
    params = nn.meta.unbox(variables["params"])
    lora_rng = jax.random.fold_in(init_rng, lora_lib.RNG_STREAM)
    params = lora_lib.add_adapters(params, config.train.lora, lora_rng)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=run.tx.init(params),
        rng=train_rng,
        ema_params=params,
    )


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


def max_relative_difference(a, b):
    return max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max() / max(np.abs(np.asarray(y)).max(), 1e-3))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def check(lora_rank):
    """The config's AdamW: its moments must be sharded as their params (with LoRA: the
    moments of the adapters only, which are replicated)."""
    config = tiny_config(lora_rank)
    run = build(config, mesh_lib.create_mesh(config.mesh))
    state = run.init_state()
    return {
        "problems": compare_state(run, state),
        "init_difference": max_relative_difference(state, reference_state(run)),
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
