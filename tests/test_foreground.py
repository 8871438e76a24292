"""Background work waits for the acknowledgements in flight (bot/foreground.py), but never for
longer than its bound: a steady stream of requests cannot hold a tick back."""

from __future__ import annotations

import threading
import time

from bot.foreground import Foreground, after_acks


def test_background_work_starts_once_the_answer_in_flight_is_out() -> None:
    polling = threading.Event()

    def sleep(seconds: float) -> None:
        polling.set()  # the work is held, waiting for the answer
        time.sleep(seconds)

    # A bound far beyond the test: only the answer going out may release the work.
    foreground = Foreground(max_wait=60.0, poll=0.001, sleep=sleep)
    order: list[str] = []
    in_flight, answer = threading.Event(), threading.Event()

    def request() -> None:
        with foreground.serving():
            in_flight.set()
            assert answer.wait(10)
            order.append("answered")

    requester = threading.Thread(target=request)
    requester.start()
    assert in_flight.wait(10)
    tick = threading.Thread(target=after_acks(foreground, lambda: order.append("tick")))
    tick.start()
    assert polling.wait(10) and order == []  # asked for while the request was in flight
    answer.set()
    requester.join(10)
    tick.join(10)
    assert order == ["answered", "tick"]
    assert foreground.in_flight == 0


def test_nothing_in_flight_means_no_wait_and_a_busy_server_waits_only_the_bound() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    foreground = Foreground(max_wait=0.2, poll=0.005, monotonic=lambda: now[0], sleep=sleep)
    assert foreground.wait_quiet() == 0.0 and now[0] == 0.0
    with foreground.serving(), foreground.serving():
        waited = foreground.wait_quiet()
        assert 0.2 <= waited < 0.21 and foreground.in_flight == 2
    assert foreground.in_flight == 0


def test_a_request_that_fails_still_leaves_the_count() -> None:
    foreground = Foreground()
    try:
        with foreground.serving():
            raise RuntimeError("the handler failed")
    except RuntimeError:
        pass
    assert foreground.in_flight == 0 and foreground.wait_quiet() == 0.0
