"""Run by tests/train/test_mesh.py in a subprocess with 8 simulated CPU devices.

Trains one step of a tiny model on each mesh and prints one JSON line comparing the loss and
the updated params with the one-device result.
"""

import json
import sys

import jax
import numpy as np
import optax

from mmtx import config as config_lib
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.models import MultiModalTransformer
from mmtx.train import mesh as mesh_lib
from mmtx.train.loop import create_train_state
from mmtx.train.step import make_train_step

BATCH = 16


def tiny_config(shape, microbatches=1):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.text.max_length = 16
    config.train.batch_size = BATCH
    config.train.microbatches = microbatches
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = shape
    return config_lib.validate(config)


def one_step(shape, devices, microbatches=1):
    config = tiny_config(shape, microbatches)
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
    tx = optax.sgd(0.1)  # the update is a multiple of the gradient: no Adam sign amplification
    mesh = mesh_lib.create_mesh(config.mesh, devices)
    mesh_lib.check_divisibility(config, mesh, 1)
    state, shardings = create_train_state(module, tx, config, mesh)
    data = create_dataset(config, "train", tokenizer, batch_size=BATCH, train=True)
    batch = jax.device_put(next(iter(data)), mesh_lib.batch_sharding(mesh))
    step = jax.jit(
        mesh_lib.with_sharding_rules(make_train_step(module, tx, config), mesh),
        in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
        out_shardings=(shardings, None),
    )
    text = step.lower(state, batch).as_text()
    new_state, metrics = step(state, batch)
    return new_state, metrics, text


def sharded_fraction(state):
    """Fraction of param scalars whose device holds less than the whole array."""
    total = sharded = 0
    for leaf in jax.tree.leaves(state.params):
        total += leaf.size
        if leaf.addressable_shards[0].data.size < leaf.size:
            sharded += leaf.size
    return sharded / total


def main():
    assert jax.device_count() == 8, jax.devices()
    reference, reference_metrics, _ = one_step((1, 1, 1), jax.devices()[:1])
    results = {}
    for shape, k in [((8, 1, 1), 1), ((2, 4, 1), 1), ((2, 2, 2), 1), ((2, 2, 2), 2)]:
        state, metrics, text = one_step(shape, jax.devices(), k)
        differences = [
            float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-3))
            for a, b in zip(
                jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True
            )
        ]
        results[f"{shape}x{k}"] = {
            "loss": float(metrics["loss"]),
            "reference_loss": float(reference_metrics["loss"]),
            "max_relative_param_difference": max(differences),
            "sharded_fraction": sharded_fraction(state),
            "activation_constraints": text.count("sharding_constraint"),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
