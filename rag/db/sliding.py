"""The sliding-window estimate both shared counts use (``rag.web.shared_limit``,
``rag.backends.cloudflare.shared_budget``).

A count kept per fixed window (a row's ``slot``) estimates the last ``window_s`` seconds
as this window's count plus the previous window's, weighted by the share of it still
inside the last ``window_s``: one row and one atomic statement per count, instead of a
timestamp per request.
"""

from __future__ import annotations


def wait_s(hits: int, prior: int, elapsed: float, limit: int, window_s: float) -> float:
    """Seconds until one more fits under ``limit`` (0 or less: it fits now).

    ``hits`` counted in this window, ``prior`` in the previous one, ``elapsed`` seconds
    into this window.
    """
    if prior > 0 and hits + 1 <= limit:
        # Later this window, once enough of the previous one has slid out.
        weight = (limit - hits - 1) / prior
        return (1.0 - weight) * window_s - elapsed
    # Next window, this one's hits weighing less as it slides out.
    slide = (1.0 - (limit - 1) / hits) * window_s if hits else 0.0
    return window_s - elapsed + max(slide, 0.0)
