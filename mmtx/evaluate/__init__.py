"""Evaluation as papers report it: zero-shot classification and retrieval with several
captions per item, as pure functions of embeddings.

:mod:`mmtx.evaluate.zero_shot` builds CLIP's prompt-ensemble classifier and its top-k
accuracy; :mod:`mmtx.evaluate.retrieval` computes recall@k, also under the COCO / Flickr30k
protocol. The command line is ``python -m mmtx.evaluate``.
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
