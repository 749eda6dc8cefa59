"""From torch / big_vision tensor layouts to mmtx's param layouts.

mmtx keeps attention projections per head (``query/kernel [D, H, Dh]``, ``out/kernel
[H, Dh, D]``), dense kernels as ``[in, out]`` and convolution kernels as ``[kh, kw, C, D]``
(see docs/design.md). torch's ``nn.Linear`` stores ``[out, in]`` and its convolutions
``[D, C, kh, kw]``. Every helper passes a :class:`~mmtx.checkpoints.tensors.Missing`
through, so that one conversion reports all missing tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmtx.checkpoints.tensors import Missing, Tensor, TensorSource


def _passes_missing(fn: Callable[..., np.ndarray]) -> Callable[..., Tensor]:
    def wrapped(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x if isinstance(x, Missing) else fn(x, *args, **kwargs)

    wrapped.__doc__ = fn.__doc__
    wrapped.__name__ = fn.__name__
    return wrapped


@_passes_missing
def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """torch ``nn.Linear`` weight ``[out, in]`` -> dense kernel ``[in, out]``."""
    return np.ascontiguousarray(weight.T)


@_passes_missing
def head_kernel(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """torch q/k/v weight ``[H * Dh, D]`` -> mmtx ``[D, H, Dh]``."""
    out, width = weight.shape
    return np.ascontiguousarray(weight.T.reshape(width, num_heads, out // num_heads))


@_passes_missing
def head_bias(bias: np.ndarray, num_heads: int) -> np.ndarray:
    """torch q/k/v bias ``[H * Dh]`` -> mmtx ``[H, Dh]``."""
    return bias.reshape(num_heads, -1)


@_passes_missing
def merge_kernel(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """torch attention output weight ``[D, H * Dh]`` -> mmtx ``[H, Dh, D]``."""
    width, inner = weight.shape
    return np.ascontiguousarray(weight.T.reshape(num_heads, inner // num_heads, width))


@_passes_missing
def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch conv weight ``[D, C, kh, kw]`` -> flax ``[kh, kw, C, D]``."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


@_passes_missing
def reshaped(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` reshaped (e.g. a class embedding ``[D]`` to ``[1, 1, D]``)."""
    return x.reshape(shape)


def split_rows(x: Tensor, parts: int) -> list[Tensor]:
    """A packed ``[parts * n, ...]`` tensor (torch ``in_proj_weight``) cut into ``parts``."""
    if isinstance(x, Missing):
        return [x] * parts
    return list(np.split(x, parts, axis=0))


def layer_norm(source: TensorSource, prefix: str) -> dict[str, Tensor]:
    """torch LayerNorm ``prefix.weight`` / ``prefix.bias`` -> ``{"scale", "bias"}``."""
    return {"scale": source[f"{prefix}.weight"], "bias": source[f"{prefix}.bias"]}


def dense(source: TensorSource, prefix: str, *, bias: bool = True) -> dict[str, Tensor]:
    """torch Linear ``prefix.weight`` (and ``.bias``) -> ``{"kernel" [in, out], "bias"}``."""
    params = {"kernel": linear_kernel(source[f"{prefix}.weight"])}
    if bias:
        params["bias"] = source[f"{prefix}.bias"]
    return params


def attention(
    source: TensorSource,
    *,
    num_heads: int,
    query: str = "",
    key: str = "",
    value: str = "",
    packed: str = "",
    out: str,
) -> dict[str, dict[str, Tensor]]:
    """A torch attention layer -> mmtx ``MultiHeadAttention`` params.

    Either three Linear prefixes (``query``, ``key``, ``value``; HF) or the prefix of a
    packed ``in_proj_weight`` / ``in_proj_bias`` (``nn.MultiheadAttention``, OpenAI CLIP).
    """
    if packed:
        weights = split_rows(source[f"{packed}in_proj_weight"], 3)
        biases = split_rows(source[f"{packed}in_proj_bias"], 3)
    else:
        weights = [source[f"{p}.weight"] for p in (query, key, value)]
        biases = [source[f"{p}.bias"] for p in (query, key, value)]
    params = {
        name: {"kernel": head_kernel(w, num_heads), "bias": head_bias(b, num_heads)}
        for name, w, b in zip(("query", "key", "value"), weights, biases, strict=True)
    }
    params["out"] = {
        "kernel": merge_kernel(source[f"{out}.weight"], num_heads),
        "bias": source[f"{out}.bias"],
    }
    return params


