"""Which scale a reranker's scores are on, and the relevance in [0, 1] each one means.

No request has confirmed what bge-reranker-base returns on Workers AI: Cloudflare's model
page shows raw logits, but a service that already applied a sigmoid would put every
score at 0.5 or above, and a ``min_rerank_score`` of 0.1 would then never refuse.
``[cloudflare] rerank_scores`` says which, or ``"auto"`` detects it per response:

* any score below 0 or above 1: logits (a probability cannot be there);
* several scores, all within [0, 1]: probabilities (logits of several candidates that
  all land in that narrow band are rare: an irrelevant candidate's logit is negative);
* otherwise (one candidate in [0, 1], or none): the scale the previous response showed,
  logits before any, since that is what the model page documents.

Its limits: a response whose candidates are all weakly relevant may put every logit in
[0, 1] and be read as probabilities (their relevance then reads lower than the sigmoid
would make it: the gate errs towards refusing); the rule sees one response at a time.
``rag doctor`` reports the raw scores and the detected scale so an operator can pin it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Scale = Literal["logits", "probabilities"]


def sigmoid(score: float) -> float:
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    z = math.exp(score)
    return z / (1.0 + z)


def detect(scores: Sequence[float], previous: Scale = "logits") -> Scale:
    """The scale one response's ``scores`` are on (rule in the module docstring)."""
    if any(score < 0.0 or score > 1.0 for score in scores):
        return "logits"
    if len(scores) >= 2:
        return "probabilities"
    return previous


def relevance(score: float, scale: Scale) -> float:
    """``score`` as a probability of relevance."""
    return sigmoid(score) if scale == "logits" else score
