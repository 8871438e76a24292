"""Slack's per-method rate limits, enforced the way Slack does: 429 with `Retry-After`.

Off unless a test sets `SlackEmulator.limits`. Two limits matter to a bot that posts and edits
at scale: `chat.update` is Tier 3 (about 50 calls a minute per workspace) and
`chat.postMessage` allows about one message a second per channel. A call over the limit is
refused with HTTP 429, `{"ok": false, "error": "ratelimited"}` and `Retry-After` in whole
seconds, and is not counted. Time comes from `clock` (monotonic seconds), so a test can move
it by hand instead of waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 60.0


@dataclass(kw_only=True)
class SlackRateLimits:
    chat_update_per_minute: int = 50
    post_message_per_channel_per_second: float = 1.0
    clock: Callable[[], float] = time.monotonic
    refused: int = field(default=0, init=False)  # 429s answered so far
    _updates: deque[float] = field(default_factory=deque, init=False, repr=False)
    _last_post: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def admit(self, method: str, args: Mapping[str, Any]) -> int | None:
        """None when the call may go (it is counted), else the Retry-After in seconds."""
        with self._lock:
            now = self.clock()
            if method == "chat.update":
                wait = self._update_wait(now)
            elif method == "chat.postMessage":
                wait = self._post_wait(str(args.get("channel") or ""), now)
            else:
                return None
            if wait is not None:
                self.refused += 1
            return wait

    def _update_wait(self, now: float) -> int | None:
        while self._updates and self._updates[0] <= now - WINDOW_S:
            self._updates.popleft()
        if len(self._updates) >= self.chat_update_per_minute:
            return max(1, math.ceil(self._updates[0] + WINDOW_S - now))
        self._updates.append(now)
        return None

    def _post_wait(self, channel: str, now: float) -> int | None:
        spacing = 1.0 / self.post_message_per_channel_per_second
        last = self._last_post.get(channel)
        if last is not None and now - last < spacing:
            return max(1, math.ceil(last + spacing - now))
        self._last_post[channel] = now
        return None