def torch_block(
    source: TensorSource, prefix: str, names: Mapping[str, str], num_heads: int
) -> dict[str, Any]:
    """One pre-LN transformer block of a torch model -> an mmtx ``TransformerBlock``'s params.

    ``names`` maps mmtx's parts to the family's names under ``prefix``: ``norm1``,
    ``norm2``, ``fc1``, ``fc2``, ``out`` and either ``query``/``key``/``value`` or
    ``packed`` (the prefix of ``in_proj_weight``).
    """
    if "packed" in names:
        qkv = {"packed": prefix + names["packed"]}
    else:
        qkv = {part: prefix + names[part] for part in ("query", "key", "value")}
    return block_params(
        norm1=layer_norm(source, prefix + names["norm1"]),
        attention=attention(source, num_heads=num_heads, out=prefix + names["out"], **qkv),
        norm2=layer_norm(source, prefix + names["norm2"]),
        fc1=dense(source, prefix + names["fc1"]),
        fc2=dense(source, prefix + names["fc2"]),
    )


def torch_blocks(
    source: TensorSource, prefix: str, depth: int, names: Mapping[str, str], num_heads: int
) -> dict[str, Any]:
    """The ``depth`` blocks ``{prefix}0.``, ``{prefix}1.``, ... of a torch transformer
    (:func:`torch_block`), stacked on a leading ``[depth]`` axis as mmtx scans them."""
    return stack_layers(
        [torch_block(source, f"{prefix}{i}.", names, num_heads) for i in range(depth)]
    )


def torch_encoder(
    source: TensorSource,
    blocks: str,
    depth: int,
    names: Mapping[str, str],
    num_heads: int,
    norm: str,
) -> dict[str, Any]:
    """A torch transformer's ``depth`` blocks ``{blocks}0.``, ... (:func:`torch_blocks`:
    every leaf stacked on a leading ``[depth]`` axis) and its final LayerNorm
    ``{norm}.weight`` / ``{norm}.bias`` (``[D]`` each, :func:`layer_norm`) -> an mmtx
    encoder's params (:func:`encoder_params`)."""
    return encoder_params(
        torch_blocks(source, blocks, depth, names, num_heads), layer_norm(source, norm)
    )


def torch_depth(source: TensorSource, blocks: str, names: Mapping[str, str]) -> int:
    """How many blocks ``{blocks}0.``, ``{blocks}1.``, ... a torch transformer has: the
    consecutive ``{blocks}{i}.{names['norm1']}.weight`` (each ``[D]``) from 0
    (:func:`count_layers`)."""
    return count_layers(source, f"{blocks}{{}}.{names['norm1']}.weight")


def stack_layers(layers: list[Any]) -> Any:
    """Per-layer param trees -> one tree with a leading ``[depth]`` axis on every leaf (the
    layout of mmtx's scanned ``blocks``). A leaf missing in any layer stays missing."""

    def stack(*leaves: Tensor) -> Tensor:
        missing = [leaf for leaf in leaves if isinstance(leaf, Missing)]
        return missing[0] if missing else np.stack(leaves)

    return _tree_map(stack, *layers)


def _tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _tree_map(fn, tree[key], *(r[key] for r in rest)) for key in tree}
    return fn(tree, *rest)


def count_layers(source: TensorSource, template: str) -> int:
    """How many layers a checkpoint has: the number of consecutive ``i`` from 0 for which
    ``template.format(i)`` names a tensor."""
    depth = 0
    while template.format(depth) in source:
        depth += 1
    return depth


# ---------------------------------------------------------------------- mmtx's param trees
# Each takes its parts already converted (a family's helpers above, or big_vision's flax
# tensors as they are) and nests them as mmtx's modules name them.


def block_params(*, norm1: Any, attention: Any, norm2: Any, fc1: Any, fc2: Any) -> dict[str, Any]:
    """An mmtx ``TransformerBlock``'s params: pre-LN attention, then a two-layer MLP."""
    return {
        "norm1": norm1,
        "attention": attention,
        "norm2": norm2,
        "mlp": {"fc1": fc1, "fc2": fc2},
    }


def encoder_params(blocks: Any, norm: Any) -> dict[str, Any]:
    """An mmtx encoder: ``blocks`` stacked on a leading ``[depth]`` axis, the final norm."""
    return {"blocks": blocks, "norm": norm}


def text_params(token_table: Tensor, position_table: Tensor, encoder: Any) -> dict[str, Any]:
    """An mmtx text tower: token table ``[vocab, D]``, learned positions ``[length, D]``
    and its encoder (:func:`encoder_params`)."""
    return {
        "token_embed": {"embedding": {"embedding": token_table}},
        "posemb": {"embedding": position_table},
        "tower": {"encoder": encoder},
    }


def patch_tower_params(
    projection: dict[str, Tensor], position_table: Tensor, tower: dict[str, Any]
) -> dict[str, Any]:
    """An mmtx patch tower (image, audio): the patch projection (``kernel [kh, kw, C, D]``
    and its ``bias``, if any), learned positions ``[rows, D]`` and ``tower`` (its class
    tokens and norms, ``encoder``, pooling head)."""
    return {
        "patches": {"projection": projection},
        "posemb": {"embedding": position_table},
        "tower": tower,
    }
