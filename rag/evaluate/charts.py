"""Inline SVG charts for the HTML report: a line chart and a grouped histogram.

Hand-written SVG keeps the report one self-contained file that opens with no network
and no JavaScript; the two chart kinds the report needs are a few dozen lines each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT = 520, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44


def line_chart(
    title: str,
    xs: Sequence[float],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    x_label: str,
    y_label: str,
    y_max: float = 1.0,
) -> str:
    """Lines of (name, colour, ys) over shared ``xs``, with dots at every point."""
    if not xs or not any(ys for _, _, ys in series):
        return _empty(title)
    x0, x1 = min(xs), max(xs)
    sx = _scale(x0, x1 if x1 > x0 else x0 + 1, LEFT, WIDTH - RIGHT)
    sy = _scale(0.0, y_max, HEIGHT - BOTTOM, TOP)
    parts = [_frame(title, x_label, y_label)]
    parts += _y_ticks(sy, y_max)
    parts += [_x_tick(sx(x), f"{x:g}") for x in xs]
    for index, (name, colour, ys) in enumerate(series):
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=False))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        parts += [
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}">'
            f"<title>{escape(name)} k={x:g}: {y:.3f}</title></circle>"
            for x, y in zip(xs, ys, strict=False)
        ]
        parts.append(_legend(index, name, colour, bottom=True))  # curves rise to the top right
    return _svg(parts)


def histogram(
    title: str,
    groups: Sequence[tuple[str, str, Sequence[float]]],
    *,
    x_label: str,
    bins: int = 20,
    markers: Sequence[tuple[str, float]] = (),
) -> str:
    """Side-by-side bars of (name, colour, values) over shared bins; vertical markers."""
    values = [v for _, _, vs in groups for v in vs]
    if not values:
        return _empty(title)
    lo, hi = min(values), max(values)
    lo, hi = min([lo, *(x for _, x in markers)]), max([hi, *(x for _, x in markers)])
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(np.asarray(vs, dtype=float), bins=edges)[0] for _, _, vs in groups]
    top = max(1, max(int(c.max()) for c in counts))
    sx = _scale(lo, hi, LEFT, WIDTH - RIGHT)
    sy = _scale(0.0, float(top), HEIGHT - BOTTOM, TOP)
    parts = [_frame(title, x_label, "questions")]
    parts += _y_ticks(sy, float(top), integer=True)
    parts += [_x_tick(sx(float(e)), f"{e:.3g}") for e in edges[:: max(1, bins // 5)]]
    slot = (sx(float(edges[1])) - sx(float(edges[0]))) / max(1, len(groups))
    for g, ((name, colour, _), count) in enumerate(zip(groups, counts, strict=True)):
        for i, n in enumerate(count.tolist()):
            if n:
                x = sx(float(edges[i])) + g * slot
                parts.append(
                    f'<rect x="{x:.1f}" y="{sy(n):.1f}" width="{max(slot - 1, 1):.1f}" '
                    f'height="{sy(0) - sy(n):.1f}" fill="{colour}" opacity="0.85">'
                    f"<title>{escape(name)}: {n} in "
                    f"[{edges[i]:.3g}, {edges[i + 1]:.3g})</title></rect>"
                )
        parts.append(_legend(g, f"{name} ({len(groups[g][2])})", colour))
    for label, x in markers:
        px = sx(x)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
            'stroke="#444" stroke-dasharray="4 3"/>'
            f'<text x="{px + 3:.1f}" y="{TOP + 12}" font-size="11">{escape(label)}</text>'
        )
    return _svg(parts)


def _scale(d0: float, d1: float, r0: float, r1: float) -> Callable[[float], float]:
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)


def _frame(title: str, x_label: str, y_label: str) -> str:
    return (
        f"{_title(title)}"
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="#333"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>'
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )


def _y_ticks(sy: Callable[[float], float], top: float, integer: bool = False) -> list[str]:
    ticks = []
    for i in range(5):
        value = top * i / 4
        label = f"{round(value)}" if integer else f"{value:.2f}"
        y = sy(value)
        ticks.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    return ticks


def _x_tick(x: float, label: str) -> str:
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM + 4}" stroke="#333"/>'
        f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>'
    )


def _legend(index: int, name: str, colour: str, *, bottom: bool = False) -> str:
    y = (HEIGHT - BOTTOM - 40 if bottom else TOP + 8) + 16 * index
    x = WIDTH - RIGHT - 190
    return (
        f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{x + 14}" y="{y}">{escape(name)}</text>'
    )


def _empty(title: str) -> str:
    return _svg(
        [
            _title(title),
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>',
        ]
    )


def _title(title: str) -> str:
    return (
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" '
        f'font-weight="bold">{escape(title)}</text>'
    )


def _svg(parts: list[str]) -> str:
    body = "".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" role="img">'
        f"{body}</svg>"
    )
