"""Which params train: ``config.train.trainable`` / ``frozen`` regexes over param paths.

A param's path is its keys joined by ``/``, as the checkpoints and the docs name them:
``image/tower/encoder/blocks/mlp/fc1/kernel``, ``text_head/bias``, ``logit_scale``, and for
LoRA adapters ``lora/<the adapted kernel's path>/a`` (:mod:`mmtx.train.lora`). As in
big_vision and scenic, a param trains when it matches (``re.search``) one of ``trainable``
(or ``trainable`` is empty) and none of ``frozen``. With LoRA on (``train.lora.rank > 0``)
the base model is frozen: only the adapters and the ``trainable`` matches train.

The mask is computed from the paths alone (python bools, static under jit), so the train
step can leave the frozen params out of the gradient and the optimizer gives them no state.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import ml_collections

LORA_KEY = "lora"


def path_string(path: tuple[Any, ...]) -> str:
    """A ``jax.tree_util`` key path as ``"a/b/c"``."""
    parts = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def param_paths(tree: Any) -> list[str]:
    """Every leaf's path string, in ``jax.tree.leaves`` order."""
    return [path_string(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _matches(patterns: tuple[str, ...], path: str) -> bool:
    return any(re.search(pattern, path) for pattern in patterns)


def is_trainable(path: str, train: ml_collections.ConfigDict) -> bool:
    """Whether the param at ``path`` trains under ``train`` (``config.train``)."""
    if _matches(tuple(train.frozen), path):
        return False
    if train.lora.rank > 0:
        return path.startswith(f"{LORA_KEY}/") or _matches(tuple(train.trainable), path)
    return not train.trainable or _matches(tuple(train.trainable), path)


def freezes_anything(train: ml_collections.ConfigDict) -> bool:
    """Whether ``train`` may freeze a param (otherwise every param trains, as before)."""
    return bool(train.trainable or train.frozen or train.lora.rank > 0)


def trainable_mask(params: Any, train: ml_collections.ConfigDict) -> Any:
    """A tree of python bools shaped as ``params``: True where the param trains.

    Raises ``ValueError`` when a ``trainable`` or ``frozen`` regex matches no param (a typo
    would otherwise train or freeze nothing, silently) or when no param trains.
    """
    paths = param_paths(params)
    for field in ("trainable", "frozen"):
        for pattern in train[field]:
            if not any(re.search(pattern, path) for path in paths):
                tops = sorted({path.split("/")[0] for path in paths})
                raise ValueError(
                    f"config.train.{field}: {pattern!r} matches no param; param paths start "
                    f"with {', '.join(f'{top}/' for top in tops)} (e.g. {paths[0]!r})"
                )
    flags = [is_trainable(path, train) for path in paths]
    if not any(flags):
        raise ValueError(
            "config.train: no param is trainable (trainable="
            f"{tuple(train.trainable)}, frozen={tuple(train.frozen)}, lora.rank="
            f"{train.lora.rank})"
        )
    return jax.tree.unflatten(jax.tree.structure(params), flags)


def count(params: Any, mask: Any = None) -> int:
    """Scalars in ``params`` (those where ``mask`` is True, when given)."""
    leaves = jax.tree.leaves(params)
    flags = [True] * len(leaves) if mask is None else jax.tree.leaves(mask)
    return sum(int(leaf.size) for leaf, flag in zip(leaves, flags, strict=True) if flag)


def split(params: Any, mask: Any) -> tuple[Any, Any]:
    """``(trainable, frozen)``: two trees shaped as ``params``, each with ``None`` where the
    other holds the param (``None`` is an empty subtree: ``jax.grad`` skips it)."""
    trainable = jax.tree.map(lambda p, m: p if m else None, params, mask)
    frozen = jax.tree.map(lambda p, m: None if m else p, params, mask)
    return trainable, frozen


def combine(trainable: Any, frozen: Any) -> Any:
    """Inverse of :func:`split`."""
    return jax.tree.map(
        lambda t, f: f if t is None else t, trainable, frozen, is_leaf=lambda x: x is None
    )
