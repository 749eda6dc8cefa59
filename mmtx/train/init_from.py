"""Start a run from another run's params (``config.train.init_from``).

The source is a workdir (its newest intact checkpoint: a training run, or an import's step 0,
see :mod:`mmtx.checkpoints`) or one step directory ``DIR/checkpoints/STEP``. Its params are
read on the host (:meth:`~mmtx.train.checkpoint.Checkpointer.restore_arrays`, read-only) and
put by path into a freshly initialised model of the current config:

- a param at the same path with the same shape is copied (cast to the param's dtype);
- a param the source lacks (a new head, a new modality's tower, LoRA adapters) keeps its
  fresh init; a source param this config lacks is dropped; both are listed;
- a learned 2-D position table (``image/posemb/embedding``, ``audio/posemb/embedding``) made
  for another patch grid is resampled bilinearly to this config's
  (:func:`mmtx.nn.posemb.resample_position_embedding`, class-token rows kept);
- any other shape difference is an error naming the param and both shapes.

A source trained with LoRA adapters into a config without them has the adapters merged into
its kernels first. Only params are taken: the optimizer state starts fresh, and the step at 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx.nn.posemb import resample_position_embedding
from mmtx.train import lora as lora_lib
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.trainable import LORA_KEY, path_string

# Shown per list in the report; the rest are counted.
SHOWN_NAMES = 6


class InitFromError(ValueError):
    """``config.train.init_from`` names no checkpoint, or its params do not fit the model."""


@dataclasses.dataclass
class InitReport:
    """What :func:`load_params` did: the source, its step, and the param paths by fate."""

    source: str
    step: int
    copied: list[str] = dataclasses.field(default_factory=list)
    new: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)
    # path -> (source shape, new shape)
    resampled: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=dict
    )
    merged_lora: int = 0  # adapter pairs of the source merged into its kernels

    def lines(self) -> list[str]:
        """The short table the loop logs."""

        def names(paths: list[str]) -> str:
            shown = ", ".join(paths[:SHOWN_NAMES])
            more = len(paths) - SHOWN_NAMES
            return shown + (f", ... ({more} more)" if more > 0 else "")

        resampled = [f"{p} {list(a)} -> {list(b)}" for p, (a, b) in self.resampled.items()]
        # New LoRA adapters (expected when starting adapters on a plain model): one entry.
        adapters = [p for p in self.new if p.startswith(f"{LORA_KEY}/")]
        new = [p for p in self.new if p not in adapters]
        new_names = (
            [f"{len(adapters)} LoRA adapter params ({LORA_KEY}/...)"] if adapters else []
        ) + new
        lines = [f"init_from {self.source} (step {self.step}):"]
        rows = [
            ("copied", self.copied, ""),
            ("resampled", resampled, names(resampled)),
            ("new", self.new, names(new_names)),
            ("dropped", self.dropped, names(self.dropped)),
        ]
        for label, paths, shown in rows:
            lines.append(f"  {label:<9} {len(paths):>5}  {shown}".rstrip())
        if self.merged_lora:
            lines.append(
                f"  (the source's {self.merged_lora} LoRA adapters merged into its kernels)"
            )
        return lines


def resolve_source(source: str) -> tuple[str, str, int | None]:
    """``(workdir, checkpoint directory, step or None)`` of ``source``: a workdir, its
    ``checkpoints`` directory or a step directory ``DIR/checkpoints/STEP``."""
    path = os.path.abspath(os.path.expanduser(source))
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return path, os.path.join(path, "checkpoints"), None
    parent, name = os.path.split(path)
    if os.path.basename(path) == "checkpoints" and os.path.isdir(path):
        return parent, path, None
    if name.isdigit() and os.path.basename(parent) == "checkpoints" and os.path.isdir(parent):
        return os.path.dirname(parent), parent, int(name)
    raise InitFromError(
        f"config.train.init_from={source!r}: not a workdir with checkpoints nor a step "
        "directory DIR/checkpoints/STEP"
    )


def read_source(source: str) -> tuple[dict[str, Any], ml_collections.ConfigDict | None, int]:
    """The source's params (numpy, on the host), its config (None when it has none) and
    its step. The source is opened read-only: nothing in it is created, moved or deleted."""
    workdir, directory, step = resolve_source(source)
    checkpointer = Checkpointer(directory, read_only=True)
    try:
        try:
            state, step = checkpointer.restore_arrays(step)
        except FileNotFoundError as error:
            raise InitFromError(f"config.train.init_from={source!r}: {error}") from error
        record = checkpointer.read_record(step)
    finally:
        checkpointer.close()
    saved = (record or {}).get("config")
    if not saved and os.path.exists(os.path.join(workdir, "config.json")):
        with open(os.path.join(workdir, "config.json")) as f:
            saved = json.load(f)
    config = None
    if saved:
        config = config_lib.merge_overrides(config_lib.default_config(), saved)
    params = jax.tree.map(np.asarray, state["params"])
    return params, config, step


def _grid(config: ml_collections.ConfigDict, modality: str) -> tuple[tuple[int, int], int]:
    """(patch grid, class-token rows) of ``modality``'s learned position table."""
    tower = config.model[modality]
    if modality == "image":
        side = tower.image_size // tower.patch_size
        grid = (side, side)
    else:
        grid = config_lib.audio_patch_grid(tower)
    prefix = config_lib.CLASS_TOKENS.get(tower.pooling, 0) if tower.class_token_posemb else 0
    return grid, prefix


