"""Small inline-SVG charts for `tta-carbon report --html` (report_html.py).

Hand-rolled on purpose: a plotting library (matplotlib and its numpy, fonts and backends)
is far too heavy for the daemon's environment, and three chart shapes are all the page
needs: stacked vertical bars, a step/point series over time, horizontal bars. Each
function returns one ``<svg>`` element as text, valid XML (tests parse it with
xml.etree), with every text escaped and every bar carrying ``data-value`` (the exact
number it draws) so tests can check the geometry against the figures.

Geometry: the plot area is ``[LEFT, width - RIGHT] x [TOP, height - BOTTOM]``; a bar's
height is ``value / axis_max * plot_height``, ``axis_max`` being the first "nice" tick
(1, 2, 2.5, 5 x 10^n steps) at or above the largest stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

LEFT, RIGHT, TOP, BOTTOM = 64, 16, 40, 44
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""
AXIS, GRID, MUTED = "#4b5563", "#e5e7eb", "#6b7280"


def text(value: object) -> str:
    """``value`` as XML text: control characters shown as escapes (XML 1.0 cannot carry them), then escaped."""
    s = str(value)
    if not s.isprintable():
        s = s.encode("unicode_escape").decode("ascii")
    return escape(s, quote=True)


def fmt(value: float) -> str:
    """A short label for an axis tick or a bar's value."""
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{value:.3g}"


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Ticks from 0 to the first 1/2/2.5/5 x 10^n step at or above ``top`` (``[0, 1]`` when ``top`` is 0)."""
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-12))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{text(label)}" {FONT} font-size="12">'
            + "".join(body) + "</svg>")


def _legend(entries: Sequence[tuple[str, str]], width: int) -> list[str]:
    """Swatches along the top, wrapped to ``width``."""
    out, x, y = [], LEFT, 14
    for name, color in entries:
        w = 22 + 7 * len(str(name))
        if x + w > width - RIGHT and x > LEFT:
            x, y = LEFT, y + 16
        out.append(f'<g class="legend"><rect x="{x}" y="{y - 9}" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text x="{x + 16}" y="{y + 1}" fill="{AXIS}">{text(name)}</text></g>')
        x += w + 12
    return out


def _y_axis(ticks: list[float], width: int, height: int, unit: str) -> list[str]:
    plot_h = height - TOP - BOTTOM
    out = []
    for t in ticks:
        y = height - BOTTOM - t / ticks[-1] * plot_h
        out.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.2f}" y2="{y:.2f}" stroke="{GRID}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.2f}" text-anchor="end" fill="{MUTED}">{fmt(t)}</text>')
    out.append(f'<text class="axis-label" x="14" y="{TOP + plot_h / 2:.1f}" fill="{AXIS}" text-anchor="middle" '
               f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{text(unit)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{height - BOTTOM}" y2="{height - BOTTOM}" stroke="{AXIS}"/>')
    return out


def empty(message: str, width: int = 720, height: int = 120) -> str:
    """A chart with nothing to draw says so instead of drawing an empty frame."""
    return _svg(width, height, message, [f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                                         f'fill="{MUTED}" font-size="14">{text(message)}</text>'])


def stacked_bars(categories: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], *, unit: str,
                 label: str, width: int = 720, height: int = 300) -> str:
    """One bar per category, ``series`` (name, colour, one value per category) stacked bottom-up.

    Negative values are drawn as 0 (records never carry them; a bar cannot go below its axis).
    """
    if not categories or not any(v > 0 for _, _, vals in series for v in vals):
        return empty(f"{label}: no data")
    stacks = [sum(max(0.0, vals[i]) for _, _, vals in series) for i in range(len(categories))]
    ticks = nice_ticks(max(stacks))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / len(categories)
    bar_w = max(2.0, min(56.0, slot * 0.7))
    body = _legend([(n, c) for n, c, _ in series], width) + _y_axis(ticks, width, height, unit)
    every = max(1, math.ceil(len(categories) / (plot_w / 80)))  # at most one x label per 80 px
    for i, cat in enumerate(categories):
        x = LEFT + slot * i + (slot - bar_w) / 2
        y = float(height - BOTTOM)
        body.append(f'<g class="bar" data-category="{text(cat)}" data-sum="{stacks[i]!r}">')
        for name, color, vals in series:
            v = max(0.0, vals[i])
            if v <= 0:
                continue
            h = v / ticks[-1] * plot_h
            y -= h
            body.append(f'<rect x="{x:.2f}" y="{y:.4f}" width="{bar_w:.2f}" height="{h:.4f}" fill="{color}" '
                        f'data-series="{text(name)}" data-value="{v!r}"><title>{text(cat)} {text(name)}: '
                        f'{fmt(v)} {text(unit)}</title></rect>')
        body.append("</g>")
        if i % every == 0:
            body.append(f'<text class="x-label" x="{x + bar_w / 2:.2f}" y="{height - BOTTOM + 16}" '
                        f'text-anchor="middle" fill="{MUTED}">{text(cat)}</text>')
    return _svg(width, height, label, body)


def step_chart(points: Sequence[tuple[float, float, str]], colors: dict[str, str], *, x_labels: Sequence[tuple[float, str]],
               unit: str, label: str, width: int = 720, height: int = 280) -> str:
    """Points (x, y, series) as a step line per series, each point a dot: x in any unit (e.g. hours),
    the axis spanning the points' range; ``x_labels`` (x, text) are drawn under the axis."""
    if not points:
        return empty(f"{label}: no data")
    xs = [p[0] for p in points]
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0
    ticks = nice_ticks(max(p[1] for p in points))
    plot_w, plot_h = width - LEFT - RIGHT - 8, height - TOP - BOTTOM
    body = _legend([(s, colors[s]) for s in colors if any(p[2] == s for p in points)], width)
    body += _y_axis(ticks, width, height, unit)

    def px(x: float) -> float:
        return LEFT + 4 + (x - x0) / span * plot_w

    def py(y: float) -> float:
        return height - BOTTOM - max(0.0, y) / ticks[-1] * plot_h

    for series, color in colors.items():
        own = sorted(p for p in points if p[2] == series)
        if not own:
            continue
        path = []
        for j, (x, y, _) in enumerate(own):
            # a step to the next point, broken where the series is absent for more than one step (a gap)
            if j and x - own[j - 1][0] <= 1.0 + 1e-9:
                path.append(f"H{px(x):.2f}V{py(y):.2f}")
            else:
                path.append(f"M{px(x):.2f},{py(y):.2f}")
        body.append(f'<path class="series" d="{"".join(path)}" fill="none" stroke="{color}" stroke-width="2" '
                    f'data-series="{text(series)}"/>')
        for x, y, _ in own:
            body.append(f'<circle cx="{px(x):.2f}" cy="{py(y):.4f}" r="2.5" fill="{color}" data-series="{text(series)}" '
                        f'data-value="{y!r}"><title>{text(series)}: {fmt(y)} {text(unit)}</title></circle>')
    for x, lab in x_labels:
        if x0 <= x <= x1:
            body.append(f'<text class="x-label" x="{px(x):.2f}" y="{height - BOTTOM + 16}" text-anchor="middle" '
                        f'fill="{MUTED}">{text(lab)}</text>')
    return _svg(width, height, label, body)


