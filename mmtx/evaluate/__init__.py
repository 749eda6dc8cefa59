"""Evaluation, one layer: zero-shot classification and retrieval with several captions per
item as papers report them, as pure functions of embeddings, and the evaluator the training
loop and the command line run.

:mod:`mmtx.evaluate.zero_shot` builds CLIP's prompt-ensemble classifier and its top-k
accuracy; :mod:`mmtx.evaluate.retrieval` computes recall@k, also under the COCO / Flickr30k
protocol. :class:`mmtx.evaluate.evaluator.Evaluator` (built from a predict function, over
:mod:`mmtx.evaluate.split`) evaluates params on the configured eval split;
:mod:`mmtx.evaluate.headline` picks the metrics a log shows. The command line is
``python -m mmtx.evaluate``. This package's own names are the pure functions (numpy only).
"""

from mmtx.evaluate.retrieval import (
    caption_retrieval,
    first_positive_ranks,
    recall_at_k,
    retrieval_recall,
)
from mmtx.evaluate.zero_shot import (
    prompts,
    top_k_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
    zero_shot_logits,
)

__all__ = [
    "caption_retrieval",
    "first_positive_ranks",
    "prompts",
    "recall_at_k",
    "retrieval_recall",
    "top_k_accuracy",
    "zero_shot_accuracy",
    "zero_shot_classifier",
    "zero_shot_logits",
]
