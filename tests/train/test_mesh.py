"""Tests for mmtx/train/mesh.py: the same train step on 8 simulated devices and meshes.

The multi-device part runs tests/train/mesh_worker.py in a subprocess, because the device
count (XLA_FLAGS) must be set before JAX starts.
"""

import importlib.util
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


def abstract_mesh(data, fsdp, tensor):
    """A mesh of any size for placements only (no devices)."""
    return jax.sharding.AbstractMesh((data, fsdp, tensor), mesh_lib.MESH_AXES)


def reference_spec(names, shape, mesh):
    """The placement rules of param_partition_spec, written out per dimension."""
    rules = dict(mesh_lib.LOGICAL_AXIS_RULES)
    placed = []
    for name, size in zip(names, shape, strict=True):
        axes = rules.get(name) if name else None
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        kept = ()
        for axis in axes:  # the longest dividing prefix
            ways = 1
            for a in (*kept, axis):
                ways *= mesh.shape[a]
            if size % ways:
                break
            kept = (*kept, axis)
        placed.append(kept)
    if mesh.shape["fsdp"] > 1 and not any("fsdp" in axes for axes in placed):
        best = None
        for dim, (name, size) in enumerate(zip(names, shape, strict=True)):
            ways = 1
            for a in placed[dim]:
                ways *= mesh.shape[a]
            if name != "layers" and size % (ways * mesh.shape["fsdp"]) == 0:
                if best is None or size // ways >= best[0]:
                    best = (size // ways, dim)
        if best is not None:
            placed[best[1]] = (*placed[best[1]], "fsdp")
    return tuple(placed)


def as_tuples(spec, rank):
    entries = (*spec, *[None] * (rank - len(spec)))
    return tuple(() if e is None else (e,) if isinstance(e, str) else tuple(e) for e in entries)


@pytest.mark.parametrize(
    "names,shape,mesh,expected",
    [
        # A conv stem kernel with no logical axes: fsdp on its largest dimension.
        ((None, None, None, None), (3, 3, 512, 1024), (1, 256, 1), ((), (), (), ("fsdp",))),
        # An MLP bias: tensor from its rule, then fsdp beside it where both divide.
        (("layers", "mlp"), (24, 4096), (1, 16, 2), ((), ("tensor", "fsdp"))),
        # The layers axis is never split (nn.scan slices it one layer per step).
        (("layers", "heads", "kv"), (256, 16, 64), (1, 256, 1), ((), ("tensor",), ())),
        (("layers", "heads", "kv"), (24, 16, 64), (1, 16, 1), ((), ("tensor",), ("fsdp",))),
        # A kernel with embed: the rules alone; a 259-token vocabulary stays whole.
        (("vocab", "embed"), (259, 64), (1, 4, 2), ((), ("fsdp",))),
        (("embed", "mlp"), (64, 256), (2, 4, 2), (("fsdp",), ("tensor",))),
        # Nothing divides: replicated.
        ((None,), (9,), (1, 4, 1), ((),)),
    ],
)
def test_every_param_is_split_over_fsdp_where_a_dimension_divides(names, shape, mesh, expected):
    mesh = abstract_mesh(*mesh)
    spec = mesh_lib.param_partition_spec(names, shape, mesh)
    assert as_tuples(spec, len(shape)) == expected
    assert as_tuples(spec, len(shape)) == reference_spec(names, shape, mesh)


def padded_elements(shard, lanes=128):
    """The fewest elements ``shard`` takes in memory with any of its dimensions minor-most,
    that dimension rounded up to a multiple of ``lanes``."""
    import math

    best = None
    for minor, size in enumerate(shard):
        rest = math.prod(s for d, s in enumerate(shard) if d != minor)
        padded = rest * (-(-size // lanes) * lanes)
        best = padded if best is None else min(best, padded)
    return best


def test_lane_padding_is_the_least_padded_layout():
    import math

    for shard in [(4, 16, 64), (24, 1024, 1, 64), (24, 64, 16, 64), (3,), (24, 1024, 16, 2)]:
        expected = padded_elements(shard) / math.prod(shard)
        assert mesh_lib.lane_padding(shard, 128) == pytest.approx(expected)
    assert mesh_lib.lane_padding((4, 16, 64), 128) == 2.0
    assert mesh_lib.lane_padding((4, 16, 64), None) == 1.0


ATTENTION_IN = ("layers", "embed", "heads", "kv")
ATTENTION_OUT = ("layers", "heads", "kv", "embed")


@pytest.mark.parametrize(
    "names,shape,mesh,lanes,expected",
    [
        # large's q/k/v kernel over 16: embed would leave [24, 64, 16, 64] (2x in lanes);
        # heads ([24, 1024, 1, 64]) and the head dimension ([24, 1024, 16, 4]) pad nothing,
        # and the larger of equals is taken.
        (ATTENTION_IN, (24, 1024, 16, 64), (1, 16, 1), 128, ((), (), ("tensor",), ("fsdp",))),
        (ATTENTION_IN, (24, 1024, 16, 64), (1, 16, 1), None, ((), ("fsdp",), ("tensor",), ())),
        (ATTENTION_OUT, (24, 16, 64, 1024), (1, 16, 1), 128, ((), ("tensor",), ("fsdp",), ())),
        # Heads where the head dimension does not divide.
        (ATTENTION_IN, (24, 1024, 16, 8), (1, 16, 1), 128, ((), (), ("tensor", "fsdp"), ())),
        # Over 32 heads do not divide; the head dimension does ([24, 1024, 16, 2]).
        (ATTENTION_IN, (24, 1024, 16, 64), (1, 32, 1), 128, ((), (), ("tensor",), ("fsdp",))),
        # Over 256 no split avoids padding: the rules' choice stays.
        (ATTENTION_IN, (24, 1024, 16, 64), (1, 256, 1), 128, ((), ("fsdp",), ("tensor",), ())),
        # An MLP kernel pads with neither: the rules' choice stays.
        (("layers", "embed", "mlp"), (24, 1024, 4096), (1, 16, 2), 128,
         ((), ("fsdp",), ("tensor",))),
        # Over 8 embed keeps 128 lanes ([24, 128, 8, 64]): the rules' choice stays.
        (ATTENTION_IN, (24, 1024, 16, 64), (1, 8, 2), 128, ((), ("fsdp",), ("tensor",), ())),
    ],
)  # fmt: skip
def test_on_tpu_fsdp_splits_the_dimension_that_leaves_the_least_lane_padding(
    names, shape, mesh, lanes, expected
):
    import math

    mesh = abstract_mesh(*mesh)
    spec = mesh_lib.param_partition_spec(names, shape, mesh, lanes=lanes)
    placed = as_tuples(spec, len(shape))
    assert placed == expected
    shard = tuple(
        size // math.prod(mesh.shape[a] for a in axes)
        for size, axes in zip(shape, placed, strict=True)
    )
    ruled = reference_spec(names, shape, mesh)
    ruled_shard = tuple(
        size // math.prod(mesh.shape[a] for a in axes)
        for size, axes in zip(shape, ruled, strict=True)
    )
    # Never more padded than the rules' own placement, and as fully sharded.
    assert padded_elements(shard) <= padded_elements(ruled_shard)
    assert math.prod(shard) == math.prod(ruled_shard)


def test_logical_shardings_place_for_the_platform_they_are_given():
    import flax.linen as nn

    boxed = {
        "query": nn.Partitioned(
            jax.ShapeDtypeStruct((24, 1024, 16, 64), jax.numpy.float32), ATTENTION_IN
        )
    }
    mesh = abstract_mesh(1, 16, 1)
    on_tpu = mesh_lib.logical_shardings(mesh, boxed, platform="tpu")["query"]
    elsewhere = mesh_lib.logical_shardings(mesh, boxed)["query"]
    assert as_tuples(on_tpu.spec, 4) == ((), (), ("tensor",), ("fsdp",))
    assert as_tuples(elsewhere.spec, 4) == ((), ("fsdp",), ("tensor",), ())


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu")
# A compile-only client cannot load what the persistent cache (conftest's) holds: it compiles.
@pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry")
def test_the_tpu_compiler_lays_out_params_as_lane_padding_predicts():
    """The layouts XLA:TPU gives a train-step-like program's params (compiled for v5e:2x2
    from this host) take the bytes :func:`lane_padding` predicts, for shards that pad and
    shards that do not."""
    import math

    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from mmtx.compile import tiled_bytes, topology_devices

    devices = topology_devices("v5e:2x2")
    mesh = Mesh(np.asarray(devices).reshape(1, 4, 1), mesh_lib.MESH_AXES)
    shape = (4, 256, 16, 64)
    for spec in [
        PartitionSpec(None, "fsdp"),  # [4, 64, 16, 64]: 2x
        PartitionSpec(None, None, "fsdp"),  # [4, 256, 4, 64]: 1x
        PartitionSpec(None, None, None, "fsdp"),  # [4, 256, 16, 16]: 1x
    ]:
        sharding = NamedSharding(mesh, spec)

        def step(kernel, x):
            def layer(h, k):
                out = jax.numpy.einsum("bd,dhk->bhk", h, k).reshape(h.shape[0], -1)
                return out[:, : h.shape[1]], None

            h, _ = jax.lax.scan(layer, x, kernel)
            return h.sum(), kernel * 0.5

        compiled = (
            jax.jit(step, in_shardings=(sharding, None), out_shardings=(None, sharding))
            .lower(
                jax.ShapeDtypeStruct(shape, jax.numpy.float32),
                jax.ShapeDtypeStruct((8, 256), jax.numpy.float32),
            )
            .compile()
        )
        shard = sharding.shard_shape(shape)
        held = tiled_bytes(shard, 4, compiled.input_formats[0][0].layout)
        assert held / (4 * math.prod(shard)) == mesh_lib.lane_padding(shard, mesh_lib.TPU_LANES)


def test_large_on_256_chips_holds_near_its_ideal_share():
    """The 'large' config's params on a (1, 256, 1) mesh: a device's shards are within 10% of
    the params / 256 (the conv stem's kernels were replicated: 2.72x)."""
    import math

    import flax.linen as nn

    from mmtx.models import MultiModalTransformer
    from mmtx.train.build import dummy_batch

    config = config_lib.apply_variant(config_lib.default_config(), "large")
    config.model.image.stem = "conv"
    config = config_lib.validate(config)
    module = MultiModalTransformer.from_config(config, vocab_size=259, platform="tpu")
    boxed = jax.eval_shape(
        lambda r: module.init(r, dummy_batch(config, 1), train=False)["params"],
        jax.random.PRNGKey(0),
    )
    mesh = abstract_mesh(1, 256, 1)
    shardings = mesh_lib.logical_shardings(mesh, boxed)
    leaves = jax.tree.leaves(nn.meta.unbox(boxed))
    placed = jax.tree.leaves(shardings)
    held = sum(math.prod(s.shard_shape(x.shape)) for x, s in zip(leaves, placed, strict=True))
    total = sum(math.prod(x.shape) for x in leaves)
    assert held < 1.1 * total / 256
