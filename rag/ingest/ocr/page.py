"""What is kept of one page image: the upright reading and its lines above the cut.

Measured on the handbook's pages rendered to images (README, "Speed and memory"): real
text reads at a mean line score of 0.97-0.995, text upside down at 0.61-0.67, and both
pass the engine's usual 0.5 line cut. So a page whose mean falls below ``UPRIGHT`` is read
again turned a half, then a quarter each way, and the best reading wins. A blank page (no
line at all) is never turned: four readings of nothing cost four times as much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag.ports import Image, Recogniser

UPRIGHT = 0.8
"""Mean line score at which a reading is taken as upright without trying other turns."""
FLOOR = 0.5
"""Lines scoring below this do not count towards a reading's mean: specks and rules read
as a letter or two at 0.1-0.3 in every orientation, and would drag the means together."""
TURNS = (0, 2, 1, 3)
"""Quarter turns to try, in order: upright, upside down (the usual mis-fed scan), sideways."""


@dataclass(frozen=True, slots=True)
class PageText:
    text: str
    """Kept lines, top to bottom, one a line; empty when nothing was read."""
    confidence: float | None
    """Mean score of the kept lines; None when none was kept."""
    turns: int = 0
    """Quarter turns (counter-clockwise) that made the page upright."""


def _mean(lines: list[tuple[str, float]]) -> float:
    scores = [score for _, score in lines if score >= FLOOR]
    return sum(scores) / len(scores) if scores else 0.0


def read_page(recogniser: Recogniser, image: Image, min_confidence: float) -> PageText:
    """The page's text, read the right way up, without lines under ``min_confidence``."""
    best: tuple[float, int, list[tuple[str, float]]] | None = None
    for turns in TURNS:
        lines = recogniser.recognise(np.ascontiguousarray(np.rot90(image, turns)))
        if not lines and turns == 0:
            return PageText("", None)
        mean = _mean(lines)
        if best is None or mean > best[0]:
            best = (mean, turns, lines)
        if mean >= UPRIGHT:
            break
    assert best is not None
    _, turns, lines = best
    kept = [(text.strip(), score) for text, score in lines if score >= min_confidence]
    kept = [(text, score) for text, score in kept if text]
    if not kept:
        return PageText("", None, turns)
    confidence = sum(score for _, score in kept) / len(kept)
    return PageText("\n".join(text for text, _ in kept), round(confidence, 4), turns)
