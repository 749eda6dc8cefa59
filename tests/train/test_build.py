"""Tests for mmtx/train/build.py: what ``build(config, mesh)`` returns.

In process (one device): the initial state is the abstract one made real; the jitted train
step equals a reference step (a plain, unsharded ``jax.jit(make_train_step)`` on a host copy
of the same initial state), values and, through plain SGD, gradients; the abstract state and
batch lower to the program the real ones run, which compiles once for two calls and donates
its input state; the eval step equals the module's own forward pass.
On 8 simulated devices (tests/train/build_worker.py in a subprocess, because the device
count must be set before JAX starts): the abstract state equals a real init's shapes, dtypes
and shardings.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from mmtx import config as config_lib
from mmtx.data.pipeline import create_dataset
from mmtx.train.build import build
from mmtx.train.optimizer import create_optimizer
from mmtx.train.step import make_train_step

REPO = pathlib.Path(__file__).resolve().parents[2]
B = 8


def tiny_config():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")  # no audio frontend: a quicker compile
    config.model.text.max_length = 16
    config.model.image.image_size = 16
    config.train.batch_size = B
    config.train.ema_decay = 0.5
    return config_lib.validate(config)


def max_difference(a, b):
    return max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max())
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def built():
    """A run (with plain SGD at rate 1: the update is minus the gradient, so equal params
    after a step mean equal gradients), a batch, its initial state and a host copy of it."""
    config = tiny_config()
    run = build(config, tx=optax.sgd(1.0))
    data = create_dataset(config, "train", run.tokenizer, batch_size=B, train=True)
    host_batch = next(iter(data))
    state = run.init_state()
    return run, host_batch, state, jax.device_get(state)


def test_parts_are_the_configs(built):
    run = built[0]
    embedding = run.abstract_state.params["text"]["token_embed"]["embedding"]["embedding"]
    assert embedding.shape == (run.tokenizer.vocab_size, run.config.model.text.width)
    assert dict(run.mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert run.data_sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert run.abstract_state.ema_params is not None
    # Without a tx, the config's optimizer: the same state tree as create_optimizer's.
    default = build(run.config)
    tx = create_optimizer(run.config.train)
    expected = jax.eval_shape(tx.init, default.abstract_state.params)
    assert jax.tree.structure(default.abstract_state.opt_state) == jax.tree.structure(expected)


def test_init_state_matches_abstract_state(built):
    run, _, state, _ = built
    assert jax.tree.structure(state) == jax.tree.structure(run.abstract_state)
    for real, abstract in zip(
        jax.tree.leaves(state), jax.tree.leaves(run.abstract_state), strict=True
    ):
        assert (real.shape, real.dtype) == (abstract.shape, abstract.dtype)
    assert run.num_params == sum(x.size for x in jax.tree.leaves(state.params))
    # EMA starts at the params; the rng is the second half of PRNGKey(seed)'s split.
    assert max_difference(state.ema_params, state.params) == 0.0
    expected_rng = jax.random.split(jax.random.PRNGKey(run.config.train.seed))[1]
    np.testing.assert_array_equal(state.rng, expected_rng)
    assert int(state.step) == 0
    other = run.init_state(jax.random.PRNGKey(run.config.train.seed + 1))
    assert max_difference(other.params, state.params) > 0


def test_eval_step_outputs(built):
    run, host_batch, state, host_state = built
    outputs = run.eval_step(state.params, run.to_global(host_batch))
    expected = jax.jit(lambda p, b: run.module.apply({"params": p}, b, train=False))(
        host_state.params, host_batch
    )
    for name in ("text", "image", "fused"):
        assert outputs[name].shape == expected[name].shape
        assert outputs[name].shape[0] == B
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-5, atol=1e-6)


def test_train_step_compiled_from_shapes_equals_reference(built):
    run, host_batch, state, initial = built
    state = jax.tree.map(lambda x: x.copy(), state)  # the step donates it
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host_batch)
    batch = run.to_global(host_batch)
    assert batch["text"].sharding.is_equivalent_to(run.data_sharding, 2)
    # As the loop does: compiled once from the abstract state and batch, then run on the real
    # ones (a compiled step accepts only the shapes, dtypes and shardings it was built for).
    compiled = run.train_step.lower(run.abstract_state, abstract_batch).compile()
    first = state
    state, metrics = compiled(state, batch)
    assert first.step.is_deleted()  # donated
    state, metrics_2 = compiled(state, batch)

    reference_step = jax.jit(make_train_step(run.module, run.tx, run.config))
    expected, expected_metrics = reference_step(initial, host_batch)
    expected, expected_metrics_2 = reference_step(expected, host_batch)
    assert int(state.step) == 2
    for got, want in ((metrics, expected_metrics), (metrics_2, expected_metrics_2)):
        assert float(got["loss"]) == pytest.approx(float(want["loss"]), rel=1e-6)
        assert float(got["grad_norm"]) == pytest.approx(float(want["grad_norm"]), rel=1e-5)
    # SGD(1): params after two steps are the initial ones minus both steps' gradients.
    assert max_difference(state.params, expected.params) < 1e-5
    assert max_difference(state.ema_params, expected.ema_params) < 1e-5
    assert max_difference(state.params, initial.params) > 1e-3


@pytest.fixture(scope="module")
def eight_device_results():
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "train" / "build_worker.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_abstract_state_matches_real_init_on_eight_devices(eight_device_results):
    lora = eight_device_results["lora"]
    assert lora["problems"] == []  # shapes, dtypes and shardings, leaf by leaf
    assert lora["num_params"] == lora["real_num_params"]
    assert lora["sharded_fraction"] > 0.5  # fsdp x tensor shard the base params
    assert lora["batch_sharding"] == "P(('data', 'fsdp'),)"


def test_indivisible_batch_is_refused_before_tracing(eight_device_results):
    message = eight_device_results["indivisible_error"]
    assert message is not None and "batch_size=10" in message
