"""Run by tests/train/test_trainable.py in a subprocess with 8 simulated CPU devices.

On a (data 2, fsdp 2, tensor 2) mesh: loads a source workdir's params into the sharded
fresh state (config.train.init_from's load_params), trains two accumulated steps (2
microbatches) with the image tower frozen, and prints one JSON line of facts to check.
"""

import json
import sys
import tempfile

import jax
import numpy as np

from mmtx import config as config_lib
from mmtx.checkpoints import ImportedModel, write_workdir
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.models import MultiModalTransformer
from mmtx.train import mesh as mesh_lib
from mmtx.train import trainable as trainable_lib
from mmtx.train.init_from import load_params
from mmtx.train.loop import create_train_state, jit_train_step
from mmtx.train.optimizer import create_optimizer

BATCH = 16
FC1 = "text/tower/encoder/blocks/mlp/fc1/kernel"


def flat(tree):
    return dict(zip(trainable_lib.param_paths(tree), jax.tree.leaves(tree), strict=True))


def main():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    config.model.text.max_length = 8
    config.model.image.image_size = 16
    config.train.batch_size = BATCH
    config.train.microbatches = 2
    config.train.warmup_steps = 0
    config.train.frozen = ("^image/",)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config = config_lib.validate(config)
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
    tx = create_optimizer(config.train)
    mesh = mesh_lib.create_mesh(config.mesh)
    state, shardings = create_train_state(module, tx, config, mesh)

    rng = np.random.default_rng(0)
    source = jax.tree.map(
        lambda x: rng.normal(size=x.shape).astype(np.float32), jax.device_get(state.params)
    )
    with tempfile.TemporaryDirectory() as directory:
        workdir = write_workdir(ImportedModel(config, source, {"family": "test"}), directory)
        params, report = load_params(workdir, state.params, config)
    loaded = flat(params)
    facts = {
        "loaded_equal": all(
            np.array_equal(np.asarray(v), flat(source)[p]) for p, v in loaded.items()
        ),
        "loaded_shardings_kept": all(
            v.sharding == flat(state.params)[p].sharding for p, v in loaded.items()
        ),
        "copied": len(report.copied),
        "fc1_sharded": not loaded[FC1].sharding.is_fully_replicated,
    }
    state = state.replace(params=params)
    mu = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if trainable_lib.path_string(path).endswith(FC1)
    ]
    facts["moment_sharded_as_param"] = bool(mu) and all(
        m.sharding.spec == loaded[FC1].sharding.spec for m in mu
    )
    facts["image_moments"] = sum(
        1
        for path, _ in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if "image/" in trainable_lib.path_string(path)
    )
    before = jax.tree.map(np.asarray, flat(params))
    step = jit_train_step(module, tx, config, mesh, shardings)
    data = create_dataset(config, "train", tokenizer, batch_size=BATCH, train=True)
    batches = iter(data)
    for _ in range(2):
        state, metrics = step(state, jax.device_put(next(batches), mesh_lib.batch_sharding(mesh)))
    after = flat(jax.device_get(state.params))
    facts["finite"] = float(metrics["nonfinite"]) == 0.0
    facts["frozen_identical"] = all(
        after[p].tobytes() == before[p].tobytes() for p in after if p.startswith("image/")
    )
    facts["trainable_moved"] = sum(
        not np.array_equal(after[p], before[p]) for p in after if not p.startswith("image/")
    )
    facts["trainable"] = sum(1 for p in after if not p.startswith("image/"))
    print(json.dumps(facts))


if __name__ == "__main__":
    sys.exit(main())
