"""The small protocols through which the domain reaches the outside world.

`bot/` wires each to a real implementation (Slack WebClient, the kubernetes client, SQLite,
the wall clock); tests wire the same real implementations to emulators, and only the clock is
ever replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from rollout.analysis import Analysis, Measurement
from rollout.events import Alert, Event
from rollout.model import Rollout


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Notifier(Protocol):
    """Tells the team. Every method is safe to call again with the same arguments."""

    def show_card(self, rollout: Rollout) -> str:
        """Post the status card (first call) or update it in place; returns the root `ts`."""
        ...

    def post_event(self, rollout: Rollout, event: Event) -> None:
        """A reply in the rollout's thread."""
        ...

    def post_snapshot(
        self,
        rollout: Rollout,
        analysis: Analysis,
        *,
        title: str,
        history: Sequence[Measurement],
    ) -> None:
        """Canary vs stable per metric with each rule's verdict, and a chart, in the thread."""
        ...

    def request_approval(self, rollout: Rollout) -> str:
        """The approval message with buttons, in the thread; returns its `ts`."""
        ...

    def close_approval(self, rollout: Rollout) -> None:
        """Replace the approval buttons with who decided (or why the question is moot)."""
        ...

    def alert(self, rollout: Rollout, alert: Alert) -> None:
        """Page on-call, top-level in the alert channel, linking the rollout's thread."""
        ...
