"""Who may do what: release channels, deployers, approvers (users and Slack user groups).

Group membership comes from `usergroups.users.list` and is cached for a while, so a burst of
commands costs one Slack call per group, and a click is still answered within Slack's 3 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)


class Directory:
    def __init__(self, client: WebClient, *, ttl_seconds: float = 300.0) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(group)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        try:
            response = self._client.usergroups_users_list(usergroup=group)
            users = frozenset(response.get("users") or ())
        except SlackApiError as error:
            log.warning("cannot list members of %s: %s", group, error.response.get("error"))
            # An unreadable group grants nothing; a stale answer is better than none.
            return cached[1] if cached else frozenset()
        with self._lock:
            self._cache[group] = (now, users)
        return users

    def is_among(self, user: str, principals: Sequence[str]) -> bool:
        """True if `user` is listed, or is in a listed group. An empty list admits anyone."""
        if not principals:
            return True
        if user in principals:
            return True
        return any(
            user in self.members(principal) for principal in principals if principal[0] == "S"
        )


def channel_allowed(channel: str, release_channels: Sequence[str]) -> bool:
    return not release_channels or channel in release_channels


def describe_principals(principals: Sequence[str]) -> str:
    return ", ".join(f"<!subteam^{p}>" if p.startswith("S") else f"<@{p}>" for p in principals)