def _flat(tree: Any) -> dict[str, Any]:
    return {path_string(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _place(value: np.ndarray, like: Any) -> Any:
    """``value`` (host numpy) as ``like``'s kind: a jax array with ``like``'s sharding (every
    process passes the whole value, each device takes its shard), else numpy."""
    value = np.asarray(value).astype(like.dtype)
    if isinstance(like, jax.Array):
        return jax.make_array_from_callback(value.shape, like.sharding, lambda index: value[index])
    return value


def load_params(
    source: str,
    params: Any,
    config: ml_collections.ConfigDict,
) -> tuple[Any, InitReport]:
    """``params`` (a fresh init of ``config``'s model: numpy or jax arrays, sharded or not)
    with the source's params put in by path (see the module doc); returns
    ``(params, report)``. The result's leaves have the dtypes and shardings of ``params``'.

    Raises :class:`InitFromError` when ``source`` holds no checkpoint or a param's shape
    differs in a way resampling does not fix (naming the param and both shapes).
    """
    source_params, source_config, step = read_source(source)
    report = InitReport(source=source, step=step)
    has_lora = isinstance(params, dict) and LORA_KEY in params
    if LORA_KEY in source_params and not has_lora:
        report.merged_lora = sum(1 for _ in lora_lib.adapters(source_params))
        scale = lora_lib.scale(source_config.train.lora) if source_config else 0.0
        source_params = jax.tree.map(np.asarray, lora_lib.merge_lora(source_params, scale))
    have = _flat(source_params)
    want = _flat(params)
    loaded: dict[str, Any] = {}
    for path, target in want.items():
        if path not in have:
            report.new.append(path)
            loaded[path] = target
            continue
        value = have[path]
        shape = tuple(target.shape)
        if tuple(value.shape) != shape:
            value = _resample(path, value, shape, source_config, config, source)
            report.resampled[path] = (tuple(have[path].shape), shape)
        else:
            report.copied.append(path)
        loaded[path] = _place(value, target)
    report.dropped = [path for path in have if path not in want]
    leaves = [loaded[path] for path in want]
    return jax.tree.unflatten(jax.tree.structure(params), leaves), report


def _resample(
    path: str,
    value: np.ndarray,
    shape: tuple[int, ...],
    source_config: ml_collections.ConfigDict | None,
    config: ml_collections.ConfigDict,
    source: str,
) -> np.ndarray:
    """The source's position table resampled to ``shape``, or :class:`InitFromError`."""
    modality = path.split("/")[0]
    mismatch = InitFromError(
        f"config.train.init_from={source!r}: {path} is {list(value.shape)} in the source but "
        f"{list(shape)} in this config, and only learned image/audio position tables are "
        "resampled; make this config's model match the source's (configs/lit.py:DIR takes "
        "the model fields from DIR's config.json)"
    )
    if (
        path not in ("image/posemb/embedding", "audio/posemb/embedding")
        or source_config is None
        or modality not in source_config.model.modalities
        or value.ndim != 2
        or value.shape[1] != shape[1]
    ):
        raise mismatch
    old_grid, old_prefix = _grid(source_config, modality)
    new_grid, new_prefix = _grid(config, modality)
    if old_prefix != new_prefix or new_prefix + new_grid[0] * new_grid[1] != shape[0]:
        raise mismatch
    try:
        return resample_position_embedding(value, old_grid, new_grid, old_prefix)
    except ValueError as error:
        raise InitFromError(f"config.train.init_from={source!r}: {path}: {error}") from error
