"""Helpers shared by the test modules (importable as ``helpers``: see pyproject's pythonpath)."""

import jax
import jax.numpy as jnp
import numpy as np

from mmtx import config as config_lib

# The key projection's bias adds the same amount to every logit of a query, which softmax
# ignores: its gradient is exactly zero, so gradient-flow checks skip it.
SHIFT_INVARIANT = ("['key']['bias']",)


def random_params(module, *args, seed=0):
    """Params of ``module`` at a random, generic point (numpy RNG: no PRNG compile).

    LayerNorm scales sit around 1, everything else around 0, with 0.2 standard deviation.
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def fill(path, s):
        base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(base + 0.2 * rng.normal(size=s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# Per modality: (tokens T, feature width D, padded tokens in example 0).
FEATURE_SPECS = {
    "text": (5, 8, 2),
    "image": (4, 12, 0),
    "audio": (3, 16, 1),
    "video": (6, 10, 1),
}


def random_features(modalities, batch, seed=0, specs=FEATURE_SPECS):
    """Random encoder outputs ``{modality: ModalityFeatures}`` shaped by ``specs``; example 0
    has its last ``padded`` tokens masked out."""
    from mmtx.fusion import ModalityFeatures

    rng = np.random.default_rng(seed)
    features = {}
    for name in modalities:
        length, dim, padded = specs[name]
        mask = np.ones((batch, length), bool)
        mask[0, length - padded :] = False
        features[name] = ModalityFeatures(
            tokens=jnp.asarray(rng.normal(size=(batch, length, dim)), jnp.float32),
            mask=jnp.asarray(mask),
            pooled=jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32),
        )
    return features


def load_script(path, name):
    """Imports the stand-alone script at ``path`` (benchmarks/, experiments/: not part of the
    package) as module ``name``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def torchvision_eval_reference(
    image,
    size,
    *,
    resize="shorter_side",
    interpolation="bilinear",
    resize_size=0,
    crop_offset="round",
):
    """What torchvision's eval transform (``Resize`` then ``CenterCrop``, as open_clip builds
    it) makes of one ``[H, W, C]`` image, written out with PIL, for comparison with
    :func:`mmtx.data.preprocessing.preprocess_image`.

    ``resize="shorter_side"``: the shorter side to ``resize_size or size``, the longer to
    ``int(side * long / short)`` (torchvision truncates), then the ``size`` square at
    ``round((H - size) / 2)``, ``round((W - size) / 2)`` (Python's round, half to even;
    ``crop_offset="floor"``: ``(H - size) // 2``, as HF's image processors); ``"squash"``:
    both sides to ``size``. uint8 RGB is resized as one PIL image (uint8 out); float32
    channel by channel in PIL's mode "F" (float32 out, unclipped).
    """
    from PIL import Image

    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    height, width = image.shape[:2]
    if resize == "squash":
        new_w, new_h = size, size
    else:
        side = resize_size or size
        if width <= height:
            new_w, new_h = side, int(side * height / width)
        else:
            new_w, new_h = int(side * width / height), side
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    if crop_offset == "floor":
        top, left = (new_h - size) // 2, (new_w - size) // 2
    box = (left, top, left + size, top + size)

    def one(pil):
        if pil.size != (new_w, new_h):
            pil = pil.resize((new_w, new_h), resample[interpolation])
        return np.asarray(pil.crop(box))

    if image.dtype == np.uint8:
        return one(Image.fromarray(image))
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0), np.float32)
    return np.stack([one(Image.fromarray(plane)) for plane in planes], axis=-1)


def tiny_config():
    """The default config with the ``tiny`` variant's sizes (not validated)."""
    return config_lib.apply_variant(config_lib.default_config(), "tiny")


def set_dotted(config, dotted, value):
    """Sets ``config``'s field named by the ``dotted`` path (``model.text.width``)."""
    *groups, leaf = dotted.split(".")
    for group in groups:
        config = config[group]
    config[leaf] = value
