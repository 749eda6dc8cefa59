"""Image encoder: a ViT over non-overlapping patches."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.encoders.tower import Tower, TowerOptions, grid_position_embedding
from mmtx.nn import ConvStem, PatchEmbed
from mmtx.nn.options import options


class ImageEncoder(TowerOptions):
    """ViT (Dosovitskiy et al. 2021) over ``patch_size`` patches.

    ``stem="patch"`` embeds each patch linearly; ``stem="conv"`` uses a
    :class:`mmtx.nn.ConvStem` of ``log2(patch_size)`` stride-2 convolutions instead.

    ``images`` float ``[B, image_size, image_size, channels]`` in ``[0, 1]`` are normalised
    with ``mean``/``std``, patched, position-embedded and encoded ->
    ``(x, out)`` with ``x`` ``[B, N (+1 with CLS), width]`` and ``out["pooled"]`` ``[B, width]``;
    with ``capture_weights``, ``out["attention_weights"]`` holds every block's attention
    probabilities, ``[depth, B, H, N', N']`` for the dense kernel (see :class:`Tower`).

    Pooling: ``cls``, ``mean`` or ``map`` (attention pooling, SigLIP; see
    :class:`mmtx.encoders.Tower`). ``patch_bias=False`` drops the patch projection's bias
    (``stem="patch"``). With ``class_token_posemb`` (learned position embedding only) the
    table ``posemb/embedding`` has ``K + N`` rows, the class tokens' first, and is added after
    the class tokens are prepended (CLIP); otherwise it has ``N`` rows and is added to the
    patches. The transformer options (:class:`mmtx.encoders.TowerOptions`, keyword-only) go
    whole to the :class:`mmtx.encoders.Tower` (``tower``).
    """

    image_size: int
    patch_size: int
    width: int
    channels: int = 3
    stem: str = "patch"
    position_embedding: str = "learned"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    patch_bias: bool = True
    class_token_posemb: bool = False

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes a batch of images (see the class docstring)."""
        expected = (self.image_size, self.image_size, self.channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"image must be [batch, {self.image_size}, {self.image_size}, {self.channels}] "
                f"floats in [0, 1]; got shape {tuple(images.shape)}"
            )
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        x = ((images.astype(jnp.float32) - mean) / std).astype(self.dtype)
        if self.stem == "conv":
            num_layers = self.patch_size.bit_length() - 1
            if 2**num_layers != self.patch_size:
                raise ValueError(
                    f"stem='conv' needs a power-of-two patch_size; got {self.patch_size}"
                )
            stem = ConvStem(self.width, num_layers, self.dtype, self.param_dtype, name="stem")
        elif self.stem == "patch":
            patch = (self.patch_size, self.patch_size)
            stem = PatchEmbed(
                self.width,
                patch,
                self.dtype,
                self.param_dtype,
                use_bias=self.patch_bias,
                name="patches",
            )
        else:
            raise ValueError(f"unknown image stem {self.stem!r}; use 'patch' or 'conv'")
        x, (grid_h, grid_w) = stem(x)
        x, posemb = grid_position_embedding(self, x, (grid_h, grid_w))
        chex.assert_shape(x, (images.shape[0], grid_h * grid_w, self.width))
        stem = x
        tower = Tower(**options(self, TowerOptions), name="tower")
        x, out = tower(x, None, train=train, posemb=posemb)
        out.update(stem=stem, grid=jnp.asarray((grid_h, grid_w)))
        return x, out
