"""Background work steps aside for an acknowledgement in flight at each Kubernetes call.

`bench/ack.py` found the slowest rounds of `/canary status` during a rollout where a step's work
(several Kubernetes calls, with the CPU of building and decoding each) ran into a burst of
requests. A unit of background work already waits for the burst before it starts
(bot/foreground.py); the runtime's call hook makes it wait again before each of its calls.
"""

from __future__ import annotations

import threading

import pytest

from bot.foreground import Foreground
from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from tests.scenario.test_rollout_flow import wait_until


@pytest.mark.timeout(60)
def test_a_kubernetes_call_of_background_work_waits_for_the_answer_in_flight(
    sandbox: Sandbox,
) -> None:
    runtime = sandbox.runtime
    assert runtime is not None
    sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    [rollout] = wait_until(lambda: runtime.store.active(), timeout=20, what="the rollout")
    runtime.drain()  # the start's work after its acknowledgement
    runtime.engine.drain()
    # A bound far beyond the test: only the answer going out may release the call. The
    # scheduler's beat and the senders keep the foreground they were built with, and no work
    # after an acknowledgement is queued from here on: what waits on this one waits in the
    # runtime's Kubernetes call hook.
    runtime.foreground = Foreground(max_wait=60.0)
    in_flight, answer = threading.Event(), threading.Event()

    def request() -> None:
        with runtime.foreground.serving():
            in_flight.set()
            assert answer.wait(20)

    requester = threading.Thread(target=request)
    requester.start()
    assert in_flight.wait(10)
    tick = threading.Thread(target=runtime.engine.tick, args=(rollout.id,))
    tick.start()
    # The tick's call, or that of a beat ticking the same rollout (the tick then waits for
    # the beat's tick to finish first).
    wait_until(
        lambda: runtime.foreground.waiting >= 1,
        timeout=10,
        what="a Kubernetes call to wait for the answer",
    )
    calls = sum(sandbox.kube.requests().values())
    answer.set()
    requester.join(10)
    tick.join(20)
    assert not tick.is_alive()
    assert sum(sandbox.kube.requests().values()) > calls  # its calls went out once answered
    assert runtime.foreground.in_flight == 0 and runtime.foreground.waiting == 0
