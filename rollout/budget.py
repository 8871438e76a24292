"""The Slack budget: what the outbox may call, when, and which message goes first.

Slack limits each Web API method by tier, per workspace (chat.update: Tier 3, about 50 a
minute) or per channel (chat.postMessage: about one a second). At a thousand rollouts those
limits, not our CPU, are the wall: a sender that calls as fast as it can is answered 429 and
then waits for Slack, in no particular order. So the sender paces itself under the limits it
is configured with (`slack.rate_limits`), and when several messages are due it sends the most
urgent first: on-call pages and rollback notices, then step announcements and the other thread
messages, then card refreshes. Slack's own 429 (Retry-After) still closes a bucket for as long
as Slack asks.

Each bucket allows one call per `1 / rate` seconds (no burst), so the sender never goes over
the limit in any window; time is an injected monotonic clock, so tests move it by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollout.config import SlackRateLimits

# Priorities: lower goes first.
URGENT, THREAD, REFRESH = 0, 1, 2
# Events whose announcement is a rollback notice: as urgent as a page.
_ROLLBACK_EVENTS = frozenset({"RollbackStarted", "Alert"})
_ROLLBACK_PHASES = frozenset({"rolled_back", "failed"})

POST, UPDATE, UPLOAD = "chat.postMessage", "chat.update", "files.upload"
WORKSPACE = "*"


@dataclass(frozen=True)
class Call:
    """The Slack method a message costs and the scope its limit counts in."""

    method: str
    scope: str


def priority(key: str, entry: dict[str, Any]) -> int:
    """How urgent an outbox row is: pages and rollback notices, thread messages, refreshes."""
    kind = entry.get("kind")
    if kind == "page":
        return URGENT
    if kind == "announce":
        event = entry.get("event") or {}
        name = event.get("type")
        phase = (event.get("fields") or {}).get("phase")
        if name in _ROLLBACK_EVENTS or (name == "Finished" and phase in _ROLLBACK_PHASES):
            return URGENT
    if kind == "card" and key != "card":
        return REFRESH
    return THREAD


class SlackBudget:
    """One bucket per (method, scope): the earliest moment its next call may be made."""

    def __init__(
        self, limits: SlackRateLimits | None = None, *, monotonic: Callable[[], float]
    ) -> None:
        limits = limits or SlackRateLimits()
        self._spacing = {
            UPDATE: 60.0 / limits.chat_update_per_minute,
            POST: 1.0 / limits.post_message_per_channel_per_second,
            UPLOAD: 60.0 / limits.file_uploads_per_minute,
        }
        self._monotonic = monotonic
        self._next: dict[Call, float] = {}
        self._lock = threading.Lock()

    def wait(self, call: Call) -> float:
        """Seconds until `call` may be made (0: now)."""
        with self._lock:
            return max(0.0, self._next.get(call, 0.0) - self._monotonic())

    def spend(self, call: Call) -> None:
        """A call of this kind is being made now: the next one waits its spacing."""
        with self._lock:
            now = self._monotonic()
            start = max(now, self._next.get(call, 0.0))
            self._next[call] = start + self._spacing.get(call.method, 0.0)

    def refused(self, call: Call, *, retry_after: float) -> None:
        """Slack answered 429: nothing of this kind until Retry-After has passed."""
        with self._lock:
            until = self._monotonic() + retry_after
            self._next[call] = max(self._next.get(call, 0.0), until)