def hbars(items: Sequence[tuple[str, float, str]], *, unit: str, label: str, width: int = 720,
          value_text: Sequence[str] | None = None) -> str:
    """One horizontal bar per item (name, value, colour), longest = the largest value; ``value_text``
    is printed at each bar's end (default: the value)."""
    if not items or not any(v > 0 for _, v, _ in items):
        return empty(f"{label}: no data")
    row, name_w = 22, min(260, 16 + 7 * max(len(str(n)) for n, _, _ in items))
    height = TOP // 2 + row * len(items) + 8
    top = max(v for _, v, _ in items)
    bar_max = width - name_w - 150
    body = []
    for i, (name, v, color) in enumerate(items):
        y = TOP // 2 + row * i
        w = max(0.0, v) / top * bar_max
        shown = value_text[i] if value_text else f"{fmt(v)} {unit}"
        body.append(f'<g class="hbar"><text class="y-label" x="{name_w - 8}" y="{y + 15}" text-anchor="end" '
                    f'fill="{AXIS}">{text(name)}</text>'
                    f'<rect x="{name_w}" y="{y + 3}" width="{w:.4f}" height="{row - 8}" rx="2" fill="{color}" '
                    f'data-series="{text(name)}" data-value="{v!r}"><title>{text(name)}: {text(shown)}</title></rect>'
                    f'<text class="value" x="{name_w + w + 6:.2f}" y="{y + 15}" fill="{MUTED}">{text(shown)}</text></g>')
    return _svg(width, height, label, body)
