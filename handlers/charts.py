"""The rollout chart: error rate and latency of both tracks over the rollout, as a PNG.

A table shows one instant; the chart posted in the rollout's thread shows the story — whether
the canary drifted from stable after a weight change, and when. Pure: measurements and step
marks in, PNG bytes out, no Slack and no store, so it is tested without either.

Rendering uses matplotlib's object API (a `Figure` with its own Agg canvas), never pyplot:
pyplot keeps global state and the bot renders from worker threads. Matplotlib documents
itself as not thread-safe even then (it shares caches between figures), so `rollout_chart`
renders one chart at a time; a chart takes a few hundred milliseconds, once per step.

Missing data is shown, never drawn over: a None value becomes NaN, which matplotlib leaves as
a gap; a tick that was never measured (the bot was down) breaks the line too; a value with no
neighbour gets a dot so it stays visible; a panel without any value says "no data".
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from rollout.analysis import Measurement
from rollout.analysis.types import TRACKS, Track
from rollout.model import Rollout

# 1000 x 600 px: wide enough for a day of 30-second ticks, small enough for a phone.
FIGSIZE = (10.0, 6.0)
DPI = 100
# Okabe-Ito orange and blue: told apart with every common colour-vision deficiency.
COLOURS: Mapping[Track, str] = {"canary": "#E69F00", "stable": "#0072B2"}
LINE_WIDTH: Mapping[Track, float] = {"canary": 2.0, "stable": 1.5}
NO_DATA = "no data"
# Gids let tests (and anyone inspecting a Figure) find artists without relying on styling.
STEP_GID = "step"
STEP_LABEL_GID = "step-label"
NO_DATA_GID = "no-data"
# A pause between ticks this many times the usual spacing is a gap, not a slope.
GAP_FACTOR = 3.0
# Half the x-range shown around a lone instant, so one measurement is not a zero-width axis.
LONE_INSTANT_MARGIN = timedelta(seconds=30)

_render_lock = threading.Lock()

Array = NDArray[np.float64]


@dataclass(frozen=True)
class StepMark:
    """A change of the canary's traffic share, drawn as a labelled vertical line."""

    at: datetime
    weight: float
    label: str  # e.g. "step 2: 50%"

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("StepMark.at must be timezone-aware (UTC)")


@dataclass(frozen=True)
class _Series:
    metric: str
    scale: float  # error rates are stored as fractions and shown as percent
    dashed: bool
    suffix: str  # appended to the track in the legend


ERROR_SERIES = (_Series("error_rate", 100.0, dashed=False, suffix=""),)
LATENCY_SERIES = (
    _Series("latency_avg_ms", 1.0, dashed=False, suffix=" avg"),
    _Series("latency_p99_ms", 1.0, dashed=True, suffix=" p99"),
)


def rollout_chart(
    *,
    measurements: Sequence[Measurement],
    steps: Sequence[StepMark],
    title: str,
    now: datetime | None = None,
) -> bytes:
    """The chart as PNG bytes (1000 x 600 px); see `build_figure` for what it shows."""
    with _render_lock:
        figure = build_figure(measurements=measurements, steps=steps, title=title, now=now)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def build_figure(
    *,
    measurements: Sequence[Measurement],
    steps: Sequence[StepMark],
    title: str,
    now: datetime | None = None,
) -> Figure:
    """Two panels over one UTC time axis: error rate (%) above, latency (ms) below.

    The time axis runs from the first measurement or step to `now` (or the last of them), so a
    chart taken while the metrics have stopped ends in a visible gap. Each step is a dotted
    vertical line in both panels, labelled in the upper one.
    """
    ordered = sorted(measurements, key=lambda m: m.at)
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    error_axes, latency_axes = figure.subplots(2, 1, sharex=True)
    figure.suptitle(title, fontsize=11, wrap=True)

    times = np.array([chart_x(m.at) for m in ordered], dtype=np.float64)
    _panel(error_axes, ordered, times, ERROR_SERIES, ylabel="error rate (%)")
    _panel(latency_axes, ordered, times, LATENCY_SERIES, ylabel="latency (ms)")

    start, end = _time_range(ordered, steps, now)
    for axes in (error_axes, latency_axes):
        if start is not None and end is not None:
            axes.set_xlim(chart_x(start), chart_x(end))
        axes.grid(True, color="0.9", linewidth=0.8)
        axes.set_axisbelow(True)
        for mark in steps:
            axes.axvline(chart_x(mark.at), color="0.35", linestyle=":", linewidth=1.2, gid=STEP_GID)
    for mark in steps:
        x = chart_x(mark.at)
        error_axes.text(
            x,
            0.97,
            f" {mark.label} ",
            transform=error_axes.get_xaxis_transform(),
            rotation=90,
            ha=_label_side(x, start=start, end=end),
            va="top",
            fontsize=8,
            color="0.2",
            gid=STEP_LABEL_GID,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1.0},
        )

    # matplotlib.dates ships without type hints, hence the ignores.
    locator = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    formatter = mdates.DateFormatter("%H:%M:%S", tz=UTC)  # type: ignore[no-untyped-call]
    latency_axes.xaxis.set_major_locator(locator)
    latency_axes.xaxis.set_major_formatter(formatter)
    latency_axes.set_xlabel(_time_label(start, end))
    if start is None:
        latency_axes.set_xticks([])
    return figure


