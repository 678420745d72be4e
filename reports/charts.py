"""Chart geometry for the report pages, drawn as SVG by templates/reports/_charts.html.

Server-side SVG, no JavaScript and no network: the page works offline, prints as it shows,
and every chart carries its numbers as a table beside it. Python computes the coordinates
(rounded to one decimal, so the markup stays small); the template only places them, with
every label escaped by Jinja.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


@dataclass
class Series:
    name: str
    values: list[float]
    css: str = "s1"
    negative: bool = False  # stacked charts: drawn below the axis (losses)


@dataclass
class Chart:
    """Everything the SVG macro needs: marks in pixels, axis ticks, and the table of numbers."""

    title: str
    kind: str  # line | bars | stacked | hbars
    labels: list[str]
    series: list[Series]
    width: int = WIDTH
    height: int = HEIGHT
    marks: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)
    xlabels: list[dict] = field(default_factory=list)
    zero_y: float = 0.0
    empty: bool = False
    skip_zero_rows: bool = False  # long series (72 hours): the table lists only the rows with something

    @property
    def rows(self) -> list[tuple[str, list[float]]]:
        """The accessible table: one row per label, one column per series."""
        rows = [(label, [s.values[i] for s in self.series]) for i, label in enumerate(self.labels)]
        return [r for r in rows if any(r[1])] if self.skip_zero_rows else rows


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def _ticks(low: float, high: float, y_of) -> list[dict]:
    span = high - low
    step = _nice_max(span / 4) if span > 0 else 1.0
    if span / step > 6:
        step *= 2
    ticks, value = [], math.ceil(low / step) * step if low < 0 else 0.0
    while value <= high + 1e-9:
        ticks.append({"y": round(y_of(value), 1), "label": _short(value)})
        value += step
    return ticks


def _short(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}" if value != int(value) else f"{int(value):,}"


def _xlabels(labels: list[str], x_of, every: int | None = None) -> list[dict]:
    every = every or max(1, math.ceil(len(labels) / 8))
    return [{"x": round(x_of(i), 1), "label": label} for i, label in enumerate(labels) if i % every == 0]


def plot(title: str, kind: str, labels: list[str], series: list[Series]) -> Chart:
    """Lay out a line, grouped-bar or stacked-bar chart over `labels` (x) and `series` (y)."""
    chart = Chart(title=title, kind=kind, labels=labels, series=series)
    n = len(labels)
    if not n or not series:
        chart.empty = True
        return chart
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    if kind == "stacked":
        high = max([sum(s.values[i] for s in series if not s.negative) for i in range(n)] + [0])
        low = -max([sum(s.values[i] for s in series if s.negative) for i in range(n)] + [0])
    else:
        high = max([v for s in series for v in s.values] + [0])
        low = 0.0
    high = _nice_max(high) if high > 0 else (1.0 if low == 0 else 0.0)
    low = -_nice_max(-low) if low < 0 else 0.0

    def y_of(value: float) -> float:
        return TOP + (high - value) / (high - low) * plot_h

    slot = plot_w / n
    chart.zero_y = round(y_of(0), 1)
    chart.ticks = _ticks(low, high, y_of)
    if kind == "line":
        def x_of(i):
            return LEFT + (i + 0.5) * slot

        for s in series:
            points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(s.values))
            chart.marks.append({"type": "line", "css": s.css, "points": points, "name": s.name})
    elif kind == "bars":
        bar = slot * 0.8 / len(series)

        def x_of(i):
            return LEFT + (i + 0.5) * slot

        for j, s in enumerate(series):
            for i, v in enumerate(s.values):
                x = LEFT + i * slot + slot * 0.1 + j * bar
                chart.marks.append({"type": "rect", "css": s.css, "x": round(x, 1), "y": round(y_of(v), 1),
                                    "w": round(max(bar - 1, 1), 1), "h": round(y_of(0) - y_of(v), 1),
                                    "title": f"{s.name}, {labels[i]}: {_short(v)}"})
    else:  # stacked: gains up from the axis, losses down from it
        def x_of(i):
            return LEFT + (i + 0.5) * slot

        for i in range(n):
            up, down = 0.0, 0.0
            for s in series:
                v = s.values[i]
                if not v:
                    continue
                if s.negative:
                    top, down = y_of(-down), down + v
                    bottom = y_of(-down)
                else:
                    bottom, up = y_of(up), up + v
                    top = y_of(up)
                chart.marks.append({"type": "rect", "css": s.css, "x": round(LEFT + i * slot + slot * 0.1, 1),
                                    "y": round(top, 1), "w": round(max(slot * 0.8, 1), 1),
                                    "h": round(bottom - top, 1),
                                    "title": f"{s.name}, {labels[i]}: {_short(-v if s.negative else v)}"})
    chart.xlabels = _xlabels(labels, x_of)
    return chart


def hbars(title: str, labels: list[str], values: list[float], name: str) -> Chart:
    """Horizontal bars, one per label (clicks per link, by country): long labels stay readable."""
    series = [Series(name, values)]
    chart = Chart(title=title, kind="hbars", labels=labels, series=series)
    if not labels:
        chart.empty = True
        return chart
    row = 22
    chart.height = TOP + row * len(labels) + 8
    top = _nice_max(max(values + [0]))
    plot_w = WIDTH - 260 - RIGHT
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = TOP + i * row
        shown = label[:42] + ("…" if len(label) > 42 else "")
        chart.marks.append({"type": "rect", "css": "s1", "x": 260, "y": y + 3,
                            "w": round(max(v / top * plot_w, 0.5), 1), "h": row - 6, "title": f"{label}: {_short(v)}",
                            "label": shown, "value": _short(v), "ly": y + row / 2 + 4})
    return chart
