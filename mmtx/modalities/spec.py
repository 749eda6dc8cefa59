"""What a modality is to mmtx: one :class:`ModalitySpec` per modality, in one registry.

Everything that differs between text, images, audio and video lives in that modality's spec:
its config group (``config.model.<name>``, from its schema in :mod:`mmtx.schemas`, which the
config layer reads without JAX), its encoder and how the batch feeds it, a dummy
input for initialisation, the checks on concrete inputs, the raw-input preprocessing of
:class:`mmtx.Model`, the input pipeline's per-example preprocessing, its token count and
stem FLOPs, and the scene attributes it expresses (for evaluation). The config schema, the
model, the losses, the fusion order, the pipeline, evaluation and the test helpers iterate
over :func:`modality_names`. Adding a modality is one subclass registered with
:func:`register_modality` (see docs/contributing.md).

Per example, a batch may mark a modality absent: ``batch["present/<name>"]`` bool ``[B]``
(:func:`present_key`); absent examples carry filler values of the right shape, which the
model ignores (see :class:`mmtx.models.MultiModalTransformer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

import flax.linen as nn
import jax
import ml_collections
import numpy as np

# The schema's side (config group, checks, token count) and the registry live in
# mmtx.schemas, without JAX, for the config layer; re-exported here.
from mmtx.schemas.registry import *  # noqa: F403
from mmtx.schemas.schema import RESIZE_FIELDS, ModalitySchema, Require, resize_options  # noqa: F401


class ExampleContext(TypedDict):
    """What the input pipeline passes, by keyword, with each source example's value to
    :meth:`ModalitySpec.preprocess_example`."""

    config: ml_collections.ConfigDict
    tokenizer: Any
    rng: np.random.Generator | None  # the example's generator (training; None at evaluation)
    augment: bool  # whether random crops and flips apply
    sample_rate: int | None  # the source audio's rate in Hz, where the source has one


@dataclasses.dataclass(frozen=True)
class Headline:
    """The metrics of one modality that the training log's headline shows
    (:mod:`mmtx.evaluate.headline`), by name, in order.

    Attributes:
      retrieval: its recalls against text (``text_to_image_recall@1``, ...).
      zero_shot: its zero-shot accuracies (``image_zero_shot_top1``, ...).
      hidden: its metrics left out of the headline (a direction too noisy to show).
    """

    retrieval: tuple[str, ...] = ()
    zero_shot: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


class ModalitySpec(ModalitySchema):
    """One modality's record: its schema (:class:`mmtx.schemas.ModalitySchema`: the class
    attributes, the config group and its checks, the token count) and its JAX side (the
    encoder, dummy inputs, the checks on concrete inputs, the raw-input and pipeline
    preprocessing). Subclass the modality's schema and this, in that order, and override the
    methods; the attributes are :class:`~mmtx.schemas.ModalitySchema`'s, and ``headline``,
    the metrics its evaluation shows in the training log (:class:`Headline`; none: its
    recall@1 both ways and its zero-shot top-1, after the modalities that name theirs).
    """

    headline: Headline = Headline()

    # --- model ----------------------------------------------------------------------------
    def encoder_class(self) -> type[nn.Module]:
        """The flax module that encodes this modality: ``(x, out)`` as the encoders return."""
        raise NotImplementedError

    def encoder_fields(self, group: ml_collections.ConfigDict, vocab_size: int) -> dict[str, Any]:
        """The encoder's fields from the config group: the group minus ``projection`` and the
        :attr:`fields` the encoder does not take (:attr:`Field.encoder <mmtx.schemas.Field>`
        False: a pixel modality's resize options, which the input's preprocessing reads)."""
        skipped = {"projection"} | {field.name for field in self.fields if not field.encoder}
        return {name: value for name, value in group.to_dict().items() if name not in skipped}

    def encode(
        self, encoder: nn.Module, batch: Mapping[str, jax.Array], *, train: bool
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Runs ``encoder`` on this modality's batch entries -> ``(tokens, out)``."""
        return encoder(batch[self.name], train=train)

    def dummy_input(
        self, group: ml_collections.ConfigDict, batch_size: int
    ) -> dict[str, jax.Array]:
        """Zero inputs of the right shapes and dtypes (for init and tracing)."""
        raise NotImplementedError

    def check_values(self, batch: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        """Checks concrete (host) inputs before anything compiles; default: floats finite and
        within ``±max_abs_input``. Raises ``ValueError`` naming the first bad example.

        ``batch`` holds numpy arrays; ``fields`` are the encoder's fields."""
        values = np.asarray(batch[self.name])
        if np.issubdtype(values.dtype, np.floating):
            flat = values.reshape(values.shape[0], -1)
            finite = np.isfinite(flat).all(axis=1)
            if not finite.all():
                raise ValueError(
                    f"{self.name}[{int(np.argmin(finite))}] has non-finite values (NaN or inf)"
                )
            largest = np.abs(flat).max(axis=1, initial=0.0)
            if (largest > self.max_abs_input).any():
                index = int(np.argmax(largest > self.max_abs_input))
                raise ValueError(
                    f"{self.name}[{index}] has values up to {float(largest[index]):.3g} in "
                    f"magnitude, beyond the ±{self.max_abs_input:g} an input may have"
                    + (f" ({self.value_range}); scale it first" if self.value_range else "")
                )

    # --- data -----------------------------------------------------------------------------
    def from_raw(
        self, inputs: list[Any], *, config: ml_collections.ConfigDict, tokenizer: Any, **options
    ) -> dict[str, np.ndarray]:
        """Raw inputs of :class:`mmtx.Model`, one per example (no ``None``) -> batch arrays."""
        raise NotImplementedError

    def as_list(self, inputs: Any) -> list[Any] | None:
        """Raw inputs as a list with one entry per example, when they are given as a list
        (which may hold ``None`` for absent examples); None when they are one array/batch."""
        return list(inputs) if isinstance(inputs, list | tuple) else None

    def preprocess_example(
        self, value: Any, **context: Unpack[ExampleContext]
    ) -> dict[str, np.ndarray]:
        """One source example's raw value -> this modality's model inputs (no batch axis);
        ``context`` is :class:`ExampleContext` (the config, tokenizer, the example's
        ``rng``, whether to ``augment``, the source's audio ``sample_rate``)."""
        raise NotImplementedError
