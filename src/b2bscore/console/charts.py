"""Geometry of the console's inline-SVG charts, computed here so templates only draw.

Every chart carries its numbers as text (signs, values, labels) and distinguishes series
by pattern as well as colour, so it reads without colour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

REASON_WIDTH: Final = 720
_REASON_AXIS: Final = REASON_WIDTH / 2
_REASON_HALF: Final = 250.0
_REASON_ROW: Final = 48


@dataclass(frozen=True, slots=True)
class ReasonBar:
    """One reason's row: label on top, bar from the centre axis, signed value at its end."""

    label: str
    code: str
    contribution: float
    adverse: bool
    y: float  # top of the row
    x: float  # left edge of the bar
    width: float
    value_x: float
    value_anchor: str  # start | end


@dataclass(frozen=True, slots=True)
class ReasonChart:
    """A diverging bar chart of reason contributions around zero."""

    bars: list[ReasonBar]
    width: int
    height: int
    axis_x: float


def reason_chart(reasons: Sequence[Mapping[str, Any]], lang: str) -> ReasonChart:
    """Bars to the right raise the risk (adverse), to the left lower it (favourable)."""
    contributions = [_as_float(r.get("contribution")) for r in reasons]
    largest = max((abs(c) for c in contributions), default=0.0) or 1.0
    bars: list[ReasonBar] = []
    for index, (reason, contribution) in enumerate(zip(reasons, contributions, strict=True)):
        width = max(abs(contribution) / largest * _REASON_HALF, 2.0)
        adverse = contribution > 0
        y = 8 + index * _REASON_ROW
        x = _REASON_AXIS if adverse else _REASON_AXIS - width
        bars.append(
            ReasonBar(
                label=str(reason.get("label_fr" if lang == "fr" else "label_en") or ""),
                code=str(reason.get("code") or ""),
                contribution=contribution,
                adverse=adverse,
                y=y,
                x=round(x, 1),
                width=round(width, 1),
                # The value sits across the axis from its bar, where there is always room.
                value_x=round(_REASON_AXIS - 8 if adverse else _REASON_AXIS + 8, 1),
                value_anchor="end" if adverse else "start",
            )
        )
    return ReasonChart(
        bars=bars, width=REASON_WIDTH, height=16 + len(bars) * _REASON_ROW, axis_x=_REASON_AXIS
    )


def _as_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


@dataclass(frozen=True, slots=True)
class HBar:
    """One labelled horizontal bar."""

    key: str
    label: str
    value: float
    text: str  # the value as printed
    y: float
    width: float


@dataclass(frozen=True, slots=True)
class HBarChart:
    """Horizontal bars with a label column, and an optional reference line."""

    bars: list[HBar]
    width: int
    height: int
    plot_x: int
    plot_width: int
    reference_x: float | None
    reference_label: str


def hbar_chart(
    rows: Sequence[tuple[str, str, float, str]],
    *,
    reference: float | None = None,
    reference_label: str = "",
) -> HBarChart:
    """rows are (key, label, value, printed value); the scale fits the reference too."""
    width, plot_x, plot_width, row = 460, 84, 250, 36
    top = max([v for _, _, v, _ in rows] + [reference or 0.0]) or 1.0
    top *= 1.05
    bars = [
        HBar(
            key=key,
            label=label,
            value=value,
            text=text,
            y=12 + i * row,
            width=round(max(value / top * plot_width, 1.0 if value > 0 else 0.0), 1),
        )
        for i, (key, label, value, text) in enumerate(rows)
    ]
    reference_x = None if reference is None else round(plot_x + reference / top * plot_width, 1)
    return HBarChart(
        bars=bars,
        width=width,
        height=24 + len(rows) * row + (18 if reference is not None else 0),
        plot_x=plot_x,
        plot_width=plot_width,
        reference_x=reference_x,
        reference_label=reference_label,
    )


@dataclass(frozen=True, slots=True)
class Column:
    """One histogram column."""

    low: int
    high: int
    count: int
    x: float
    y: float
    height: float
    band: str  # approve | review | decline: the policy band the scores fall in


@dataclass(frozen=True, slots=True)
class Histogram:
    """Scores 0-1000 in equal bins, with axis ticks."""

    columns: list[Column]
    width: int
    height: int
    plot_x: int
    plot_y: int
    plot_width: int
    plot_height: int
    ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    column_width: float


SCORE_BIN: Final = 50


def score_histogram(scores: Sequence[int], *, approve_from: int, decline_below: int) -> Histogram:
    """Score counts in 50-point bins; each bin tagged with the policy band of its scores."""
    bins = 1000 // SCORE_BIN
    counts = [0] * bins
    for score in scores:
        counts[min(max(score, 0) // SCORE_BIN, bins - 1)] += 1
    width, height = 640, 260
    plot_x, plot_y, plot_width, plot_height = 48, 16, 572, 200
    top = max(counts) or 1
    column_width = plot_width / bins
    columns: list[Column] = []
    for i, count in enumerate(counts):
        low = i * SCORE_BIN
        bar = count / top * plot_height
        middle = low + SCORE_BIN / 2
        band = (
            "approve"
            if middle >= approve_from
            else "decline"
            if middle < decline_below
            else "review"
        )
        columns.append(
            Column(
                low=low,
                high=low + SCORE_BIN,
                count=count,
                x=round(plot_x + i * column_width + 1, 1),
                y=round(plot_y + plot_height - bar, 1),
                height=round(bar, 1),
                band=band,
            )
        )
    ticks = [(round(plot_x + v / 1000 * plot_width, 1), str(v)) for v in range(0, 1001, 200)]
    # Whole counts only: 0, the top and, when it is a whole number, the middle.
    marks = sorted({0, top} | ({top // 2} if top >= 4 and top % 2 == 0 else set()))
    y_ticks = [(round(plot_y + plot_height - m / top * plot_height, 1), str(m)) for m in marks]
    return Histogram(
        columns=columns,
        width=width,
        height=height,
        plot_x=plot_x,
        plot_y=plot_y,
        plot_width=plot_width,
        plot_height=plot_height,
        ticks=ticks,
        y_ticks=y_ticks,
        column_width=round(column_width - 2, 1),
    )


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class PairedRow:
    """Two bars of one bin: the reference's share above, the observed share below."""

    label: str
    y: float
    reference_width: float
    observed_width: float
    reference_text: str
    observed_text: str


@dataclass(frozen=True, slots=True)
class PairedChart:
    """Reference against observed shares, bin by bin, on one scale."""

    rows: list[PairedRow]
    width: int
    height: int
    plot_x: int
    plot_width: int


def paired_chart(rows: Sequence[tuple[str, float, float, str, str]]) -> PairedChart:
    """rows are (label, reference share, observed share, both as printed)."""
    width, plot_x, plot_width, row = 520, 96, 330, 40
    top = max([max(r, o) for _, r, o, _, _ in rows] + [0.0]) or 1.0
    top *= 1.05

    def bar(value: float) -> float:
        return round(max(value / top * plot_width, 1.0 if value > 0 else 0.0), 1)

    return PairedChart(
        rows=[
            PairedRow(label, 8 + i * row, bar(ref), bar(obs), ref_text, obs_text)
            for i, (label, ref, obs, ref_text, obs_text) in enumerate(rows)
        ],
        width=width,
        height=16 + len(rows) * row,
        plot_x=plot_x,
        plot_width=plot_width,
    )
