"""``Evaluator``: the configured eval split's metrics of any params, built from a predict
function, as big_vision's evaluators are. The training loop runs one at its eval steps and
``python -m mmtx.evaluate`` runs one on a restored checkpoint."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from mmtx.data import bad_examples, sources
from mmtx.data.pipeline import close_iterator, create_dataset, has_eval_data
from mmtx.data.tokenizer import Tokenizer
from mmtx.evaluate.evaluators import EvalTasks, eval_tasks
from mmtx.evaluate.split import PredictFn, ToGlobal, evaluate, text_embedder


class Evaluator:
    """Evaluates params on ``config``'s eval split with ``predict``.

    Args:
      predict: ``(params, global batch) -> outputs`` (:data:`mmtx.evaluate.split.PredictFn`:
        the jitted eval step of :func:`mmtx.train.build.build`).
      config: the validated run config (``data``, ``eval``, ``model.text.max_length``).
      tokenizer: the run's tokenizer (zero-shot prompts, captions).
      to_global: this process's share of a batch -> global arrays (``Run.to_global``).

    Every process runs it at the same time (the batches and the text embedder gather
    across processes). The zero-shot class names and every caption of the split
    (:class:`~mmtx.evaluate.evaluators.EvalTasks`) are read at the first :meth:`run`.
    ``enabled`` is False when the config has no eval data
    (:func:`mmtx.data.pipeline.has_eval_data`: a file source without an eval split).
    """

    def __init__(
        self,
        predict: PredictFn,
        config: ml_collections.ConfigDict,
        tokenizer: Tokenizer,
        *,
        to_global: ToGlobal,
    ):
        self.predict = predict
        self.config = config
        self.tokenizer = tokenizer
        self.to_global = to_global
        self.local_batch_size = config.eval.batch_size // jax.process_count()
        # Whether the config has eval data (a file source may have none).
        self.enabled = has_eval_data(config)
        self.tasks: EvalTasks | None = None

    def run(self, params: Any) -> dict[str, float]:
        """The metrics of ``params`` (a pytree placed as ``predict`` takes it) over the whole
        eval split: float values by name, as :func:`mmtx.evaluate.split.evaluate` returns."""
        batches = create_dataset(
            self.config,
            "eval",
            self.tokenizer,
            batch_size=self.local_batch_size,
            train=False,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            with_index=True,
        )
        if self.tasks is None:
            self.tasks = eval_tasks(self.config)
        iterator = iter(batches)
        if sources.source_kind(self.config.data.source) in sources.FILE_KINDS:
            iterator = bad_examples.SkipTally(iterator)
        try:
            return evaluate(
                self.predict,
                params,
                iterator,
                local_batch_size=self.local_batch_size,
                to_global=self.to_global,
                tasks=self.tasks,
                embed_text=text_embedder(
                    self.predict,
                    params,
                    self.tokenizer,
                    self.config.model.text.max_length,
                    local_batch_size=self.local_batch_size,
                    to_global=self.to_global,
                ),
            )
        finally:
            close_iterator(iterator)
