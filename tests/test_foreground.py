"""Background work waits for the acknowledgements in flight (bot/foreground.py), but never for
longer than its bound: a steady stream of requests cannot hold a tick back."""

from __future__ import annotations

import threading
import time

from bot.foreground import Foreground, after_acks


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_background_work_starts_once_the_answer_in_flight_is_out() -> None:
    # A bound far beyond the test: only the answer going out may release the work.
    foreground = Foreground(max_wait=60.0)
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
    _until(lambda: foreground.waiting == 1, "the tick to wait")
    assert order == []  # asked for while the request was in flight, and held
    answer.set()
    requester.join(10)
    tick.join(10)
    assert order == ["answered", "tick"]
    assert foreground.in_flight == 0 and foreground.waiting == 0


def test_the_last_answer_of_a_burst_releases_every_waiting_unit_at_once() -> None:
    # Woken by the answers going out, not found by looking: nothing is released while one
    # request of the burst is still in flight, and all are released when the last one is.
    foreground = Foreground(max_wait=60.0)
    started: list[str] = []
    leaving = [threading.Event() for _ in range(3)]
    inside = threading.Semaphore(0)

    def request(index: int) -> None:
        with foreground.serving():
            inside.release()
            assert leaving[index].wait(10)

    requests = [threading.Thread(target=request, args=(i,)) for i in range(3)]
    for thread in requests:
        thread.start()
    for _ in requests:
        assert inside.acquire(timeout=10)
    units = [
        threading.Thread(target=after_acks(foreground, lambda n=n: started.append(n)))
        for n in ("tick", "message", "chart")
    ]
    for thread in units:
        thread.start()
    _until(lambda: foreground.waiting == 3, "three units to wait")
    leaving[0].set()
    leaving[1].set()
    requests[0].join(10)
    requests[1].join(10)
    assert foreground.in_flight == 1 and started == [] and foreground.waiting == 3
    leaving[2].set()
    for thread in [*requests, *units]:
        thread.join(10)
    assert sorted(started) == ["chart", "message", "tick"]


def test_nothing_in_flight_means_no_wait_and_a_busy_server_waits_only_the_bound() -> None:
    foreground = Foreground(max_wait=0.05)
    assert foreground.wait_quiet() == 0.0
    waited: list[float] = []
    with foreground.serving(), foreground.serving():
        background = threading.Thread(target=lambda: waited.append(foreground.wait_quiet()))
        background.start()
        background.join(10)
        # It returned although both requests are still in flight.
        assert waited[0] >= 0.05 and foreground.in_flight == 2 and foreground.waiting == 0
    assert foreground.in_flight == 0


def test_a_thread_answering_a_request_never_waits_for_the_requests_in_flight() -> None:
    # Its own request is one of them: waiting would only add the bound to its answer.
    foreground = Foreground(max_wait=0.05)
    other_in_flight, done = threading.Event(), threading.Event()

    def other_request() -> None:
        with foreground.serving():
            other_in_flight.set()
            assert done.wait(10)

    other = threading.Thread(target=other_request)
    other.start()
    assert other_in_flight.wait(10)
    try:
        with foreground.serving():
            assert foreground.wait_quiet() == 0.0
        # Once answered, the same thread waits for the other request like any background work.
        assert foreground.wait_quiet() >= 0.05
    finally:
        done.set()
        other.join(10)
    assert foreground.in_flight == 0 and foreground.waiting == 0


def test_a_request_that_fails_still_leaves_the_count() -> None:
    foreground = Foreground()
    try:
        with foreground.serving():
            raise RuntimeError("the handler failed")
    except RuntimeError:
        pass
    assert foreground.in_flight == 0 and foreground.wait_quiet() == 0.0
