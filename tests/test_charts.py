"""The rollout chart: what a reader of the thread can see in it, and that it renders anywhere.

Most tests inspect the `Figure` from `build_figure` (lines, markers, notes) rather than
pixels; a few decode the PNG from `rollout_chart`, which is what Slack receives.
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from PIL import Image

from handlers.charts import (
    COLOURS,
    NO_DATA_GID,
    STEP_GID,
    STEP_LABEL_GID,
    StepMark,
    build_figure,
    chart_title,
    chart_x,
    rollout_chart,
    step_marks_from_audit,
)
from rollout.analysis import Measurement, TrackValues
from rollout.model import Phase, Rollout
from rollout.store import SqliteStore
from tests.builders import rollout

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=30)
TITLE = "checkout: registry:5000/shop/checkout:v1 \u2192 registry:5000/shop/checkout:v2"


def measurement(
    index: int,
    *,
    error: tuple[float | None, float | None] = (0.004, 0.001),
    latency: tuple[float | None, float | None] = (130.0, 120.0),
    p99: tuple[float | None, float | None] | None = None,
) -> Measurement:
    values = {
        "error_rate": TrackValues(*error),
        "latency_avg_ms": TrackValues(*latency),
        "request_rate": TrackValues(3.0, 27.0),
    }
    if p99 is not None:
        values["latency_p99_ms"] = TrackValues(*p99)
    return Measurement(at=START + index * TICK, values=values)


def series(count: int) -> list[Measurement]:
    return [measurement(i) for i in range(count)]


STEPS = (
    StepMark(at=START, weight=5.0, label="step 1: 5%"),
    StepMark(at=START + 10 * TICK, weight=25.0, label="step 2: 25%"),
    StepMark(at=START + 20 * TICK, weight=50.0, label="step 3: 50%"),
)


def figure(
    measurements: list[Measurement],
    steps: tuple[StepMark, ...] = STEPS,
    now: datetime | None = None,
) -> Figure:
    return build_figure(measurements=measurements, steps=steps, title=TITLE, now=now)


def data_line(axes_index: int, fig: Figure, gid: str) -> Line2D:
    [line] = [line for line in fig.axes[axes_index].get_lines() if line.get_gid() == gid]
    return line


def texts(fig: Figure, axes_index: int, gid: str) -> list[Text]:
    return [text for text in fig.axes[axes_index].texts if text.get_gid() == gid]


def legend_labels(fig: Figure, axes_index: int) -> list[str]:
    legend = fig.axes[axes_index].get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_the_png_decodes_at_a_size_slack_shows_well() -> None:
    png = rollout_chart(measurements=series(40), steps=STEPS, title=TITLE, now=None)
    image = decode(png)
    assert image.format == "PNG"
    assert image.size[0] >= 1000
    assert image.size[1] >= 600


def test_both_tracks_are_drawn_in_both_panels_in_distinct_colours() -> None:
    fig = figure(series(40))
    error_axes, latency_axes = fig.axes
    assert error_axes.get_ylabel() == "error rate (%)"
    assert latency_axes.get_ylabel() == "latency (ms)"
    assert legend_labels(fig, 0) == ["canary", "stable"]
    assert legend_labels(fig, 1) == ["canary avg", "stable avg"]
    for index, metric in ((0, "error_rate"), (1, "latency_avg_ms")):
        canary = data_line(index, fig, f"{metric}:canary")
        stable = data_line(index, fig, f"{metric}:stable")
        assert canary.get_color() == COLOURS["canary"]
        assert stable.get_color() == COLOURS["stable"]
        assert canary.get_color() != stable.get_color()  # what is drawn, not the palette


def test_error_rate_is_shown_in_percent_and_latency_in_milliseconds() -> None:
    fig = figure(series(5))
    assert np.allclose(data_line(0, fig, "error_rate:canary").get_ydata(), 0.4)
    assert np.allclose(data_line(0, fig, "error_rate:stable").get_ydata(), 0.1)
    assert np.allclose(data_line(1, fig, "latency_avg_ms:canary").get_ydata(), 130.0)


def test_p99_latency_is_dashed_when_measured_and_absent_otherwise() -> None:
    with_p99 = figure([measurement(i, p99=(400.0, 300.0)) for i in range(10)])
    assert legend_labels(with_p99, 1) == ["canary avg", "stable avg", "canary p99", "stable p99"]
    for track in ("canary", "stable"):
        assert data_line(1, with_p99, f"latency_p99_ms:{track}").get_linestyle() == "--"
        assert data_line(1, with_p99, f"latency_avg_ms:{track}").get_linestyle() == "-"

    without = figure(series(10))
    gids = {line.get_gid() for line in without.axes[1].get_lines()}
    assert not any(str(gid).startswith("latency_p99_ms") for gid in gids)


def test_each_step_is_one_vertical_line_per_panel_with_its_label_once() -> None:
    fig = figure(series(30))
    for axes in fig.axes:
        markers = [line for line in axes.get_lines() if line.get_gid() == STEP_GID]
        assert [np.asarray(line.get_xdata())[0] for line in markers] == [
            chart_x(mark.at) for mark in STEPS
        ]
    assert [text.get_text().strip() for text in texts(fig, 0, STEP_LABEL_GID)] == [
        "step 1: 5%",
        "step 2: 25%",
        "step 3: 50%",
    ]
    assert texts(fig, 1, STEP_LABEL_GID) == []


def test_missing_values_are_gaps_not_interpolated() -> None:
    measurements = series(12)
    measurements[4] = measurement(4, error=(None, 0.001), latency=(None, None))
    measurements[5] = measurement(5, error=(None, 0.001), latency=(None, None))
    fig = figure(measurements)

    canary = np.asarray(data_line(0, fig, "error_rate:canary").get_ydata(), dtype=float)
    assert np.isnan(canary[[4, 5]]).all()
    assert np.isfinite(np.delete(canary, [4, 5])).all()
    assert np.isfinite(data_line(0, fig, "error_rate:stable").get_ydata()).all()
    latency = np.asarray(data_line(1, fig, "latency_avg_ms:stable").get_ydata(), dtype=float)
    assert np.isnan(latency[[4, 5]]).all()


def test_a_tick_never_measured_breaks_the_line() -> None:
    # The bot was down for ten minutes between tick 9 and tick 30.
    measurements = series(10) + [measurement(i) for i in range(30, 40)]
    line = data_line(0, figure(measurements), "error_rate:canary")
    x = np.asarray(line.get_xdata(), dtype=float)
    y = np.asarray(line.get_ydata(), dtype=float)
    [gap] = np.flatnonzero(np.isnan(y))
    assert chart_x(START + 9 * TICK) < x[gap] < chart_x(START + 30 * TICK)
    assert np.isfinite(np.delete(y, gap)).all()


def test_a_value_between_two_gaps_is_still_visible_as_a_dot() -> None:
    measurements = [measurement(i, error=(None if i in (3, 5) else 0.002, 0.001)) for i in range(8)]
    fig = figure(measurements)
    [dot] = [line for line in fig.axes[0].get_lines() if line.get_gid() == "error_rate:canary:lone"]
    assert list(np.asarray(dot.get_xdata())) == [chart_x(START + 4 * TICK)]
    assert dot.get_marker() == "o"
    assert dot.get_label() == "_nolegend_"


def test_no_measurements_render_a_valid_png_saying_no_data() -> None:
    fig = figure([], steps=())
    for index in (0, 1):
        [note] = texts(fig, index, NO_DATA_GID)
        assert note.get_text() == "no data"
        assert note.get_position() == (0.5, 0.5)
    image = decode(rollout_chart(measurements=[], steps=[], title=TITLE))
    assert image.size[0] >= 600
    assert image.size[1] >= 300


def test_only_the_panel_without_values_says_no_data() -> None:
    fig = figure([measurement(i, latency=(None, None)) for i in range(10)])
    assert texts(fig, 0, NO_DATA_GID) == []
    assert len(texts(fig, 1, NO_DATA_GID)) == 1
    assert fig.axes[1].get_legend() is None
    assert legend_labels(fig, 0) == ["canary", "stable"]


def test_time_axis_is_utc_and_reaches_now() -> None:
    # Measured in a +02:00 zone: the axis still reads UTC.
    local = timezone(timedelta(hours=2))
    measurements = [
        Measurement(at=(START + i * TICK).astimezone(local), values=m.values)
        for i, m in enumerate(series(10))
    ]
    now = START + timedelta(minutes=15)
    fig = figure(measurements, now=now)
    latency_axes = fig.axes[1]
    formatter = latency_axes.xaxis.get_major_formatter()
    assert formatter(chart_x(START + timedelta(seconds=45))) == "12:00:45"
    assert latency_axes.get_xlim() == (chart_x(START), chart_x(now))
    assert latency_axes.get_xlabel() == "time (UTC), 2024-05-01"


def test_title_names_the_service_and_both_images() -> None:
    rollout = make_rollout()
    title = chart_title(rollout)
    assert title == "checkout: registry:5000/shop/checkout:v1 \u2192 registry:5000/shop/checkout:v2"
    fig = build_figure(measurements=series(3), steps=(), title=title)
    assert fig.get_suptitle() == title


def test_step_marks_without_timezone_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        StepMark(at=datetime(2024, 5, 1, 12, 0), weight=5.0, label="step 1: 5%")


def test_two_threads_rendering_at_once_get_the_same_charts_as_one_thread() -> None:
    jobs = [
        partial(rollout_chart, measurements=series(200), steps=STEPS, title=TITLE),
        partial(rollout_chart, measurements=series(20), steps=STEPS[:1], title="payments: a"),
    ]
    expected = [job() for job in jobs]
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def render(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = jobs[index]()
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=render, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [results[i] for i in range(len(jobs))] == expected


def test_step_marks_come_from_each_change_of_the_weight_in_the_audit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "canary.db")
    try:
        rollout = make_rollout()
        store.create(rollout, actor="U01ALICE")
        history: list[tuple[datetime, dict[str, Any]]] = [
            (START, {"phase": Phase.PROGRESSING, "step_index": 0}),  # asked, not yet in effect
            (START + TICK, {"weight": 5.0}),
            (START + 2 * TICK, {"step_index": 1}),
            (START + 3 * TICK, {"weight": 25.0}),
            (START + 4 * TICK, {"phase": Phase.PAUSED}),  # no weight change: no mark
            (START + 5 * TICK, {"phase": Phase.ROLLING_BACK, "weight": 0.0}),
        ]
        for at, changes in history:
            after = rollout.evolve(now=at, **changes)
            store.save(rollout, after, actor="canary-bot", action="tick")
            saved = store.get(rollout.id)  # at the row's new version: the next save starts here
            assert saved is not None
            rollout = saved
        marks = step_marks_from_audit(store.audit_rows(rollout.id))
    finally:
        store.close()
    assert marks == [
        StepMark(at=START + TICK, weight=5.0, label="step 1: 5%"),
        StepMark(at=START + 3 * TICK, weight=25.0, label="step 2: 25%"),
        StepMark(at=START + 5 * TICK, weight=0.0, label="rollback: 0%"),
    ]


def make_rollout() -> Rollout:
    return rollout(id="r-chart", at=START - timedelta(minutes=1))
