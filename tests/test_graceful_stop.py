"""A graceful stop is bounded as a whole: a part stuck on work in flight is named with the
parts after it, and the stop returns at its deadline (bot/shutdown.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from bot.shutdown import StopSteps


def test_every_step_runs_in_order_and_none_is_left() -> None:
    order: list[str] = []
    steps = [(name, lambda name=name: order.append(name)) for name in ("beat", "sender", "store")]

    assert StopSteps(steps).run(deadline=10) == []
    assert order == ["beat", "sender", "store"]


def test_a_stuck_step_is_named_and_the_stop_returns_at_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = threading.Event()
    after: list[str] = []
    steps = [
        ("beat", lambda: None),
        ("ticks and gates", lambda: stuck.wait(60)),
        ("store", lambda: after.append("store")),
    ]
    try:
        with caplog.at_level(logging.WARNING, logger="bot.shutdown"):
            unfinished = StopSteps(steps).run(deadline=2)
    finally:
        stuck.set()
    assert unfinished == ["ticks and gates", "store"]
    assert "still waiting on: ticks and gates, store" in caplog.text


def test_a_step_that_fails_does_not_keep_the_later_ones_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    def broken() -> None:
        raise RuntimeError("socket already closed")

    steps = [("directory", broken), ("store", lambda: closed.append("store"))]
    with caplog.at_level(logging.ERROR, logger="bot.shutdown"):
        assert StopSteps(steps).run(deadline=10) == []
    assert closed == ["store"]
    assert "stopping directory failed" in caplog.text
