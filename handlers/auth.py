"""Who may do what: release channels, deployers, approvers (users and Slack user groups).

Group membership comes from `usergroups.users.list`, but never while Slack waits for an
acknowledgement: a rate-limited or unreachable Slack would hold the answer past Slack's 3 s
(the WebClient sleeps on `Retry-After`) or turn it into a 500. So checks read only what a
background refresher last fetched, and a membership fetched longer ago than
`slack.group_cache_max_age` grants nothing: a person removed from a group loses the right at
most that long after, even while Slack cannot be asked. A check that finds a group unknown or
ageing asks for a refresh, which the refresher makes after the HTTP answer has gone out
(`wake`, called when the response is closed) or at its next periodic round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from slack_sdk import WebClient

from handlers.blocks.common import human_duration
from rollout.ports import Clock

log = logging.getLogger(__name__)

# How often the refresher looks for groups to refresh, at most (real time).
_ROUND_MAX = timedelta(seconds=60)


@dataclass(frozen=True)
class Verdict:
    """Whether a person is among some principals; `unconfirmed` names the groups that might
    have admitted them but whose membership is unknown or older than the maximum age."""

    allowed: bool
    unconfirmed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


class Directory:
    def __init__(
        self,
        client: WebClient,
        *,
        clock: Clock,
        max_age: timedelta = timedelta(minutes=10),
        groups: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._clock = clock
        self.max_age = max_age
        self._groups = {group for group in groups if group.startswith("S")}
        self._cache: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- checks (no I/O)

    def check(self, user: str, principals: Sequence[str]) -> Verdict:
        """`user` listed, or in a listed group whose membership is fresh. An empty list admits
        anyone. Reads memory only: safe before the acknowledgement."""
        if not principals or user in principals:
            return Verdict(True)
        unconfirmed: list[str] = []
        now = self._clock.now()
        for group in (p for p in principals if p.startswith("S")):
            members = self._fresh(group, now=now)
            if members is None:
                unconfirmed.append(group)
            elif user in members:
                return Verdict(True)
        return Verdict(False, tuple(unconfirmed))

    def is_among(self, user: str, principals: Sequence[str]) -> bool:
        return self.check(user, principals).allowed

    def _fresh(self, group: str, *, now: datetime) -> frozenset[str] | None:
        with self._lock:
            cached = self._cache.get(group)
            age = now - cached[0] if cached else None
            if age is None or age >= self.max_age / 2:
                self._wanted.add(group)  # fetched after the answer has gone out
            if cached is None or age is None or age >= self.max_age:
                return None
            return cached[1]

    def unconfirmed_text(self, groups: Sequence[str]) -> str:
        """The refusal's explanation when a group could not be read lately."""
        names = ", ".join(f"<!subteam^{group}>" for group in groups)
        return (
            f"membership of {names} could not be confirmed in the last "
            f"{human_duration(self.max_age)}; try again shortly."
        )

    # ----------------------------------------------------------------- background refresh

    def start(self) -> None:
        """One round now (start-up is no acknowledgement path, and the first commands should
        find the groups known), then the background rounds."""
        self.refresh_due()
        self._thread = threading.Thread(target=self._run, name="group-refresher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        # A refresh may be asleep on Slack's Retry-After: the daemon thread is not waited for
        # long, and it writes nothing but this cache.
        if self._thread is not None:
            self._thread.join(timeout=2)

    def wake(self) -> None:
        """Refresh what checks asked for now; called once an HTTP answer has been sent."""
        with self._lock:
            wanted = bool(self._wanted)
        if wanted:
            self._wake.set()

    def _run(self) -> None:
        round_seconds = min(self.max_age / 4, _ROUND_MAX).total_seconds()
        while not self._stopping.is_set():
            self.refresh_due()
            self._wake.wait(timeout=round_seconds)
            self._wake.clear()

    def refresh_due(self) -> None:
        """Fetch every group a check asked for, and every configured group past half its age."""
        now = self._clock.now()
        with self._lock:
            ageing = {
                group
                for group in self._groups
                if group not in self._cache or now - self._cache[group][0] >= self.max_age / 2
            }
            due, self._wanted = self._wanted | ageing, set()
        for group in sorted(due):
            if self._stopping.is_set():
                return
            self._refresh(group)

    def _refresh(self, group: str) -> None:
        try:
            response = self._client.usergroups_users_list(usergroup=group)
            users = frozenset(response.get("users") or ())
        except Exception as error:
            log.warning("cannot list members of %s: %s", group, type(error).__name__)
            return
        with self._lock:
            self._cache[group] = (self._clock.now(), users)


def channel_allowed(channel: str, release_channels: Sequence[str]) -> bool:
    return not release_channels or channel in release_channels


def describe_principals(principals: Sequence[str]) -> str:
    return ", ".join(f"<!subteam^{p}>" if p.startswith("S") else f"<@{p}>" for p in principals)
