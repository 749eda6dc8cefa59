"""Moved to :mod:`mmtx.evaluate.split` (evaluation is one layer, ``mmtx/evaluate/``); these
names stay importable here for ``experiments/common.py``."""

from mmtx.evaluate.split import (
    attribute_keys,
    evaluate,
    pad_batch,
    retrieval_directions,
    text_embedder,
)

__all__ = ["attribute_keys", "evaluate", "pad_batch", "retrieval_directions", "text_embedder"]
