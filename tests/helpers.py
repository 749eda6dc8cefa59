"""Helpers shared by the test modules (importable as ``helpers``: see pyproject's pythonpath)."""

import jax
import jax.numpy as jnp
import numpy as np

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
