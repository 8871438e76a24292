"""The small protocols through which the domain reaches the outside world.

`bot/` wires each to a real implementation (Slack WebClient, the kubernetes client, SQLite,
the wall clock); tests wire the same real implementations to emulators, and only the clock is
ever replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from rollout.analysis import Analysis
from rollout.events import Alert, Event
from rollout.model import Rollout


class RateLimited(Exception):
    """The chat service asked us to wait `retry_after` seconds before calling again.

    Raised by a `Notifier` instead of sleeping: the sender honours the wait on its own
    schedule, so a rate limit never holds a tick or a request thread.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:g}s")
        self.retry_after = retry_after


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Notifier(Protocol):
    """Tells the team. Every post carries `key` in its metadata, so that after a crash the
    bot can find out whether a post it was making had landed (`find_message`)."""

    def show_card(self, rollout: Rollout, *, key: str) -> str:
        """Post the status card (first call) or update it in place; returns the root `ts`."""
        ...

    def post_event(self, rollout: Rollout, event: Event, *, key: str) -> str:
        """A reply in the rollout's thread; returns its `ts`."""
        ...

    def post_snapshot(self, rollout: Rollout, analysis: Analysis, *, title: str, key: str) -> str:
        """Canary vs stable per metric with each rule's verdict, as a table in the thread."""
        ...

    def upload_chart(self, rollout: Rollout, png: bytes, *, title: str, at: datetime) -> None:
        """The snapshot's chart (PNG), shared into the rollout's thread."""
        ...

    def request_approval(self, rollout: Rollout, *, key: str) -> str:
        """The approval message with buttons, in the thread; returns its `ts`."""
        ...

    def close_approval(self, rollout: Rollout) -> None:
        """Replace the approval buttons with who decided (or why the question is moot)."""
        ...

    def alert(self, rollout: Rollout, alert: Alert, *, key: str) -> str:
        """Page on-call, top-level in the alert channel, linking the rollout's thread."""
        ...

    def find_message(self, rollout: Rollout, key: str) -> str | None:
        """The `ts` of a message this rollout posted under `key`, if Slack has it."""
        ...
