"""Tests for mmtx/train/mesh.py: the same train step on 8 simulated devices and meshes.

The multi-device part runs tests/train/mesh_worker.py in a subprocess, because the device
count (XLA_FLAGS) must be set before JAX starts.
"""

import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import ml_collections
import pytest

from mmtx import config as config_lib
from mmtx.train import mesh as mesh_lib

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def eight_device_results():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "train" / "mesh_worker.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["(8, 1, 1)x1", "(2, 4, 1)x1", "(2, 2, 2)x1", "(2, 2, 2)x2"])
def test_every_mesh_gives_the_one_device_step(eight_device_results, mesh):
    result = eight_device_results[mesh]
    assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-6)
    assert result["max_relative_param_difference"] < 1e-5
    # The activations' logical constraints are active (sharding_constraint ops in the HLO).
    assert result["activation_constraints"] > 0


def test_params_are_sharded_over_fsdp_and_tensor(eight_device_results):
    assert eight_device_results["(8, 1, 1)x1"]["sharded_fraction"] == 0.0  # pure data parallel
    assert eight_device_results["(2, 4, 1)x1"]["sharded_fraction"] > 0.9
    assert eight_device_results["(2, 2, 2)x1"]["sharded_fraction"] > 0.9


def fake_mesh(data, fsdp, tensor):
    """Only ``.shape`` is read: a mesh of any size without the devices."""
    return types.SimpleNamespace(shape={"data": data, "fsdp": fsdp, "tensor": tensor})


def tiny():
    return config_lib.apply_variant(config_lib.default_config(), "tiny")


@pytest.mark.parametrize(
    "change,mesh,named",
    [
        ({"train.batch_size": 12}, (8, 1, 1), "config.train.batch_size=12"),
        ({"train.microbatches": 4, "train.batch_size": 16}, (2, 4, 1), "train.microbatches=4"),
        ({"eval.batch_size": 6}, (1, 4, 1), "config.eval.batch_size=6"),
        ({"model.text.num_heads": 1}, (1, 1, 2), "config.model.text.num_heads=1"),
        ({"fusion.mlp_dim": 65}, (1, 1, 2), "config.fusion.mlp_dim=65"),
    ],
)
def test_check_divisibility_names_the_field(change, mesh, named):
    config = tiny()
    config.train.batch_size = 64
    config.eval.batch_size = 64
    for dotted, value in change.items():
        group, field = dotted.rsplit(".", 1)
        node = config
        for name in group.split("."):
            node = node[name]
        node[field] = value
    with pytest.raises(ValueError, match=named.replace(".", r"\.").replace("(", r"\(")):
        mesh_lib.check_divisibility(config, fake_mesh(*mesh), 1)


def test_mesh_larger_than_the_devices_is_a_clear_error():
    mesh_config = ml_collections.ConfigDict({"data": 4, "fsdp": 2, "tensor": 1})
    with pytest.raises(ValueError, match="needs 8 devices; there are 1"):
        mesh_lib.create_mesh(mesh_config, jax.devices()[:1])
