"""The train state: everything a step reads and writes, all arrays (checkpointable as is)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """step: int32 []; params: float32 pytree; opt_state: optax state; rng: uint32 [2] key;
    ema_params: the exponential moving average of ``params`` (same tree), or None when
    ``config.train.ema_decay`` is 0 (then the state's tree is what it was before EMA existed,
    so older checkpoints restore)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