def chart_x(at: datetime) -> float:
    """Where `at` lies on the time axis (matplotlib's days since its epoch, in UTC)."""
    return float(mdates.date2num(at))  # type: ignore[no-untyped-call]


def chart_title(rollout: Rollout) -> str:
    """The usual title: which service, from which image to which."""
    return f"{rollout.service}: {rollout.stable_image} \u2192 {rollout.canary_image}"


def step_marks_from_audit(rows: Iterable[Mapping[str, Any]]) -> list[StepMark]:
    """One mark per change of the weight in effect, from `Store.audit_rows(rollout_id)`.

    The audit keeps the rollout before and after every transition, with the weight read back
    from the cluster, so a restarted bot draws the same marks as the one that moved the steps.
    """
    marks: list[StepMark] = []
    for row in rows:
        after = _audit_view(row.get("after"))
        if after is None:
            continue
        before = _audit_view(row.get("before")) or {}
        weight = float(after.get("weight") or 0.0)
        if weight == float(before.get("weight") or 0.0):
            continue
        marks.append(
            StepMark(
                at=datetime.fromisoformat(str(row["at"])),
                weight=weight,
                label=_step_label(after, weight),
            )
        )
    return marks


def _panel(
    axes: Axes,
    measurements: Sequence[Measurement],
    times: Array,
    series: Sequence[_Series],
    *,
    ylabel: str,
) -> None:
    axes.set_ylabel(ylabel)
    plotted = False
    for spec in series:
        for track in TRACKS:
            values = np.array(
                [_value(m, spec.metric, track) for m in measurements], dtype=np.float64
            )
            if not np.isfinite(values).any():
                continue
            x, y = _break_gaps(times, values * spec.scale)
            axes.plot(
                x,
                y,
                color=COLOURS[track],
                linewidth=LINE_WIDTH[track] * (0.8 if spec.dashed else 1.0),
                linestyle=(0, (4, 2)) if spec.dashed else "-",
                label=f"{track}{spec.suffix}",
                gid=f"{spec.metric}:{track}",
                # The canary is what is on trial: draw it over stable where they overlap.
                zorder=3 if track == "canary" else 2,
            )
            lone = _lone_points(y)
            if lone:
                # A value between two gaps would be a zero-length line: give it a dot.
                axes.plot(
                    x[lone],
                    y[lone],
                    linestyle="none",
                    marker="o",
                    markersize=3,
                    color=COLOURS[track],
                    label="_nolegend_",
                    gid=f"{spec.metric}:{track}:lone",
                    zorder=3 if track == "canary" else 2,
                )
            plotted = True
    if plotted:
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9)
    else:
        axes.set_yticks([])
        axes.text(
            0.5,
            0.5,
            NO_DATA,
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color="0.4",
            gid=NO_DATA_GID,
        )


def _value(measurement: Measurement, metric: str, track: Track) -> float:
    value = measurement.get(metric).of(track)
    return np.nan if value is None else value


def _break_gaps(times: Array, values: Array) -> tuple[Array, Array]:
    """Insert a NaN where ticks are missing, so the line is not drawn across the pause."""
    if len(times) < 3:
        return times, values
    spacing = np.diff(times)
    usual = float(np.median(spacing))
    if usual <= 0:
        return times, values
    after = np.flatnonzero(spacing > GAP_FACTOR * usual)
    if not len(after):
        return times, values
    middles = times[after] + spacing[after] / 2
    return np.insert(times, after + 1, middles), np.insert(values, after + 1, np.nan)


def _lone_points(values: Array) -> list[int]:
    present = np.isfinite(values)
    before = np.concatenate(([False], present[:-1]))
    after = np.concatenate((present[1:], [False]))
    return [int(i) for i in np.flatnonzero(present & ~before & ~after)]


def _time_range(
    measurements: Sequence[Measurement], steps: Sequence[StepMark], now: datetime | None
) -> tuple[datetime | None, datetime | None]:
    instants = [m.at for m in measurements] + [mark.at for mark in steps]
    if now is not None:
        instants.append(now)
    if not instants:
        return None, None
    start, end = min(instants), max(instants)
    if start == end:
        return start - LONE_INSTANT_MARGIN, end + LONE_INSTANT_MARGIN
    return start, end


def _label_side(x: float, *, start: datetime | None, end: datetime | None) -> str:
    """Labels sit after their line (in the step they name), unless that is off the chart."""
    if start is None or end is None:
        return "left"
    first, last = chart_x(start), chart_x(end)
    return "right" if x > first + (last - first) * 0.9 else "left"


def _time_label(start: datetime | None, end: datetime | None) -> str:
    # HH:MM:SS alone is ambiguous over midnight: name the day(s) once.
    if start is None or end is None:
        return "time (UTC)"
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    days = first.isoformat() if first == last else f"{first.isoformat()} \u2013 {last.isoformat()}"
    return f"time (UTC), {days}"


def _audit_view(raw: Any) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    view = json.loads(raw) if isinstance(raw, str) else raw
    return view if isinstance(view, Mapping) else None


def _step_label(view: Mapping[str, Any], weight: float) -> str:
    shown = f"{round(weight, 1):g}%"
    phase = view.get("phase")
    if phase in ("rolling_back", "rolled_back", "failed"):
        return f"rollback: {shown}"
    if phase in ("promoting", "succeeded"):
        return f"promotion: {shown}"
    return f"step {view.get('step')}: {shown}"
