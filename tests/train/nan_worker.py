"""A loss that turns NaN at one training step, for the tests of non-finite steps.

Imported by tests/train/test_loop.py; run by tests/train/test_fault_tolerance.py as
``python tests/train/nan_worker.py --nan_at_step=K <mmtx.main's flags>``: ``mmtx.main``
itself (its flags, exit codes and messages) with the training loop's loss wrapped.

The step cannot be seen from inside the loss, so the wrapper recognises the step's batch:
the training data is deterministic, so the batch of step ``K`` is computed beforehand from
the same pipeline the loop reads, and the loss is NaN for exactly that batch. (A test that
expects one NaN step also fails if the batch recurs at another step.)
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx import losses
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.train.step import LossFn

# Keys whose values single out a batch (the synthetic data draws each one at random).
FINGERPRINT_KEYS = ("text", "image", "audio")


def training_batch(config: ml_collections.ConfigDict, step: int) -> dict[str, np.ndarray]:
    """The batch the training loop feeds to step ``step`` (1-based) of a fresh run."""
    config = config_lib.validate(copy.deepcopy(config))
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    data = create_dataset(
        config, "train", tokenizer, batch_size=config.train.batch_size, train=True
    )
    iterator = iter(data)
    for _ in range(step - 1):
        next(iterator)
    return next(iterator)


def loss_nan_at_step(config: ml_collections.ConfigDict, step: int) -> LossFn:
    """:func:`mmtx.losses.total_loss`, NaN (loss and ``metrics["loss"]``) for the batch of
    training step ``step`` (1-based) and unchanged for every other batch."""
    target = training_batch(config, step)
    keys = [key for key in FINGERPRINT_KEYS if key in target]

    def loss_fn(
        outputs: dict[str, Any], batch: dict[str, jax.Array], loss_config: Any
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        loss, metrics = losses.total_loss(outputs, batch, loss_config)
        hit = jnp.all(jnp.stack([jnp.all(batch[key] == target[key]) for key in keys]))
        loss = jnp.where(hit, jnp.nan, loss)
        return loss, {**metrics, "loss": loss}

    return loss_fn


def main() -> None:
    from absl import app, flags

    from mmtx import main as mmtx_main
    from mmtx.train import loop

    nan_at_step = flags.DEFINE_integer("nan_at_step", None, "Step whose loss is NaN (from 1).")

    original = loop.train_and_evaluate

    def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, **kwargs: Any):
        loss_fn = loss_nan_at_step(config, nan_at_step.value)
        return original(config, workdir, loss_fn=loss_fn, **kwargs)

    # mmtx.main imports train_and_evaluate from the loop module when main() runs.
    loop.train_and_evaluate = train_and_evaluate
    app.run(mmtx_main.main, flags_parser=mmtx_main.parse_flags)


if __name__ == "__main__":
    main()
