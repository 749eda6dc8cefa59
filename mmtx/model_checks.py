"""The checks of a config that need the code it will run: :func:`check_runnable`.

:func:`mmtx.config.validate` checks a config as data (keys, types, ranges, choices, the
fields that depend on each other) and imports no jax or flax. What only the JAX side can
answer is checked here, where the model is resolved from the config
(:meth:`mmtx.models.MultiModalTransformer.from_config`, which :func:`mmtx.train.build.build`,
:func:`mmtx.create_model` and the commands all go through), before anything is traced:

- ``fusion.type`` names a fusion registered in this process (:data:`mmtx.fusion.FUSION_MODULES`,
  where :func:`mmtx.fusion.register_fusion` adds custom ones);
- an explicit ``attention.implementation`` (``cudnn``, ``pallas``) can run every kernel the
  towers and the fusion use, on the platform the model is compiled for.

Errors are ``ValueError`` s whose message starts ``config.<field>:``, as validation's do.
"""

from __future__ import annotations

import ml_collections

from mmtx.config import NO_FUSION
from mmtx.fusion import FUSION_MODULES
from mmtx.nn.attention import cudnn_unsupported_reason, pallas_unsupported_reason
from mmtx.nn.platform import canonical_platform, target_platform


def check_runnable(config: ml_collections.ConfigDict, platform: str | None = None) -> None:
    """Checks that the validated ``config`` names a registered fusion and an attention
    implementation that ``platform`` (``cpu`` | ``gpu`` | ``tpu``; default the platform
    compiled for, :func:`mmtx.nn.platform.target_platform`) can run; ``ValueError``
    otherwise."""
    check_fusion_registered(config.fusion.type)
    check_attention_implementation(config, platform)


def check_fusion_registered(fusion_type: str) -> None:
    """``ValueError`` unless ``fusion_type`` is a registered fusion or ``"none"``, saying how
    a custom fusion is registered."""
    if fusion_type in FUSION_MODULES or fusion_type == NO_FUSION:
        return
    raise ValueError(
        f"config.fusion.type: {fusion_type!r} is not a registered fusion (registered: "
        f"{tuple(FUSION_MODULES)}; or {NO_FUSION!r} for none). A custom fusion module must be "
        f"registered with mmtx.fusion.register_fusion({fusion_type!r}, YourModule) before the "
        "model is built or a checkpoint that uses it is loaded: import the module that "
        "registers it first"
    )


def check_attention_implementation(
    config: ml_collections.ConfigDict, platform: str | None = None
) -> None:
    """An explicit ``cudnn`` or ``pallas`` must be able to run on ``platform`` (default the
    platform compiled for) with the compute dtype, for every tower's kernel (and its MAP
    head's) and the fusion's, at their head dims; ``ValueError`` naming the first that
    cannot, and why."""
    implementation = config.attention.implementation
    if implementation not in ("cudnn", "pallas"):
        return
    backend = target_platform() if platform is None else canonical_platform(platform)
    dtype = config.dtype
    if dtype == "auto":
        dtype = "float32" if backend == "cpu" else "bfloat16"
    for name, group, kernels in attention_kernel_uses(config):
        for kernel in kernels:
            if implementation == "pallas":
                reason = pallas_unsupported_reason(kernel=kernel, backend=backend)
            else:
                reason = cudnn_unsupported_reason(
                    kernel=kernel,
                    dtype=dtype,
                    head_dim=group.width // group.num_heads,
                    backend=backend,
                )
            if reason is not None:
                raise ValueError(
                    f"config.attention.implementation: {implementation!r} in {name}: {reason}"
                )


def attention_kernel_uses(
    config: ml_collections.ConfigDict,
) -> list[tuple[str, ml_collections.ConfigDict, tuple[str, ...]]]:
    """``(field, group, kernels)`` for every configured tower (its kernel, and the dense MAP
    head's) and the fusion (the kernels its type runs; none for a custom or no fusion)."""
    uses = [
        (
            f"model.{m}",
            config.model[m],
            (config.model[m].attention,)
            + (("dense",) if config.model[m].get("pooling") == "map" else ()),
        )
        for m in config.model.modalities
    ]
    fusion = config.fusion
    fusion_kernels = {
        "concat": (fusion.attention,),
        "bottleneck": (fusion.attention,),
        "cross_attention": (fusion.attention, fusion.cross_attention),
        "perceiver": (fusion.attention, fusion.cross_attention),
    }.get(fusion.type, ())
    uses.append(("fusion", fusion, fusion_kernels))
    return uses
