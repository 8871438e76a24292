"""Fake ports for driving the engine and the outbox sender without servers.

The engine talks to the world only through `TrafficRouter`, `Notifier` and `Clock`; these fakes
keep what a real cluster and a real Slack would keep (the cluster's state, the posted messages
with their keys), so a test can "crash" the bot and start a fresh engine on the same world.
`Crash` derives from BaseException on purpose: the engine's `except Exception` must not catch
it, exactly as it cannot catch a SIGKILL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from rollout.analysis import Analysis
from rollout.events import Alert, Event
from rollout.model import Rollout
from rollout.ports import RateLimited
from rollout.traffic.base import TrafficStatus

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Crash(BaseException):
    """The process dies here (not an error the bot could handle)."""


@dataclass
class FakeClock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class World:
    """What survives a crash: the cluster, Slack, and a counter of outside calls, so that a
    test can crash the bot at the n-th call of any kind."""

    crash_at: int | None = None
    calls: int = 0
    weight: int = 0
    canary: bool = False
    stable_image: str = "registry.example.com/shop/checkout:v1"
    posts: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (ts, what)
    posted: list[str] = field(default_factory=list)  # every post that landed, by key
    updates: int = 0
    rate_limit_next: int = 0
    rollback_fails: bool = False
    land_then_fail_next: int = 0
    log: list[str] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)  # titles of the charts uploaded

    def call(self, what: str) -> None:
        self.calls += 1
        self.log.append(what)
        if self.crash_at is not None and self.calls == self.crash_at:
            self.crash_at = None
            raise Crash(what)


class FakeRouter:
    def __init__(self, world: World) -> None:
        self.world = world

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        self.world.call("read stable")
        return "app", self.world.stable_image

    def prepare(self, rollout: Rollout) -> Rollout:
        self.world.call("create canary")
        self.world.canary = True
        return replace(rollout, original_replicas=4)

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        self.world.call(f"set weight {weight}")
        changed = self.world.weight != weight
        self.world.weight = weight
        return changed

    def status(self, rollout: Rollout) -> TrafficStatus:
        self.world.call("read status")
        return TrafficStatus(weight=float(self.world.weight), canary_ready=True, detail="ready")

    def drift(self, rollout: Rollout) -> str | None:
        return None  # nobody edits this world's workloads by hand

    def promote(self, rollout: Rollout) -> bool:
        self.world.call("promote")
        self.world.stable_image, self.world.canary, self.world.weight = (
            rollout.canary_image,
            False,
            0,
        )
        return True

    def rollback(self, rollout: Rollout) -> None:
        self.world.call("roll back")
        if self.world.rollback_fails:
            raise RuntimeError("admission webhook denied the request")
        self.world.canary, self.world.weight = False, 0


class FakeNotifier:
    """Slack as far as the sender can tell: posts land under their key; optionally a post is
    answered 429, or lands and then fails (a timeout after Slack acted)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def _post(self, key: str, what: str) -> str:
        self.world.call(f"post {key}")
        if self.world.rate_limit_next > 0:
            self.world.rate_limit_next -= 1
            raise RateLimited(10)
        ts = f"{len(self.world.posts) + 1}.000"
        self.world.posts[key] = (ts, what)
        self.world.posted.append(key)
        self.world.call(f"posted {key}")  # a crash here: in Slack, not yet recorded
        if self.world.land_then_fail_next > 0:
            self.world.land_then_fail_next -= 1
            raise TimeoutError("the answer never came")
        return ts

    def show_card(self, rollout: Rollout, *, key: str) -> str:
        if rollout.thread_ts is not None:
            self.world.call("update card")
            self.world.updates += 1
            return rollout.thread_ts
        return self._post(key, "card")

    def post_event(self, rollout: Rollout, event: Event, *, key: str) -> str:
        return self._post(key, type(event).__name__)

    def post_snapshot(self, rollout: Rollout, analysis: Analysis, *, title: str, key: str) -> str:
        return self._post(key, "snapshot")

    def upload_chart(self, rollout: Rollout, png: bytes, *, title: str, at: datetime) -> None:
        self.world.call(f"upload {title}")
        self.world.charts.append(title)

    def request_approval(self, rollout: Rollout, *, key: str) -> str:
        return self._post(key, "approval request")

    def close_approval(self, rollout: Rollout) -> None:
        self.world.call("close approval")
        self.world.updates += 1

    def alert(self, rollout: Rollout, alert: Alert, *, key: str) -> str:
        return self._post(key, f"alert: {alert.title}")

    def find_message(self, rollout: Rollout, key: str) -> str | None:
        self.world.call(f"find {key}")
        found = self.world.posts.get(key)
        return found[0] if found else None
