"""The train step's analytic FLOP count, device peaks, and MFU.

One counter for the whole project: ``benchmarks/train_step.py`` reports its MFU from
:func:`analytic_flops`, and the training loop (``mmtx/train/loop.py``) logs achieved TFLOP/s
per device and MFU every log interval from the same count. The peak is per device kind
(:data:`PEAK_FLOPS`, bf16 dense), ``config.train.peak_flops`` when set, or else a large
matmul measured once (:func:`matmul_peak_gflops`; the CPU case).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mmtx import config as config_lib
from mmtx.modalities import get_modality


def attention_core_flops(
    config: ml_collections.ConfigDict, kernel: str, length: int, width: int, num_heads: int
) -> float:
    """Forward FLOPs of one example's attention scores and weighted values (self-attention).

    ``dense``: ``q k^T`` and ``p v``, ``2 T^2 D`` each. ``local``: the blockwise band (every
    block of ``b`` queries against 3 blocks of keys, ``b = max(radius, 16)`` capped at ``T``,
    padded to whole blocks) plus the global tokens' rows and columns. ``linear``: the feature
    maps' ``phi(k)^T v`` and ``phi(q) (..)`` with ``m`` features per head (``m = Dh`` for
    elu, ``num_features`` or ``4 Dh`` for FAVOR+, whose projections are counted too).
    """
    head_dim = width // num_heads
    if kernel == "dense":
        return 2 * (2.0 * length * length * width)
    if kernel == "local":
        options = config.attention.local
        block = max(1, min(max(options.radius, 16), length))
        padded = -(-length // block) * block
        band = 2 * (2.0 * padded * 3 * block * width)
        num_global = min(options.num_global, length)
        # Global keys seen by every query block, and the global queries' dense rows.
        global_terms = 2 * (2.0 * padded * num_global * width) + 2 * (
            2.0 * num_global * length * width
        )
        return band + global_terms
    if kernel == "linear":
        options = config.attention.linear
        features = head_dim
        if options.feature_map == "favor":
            features = options.num_features or 4 * head_dim
        core = num_heads * (2.0 * length * features * head_dim) * 2  # kv, then q kv
        core += num_heads * 2.0 * length * features  # the normaliser
        if options.feature_map == "favor":
            core += 2 * num_heads * (2.0 * length * features * head_dim)
        return core
    raise ValueError(f"unknown attention kernel {kernel!r}")


def _encoder_flops(
    config: ml_collections.ConfigDict, tower: ml_collections.ConfigDict, length: int
) -> dict[str, float]:
    """Forward FLOPs of one example through ``tower.depth`` pre-LN blocks, per layer type."""
    width, depth = tower.width, tower.depth
    return {
        "attention_projections": depth * 4 * 2.0 * length * width * width,  # q, k, v, out
        "attention_core": depth
        * attention_core_flops(config, tower.attention, length, width, tower.num_heads),
        "mlp": depth * 2 * 2.0 * length * width * tower.mlp_dim,
    }


def analytic_flops(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, Any]:
    """The train step's FLOPs counted per layer type, from the config alone.

    Each matmul ``[m, k] @ [k, n]`` counts ``2 m k n``; the forward pass is counted per
    example and the backward pass as twice the forward (the gradients with respect to
    each matmul's two operands), so a train step is ``3 x`` the forward. Counted: the stems
    (patch / conv embedding, the audio mel filterbank), per transformer block the q, k, v and
    output projections, the attention scores and weighted values (per kernel, see
    :func:`attention_core_flops`) and the MLP; the fusion (concat: the per-modality
    projections and its transformer; gated: its projections; both only when the
    classification loss uses the fused embedding, since nothing else does); the output
    heads; the contrastive logits ``2 B^2 E`` per modality pair. Not counted: the audio FFT,
    the backward pass of the first layer's input (XLA drops it), and elementwise work
    (LayerNorm, softmax, GELU, the optimizer), which XLA's count includes.

    Returns a dict: ``forward`` (per layer type, FLOPs of the whole batch), ``forward_total``,
    ``train`` (``3 x forward_total``) and ``complete`` (False when a part of the model has
    no analytic count here: the cross_attention, bottleneck or perceiver fusions).
    """
    model, fusion = config.model, config.fusion
    per_example: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        per_example[name] = per_example.get(name, 0.0) + value

    complete = True
    lengths = {m: config_lib.tower_tokens(config, m) for m in model.modalities}
    for modality in model.modalities:
        tower, spec = model[modality], get_modality(modality)
        add("stem", spec.stem_flops(tower))
        class_tokens = config_lib.CLASS_TOKENS.get(tower.pooling, 0)
        for depth, length, times in spec.transformer_passes(tower, class_tokens):
            run = ml_collections.ConfigDict(dict(tower.to_dict(), depth=depth))
            for name, value in _encoder_flops(config, run, length).items():
                add(name, times * value)
        if tower.projection != "none":  # "none": the pooled output is the embedding
            add("heads", 2.0 * tower.width * model.embed_dim)
        for attribute in model.attribute_modalities.get(modality, ()):
            if config.loss.attribute_weight:
                add("heads", 2.0 * model.embed_dim * model.attribute_classes[attribute])
    # The fusion and its heads feed only the classification loss: without it XLA drops them.
    fused_used = bool(model.num_classes and config.loss.classification_weight)
    if fusion.type == "concat":
        if fused_used:
            for modality in model.modalities:
                add("fusion", 2.0 * lengths[modality] * model[modality].width * fusion.width)
            fused_length = 1 + sum(lengths.values())
            for value in _encoder_flops(config, fusion, fused_length).values():
                add("fusion", value)
    elif fusion.type == "gated":
        if fused_used:
            for modality in model.modalities:
                add("fusion", 2.0 * model[modality].width * fusion.width)
    elif fusion.type == config_lib.NO_FUSION:
        fused_used = False  # no fusion and no fused heads
    else:
        complete = False
    if fused_used:
        add("heads", 2.0 * fusion.width * model.embed_dim)
        add("heads", 2.0 * fusion.width * model.num_classes)
    forward = {name: value * batch_size for name, value in per_example.items()}
    if config.loss.contrastive != "none" and config.loss.contrastive_weight:
        pairs = math.comb(len(model.modalities), 2)
        forward["contrastive_logits"] = pairs * 2.0 * batch_size**2 * model.embed_dim
    total = sum(forward.values())
    return {"forward": forward, "forward_total": total, "train": 3 * total, "complete": complete}


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Median rate of a jitted float32 ``[size, size] @ [size, size]`` matmul, GFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times) / 1e9


# --- peaks ------------------------------------------------------------------------------------

# Peak dense bf16 matmul FLOP/s per device (one chip / one GPU), matched against
# ``jax.devices()[0].device_kind`` lower-cased, first match wins (so "v5 lite" before "v5").
# Sources:
# * TPU v4 275 TFLOP/s: cloud.google.com/tpu/docs/v4 ("Peak compute per chip (bf16) 275").
# * TPU v5e ("TPU v5 lite") 197: cloud.google.com/tpu/docs/v5e ("Peak compute per chip (bf16)").
# * TPU v5p ("TPU v5") 459: cloud.google.com/tpu/docs/v5p ("Peak compute per chip (bf16)").
# * TPU v6e ("TPU v6 lite", Trillium) 918: cloud.google.com/tpu/docs/v6e.
# * A100 312: NVIDIA A100 datasheet, BF16 Tensor Core dense (624 is with sparsity).
# * H100 SXM 989 and H100 PCIe 756: NVIDIA H100 datasheet, BF16 Tensor Core dense (the
#   datasheet's 1979 / 1513 are with sparsity). H100 NVL (per GPU) 835.
# * H200 989: NVIDIA H200 datasheet (SXM; same Hopper tensor cores as H100 SXM), dense.
PEAK_FLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("tpu v6 lite", "tpu v6e"), 918e12),
    (("tpu v5 lite", "tpu v5e"), 197e12),
    (("tpu v5p", "tpu v5"), 459e12),
    (("tpu v4",), 275e12),
    (("h200",), 989e12),
    (("h100 nvl",), 835e12),
    (("h100 pcie",), 756e12),
    (("h100",), 989e12),
    (("a100",), 312e12),
)


_MEASURED: dict[int, float] = {}


def table_peak_flops(device_kind: str) -> float | None:
    """The bf16 dense peak FLOP/s of one device of ``device_kind``, or None when not listed."""
    kind = device_kind.lower()
    for names, peak in PEAK_FLOPS:
        if any(name in kind for name in names):
            return peak
    return None


def device_peak_flops(
    configured: float = 0.0, device_kind: str | None = None, measure_size: int = 2048
) -> tuple[float, str]:
    """The peak FLOP/s per device MFU is measured against, and where it came from.

    ``configured`` > 0 (``config.train.peak_flops``) wins; then the table for a listed
    device kind; otherwise (CPU, an unlisted accelerator) a float32 ``measure_size``-cubed
    matmul measured once per process, its rate divided by the local device count (CPU
    devices share the host's cores, and one matmul uses them all).
    """
    if configured > 0:
        return float(configured), "config.train.peak_flops"
    kind = device_kind if device_kind is not None else jax.devices()[0].device_kind
    peak = table_peak_flops(kind)
    if peak is not None:
        return peak, f"{kind} bf16 dense peak (table)"
    if measure_size not in _MEASURED:  # once per process
        _MEASURED[measure_size] = matmul_peak_gflops(measure_size, repeats=3) * 1e9
    measured = _MEASURED[measure_size]
    devices = jax.local_device_count()
    return measured / devices, (
        f"measured {measure_size}^3 float32 matmul, {measured / 1e9:.1f} GFLOP/s over "
        f"{devices} device(s)"
    )


def throughput(
    steps_per_second: float, flops_per_step: float, device_count: int, peak_flops: float
) -> dict[str, float]:
    """``tflops_per_device`` (analytic model FLOPs / s / device, in 1e12) and ``mfu``."""
    per_device = steps_per_second * flops_per_step / max(device_count, 1)
    return {
        "tflops_per_device": per_device / 1e12,
        "mfu": per_device / peak_flops if peak_flops > 0 else 0.0,
    }
