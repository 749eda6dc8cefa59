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
