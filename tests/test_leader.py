"""Leader election on a Lease, through the official client against the Kubernetes emulator.

Short timings (a 1.5 s lease) keep each test to a few seconds; every wait is a poll of what
the electors report, with a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from bot.config_loader import ConfigError, load_config_text
from bot.kube import without_retries
from emulators.kube import KubeEmulator
from rollout.leader import Elector, Timing
from rollout.lease import LeaseLock

TIMING = Timing(
    lease_duration=timedelta(seconds=1.5),
    renew_deadline=timedelta(seconds=1.0),
    retry_period=timedelta(seconds=0.2),
)


class Replica:
    """One candidate with its own client (its User-Agent names it) and a log of events."""

    def __init__(self, kube: KubeEmulator, name: str, events: list[tuple[str, str]]) -> None:
        self.api = without_retries(kube.api_client())
        self.api.user_agent = f"canary-bot ({name})"
        self.name = name
        self.events = events
        lock = LeaseLock(self.api, name="canary-bot", namespace="default")
        self.elector = Elector(
            lock,
            identity=name,
            timing=TIMING,
            on_started=lambda: events.append(("leads", name)),
            on_stopped=lambda: events.append(("steps down", name)),
        )


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
def replicas(kube: KubeEmulator) -> Iterator[Callable[[str], Replica]]:
    made: list[Replica] = []
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def make(name: str) -> Replica:
        with lock:
            replica = Replica(kube, name, events)
            made.append(replica)
        return replica

    yield make
    for replica in made:
        replica.elector.stop()
        replica.api.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def holder(kube: KubeEmulator) -> str | None:
    lease = kube.get("coordination.k8s.io/v1", "Lease", "default", "canary-bot")
    return None if lease is None else lease["spec"].get("holderIdentity")


def test_one_leader_and_a_handover_when_it_stops(
    kube: KubeEmulator, replicas: Callable[[str], Replica]
) -> None:
    a = replicas("pod-a")
    a.elector.start()
    wait_for(lambda: a.elector.leading, "pod-a to lead")
    b, c = replicas("pod-b"), replicas("pod-c")
    b.elector.start()
    c.elector.start()
    wait_for(lambda: b.elector.holder == "pod-a" and c.elector.holder == "pod-a", "followers")
    assert not b.elector.leading and not c.elector.leading
    lease = kube.get("coordination.k8s.io/v1", "Lease", "default", "canary-bot")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 0

    a.elector.stop()  # hands the Lease back
    wait_for(lambda: b.elector.leading or c.elector.leading, "a new leader")
    assert [b.elector.leading, c.elector.leading].count(True) == 1
    new = "pod-b" if b.elector.leading else "pod-c"
    wait_for(lambda: holder(kube) == new, "the Lease to name the new leader")
    lease = kube.get("coordination.k8s.io/v1", "Lease", "default", "canary-bot")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1


def test_a_leader_cut_off_steps_down_before_another_takes_over(
    kube: KubeEmulator, replicas: Callable[[str], Replica]
) -> None:
    a = replicas("pod-a")
    a.elector.start()
    wait_for(lambda: a.elector.leading, "pod-a to lead")
    b = replicas("pod-b")
    b.elector.start()
    wait_for(lambda: b.elector.holder == "pod-a", "pod-b to see pod-a lead")
    events = a.events

    kube.faults.cut_off("(pod-a)")
    wait_for(lambda: ("leads", "pod-b") in events, "pod-b to take over")
    # pod-a stopped leading (renew deadline) before pod-b could start (lease duration).
    assert events == [("leads", "pod-a"), ("steps down", "pod-a"), ("leads", "pod-b")]
    assert not a.elector.leading and b.elector.leading
    assert holder(kube) == "pod-b"
    assert kube.faults.refused > 0

    # Reconnected, the old leader does not campaign again: it is done (its process restarts).
    kube.faults.reconnect()
    wait_for(lambda: holder(kube) == "pod-b" and b.elector.leading, "pod-b to keep leading")
    assert not a.elector.leading


def test_two_candidates_never_both_take_a_free_lease(
    kube: KubeEmulator, replicas: Callable[[str], Replica]
) -> None:
    candidates = [replicas(f"pod-{n}") for n in range(4)]
    for candidate in candidates:
        candidate.elector.start()
    wait_for(lambda: any(c.elector.leading for c in candidates), "a leader")
    wait_for(
        lambda: all(c.elector.holder is not None for c in candidates), "everyone to see the Lease"
    )
    leaders = [c.name for c in candidates if c.elector.leading]
    assert len(leaders) == 1
    assert holder(kube) == leaders[0]


def test_lease_settings_out_of_order_are_refused_with_the_rule() -> None:
    base = (
        "slack: {release_channels: [C0RELEASES]}\nha: {lease_duration: 10s, renew_deadline: 10s}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(base)
    assert "retry_period < renew_deadline < lease_duration" in str(caught.value)
    assert "like 2s, 10s, 15s" in str(caught.value)
    config = load_config_text("slack: {release_channels: [C0RELEASES]}\n")
    assert (config.ha.lease_duration, config.ha.renew_deadline, config.ha.retry_period) == (
        timedelta(seconds=15),
        timedelta(seconds=10),
        timedelta(seconds=2),
    )
