"""The train state: everything a step reads and writes, all arrays (checkpointable as is)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """step: int32 []; params: float32 pytree; opt_state: optax state; rng: uint32 [2] key."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
