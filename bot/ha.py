"""Several replicas on one PostgreSQL database, one leader on a Lease (DESIGN.md "High
availability").

Every replica answers Slack and `/readyz`; a command taken by a follower is decided and saved
(optimistic concurrency on the rollout's version) and acknowledged there. Only the leader acts:
it ticks, sends the outbox, and every `retry_period` picks up the decisions other replicas
saved (`Engine.pick_up`), so a follower's command reaches the cluster within one
`retry_period` (2 s by default) plus the tick itself.

On taking the Lease the leader takes a fencing token from the database (`take_leadership`)
and fences its store with it, so that once another replica has taken over no write of this
one is accepted, even before it notices it lost the Lease. Then it reconciles, and only then
starts the beat, the sender and the pick-up poll. A leader that cannot renew within
`renew_deadline` steps down at once: `on_lost` (in `canary-bot serve`, the process exits and
Kubernetes restarts it as a follower; a fenced store cannot serve a follower's writes).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from kubernetes import client as k8s
from sqlalchemy.engine import make_url
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from rollout.analysis import Analysis
from rollout.config import HaConfig
from rollout.events import Alert, Event
from rollout.leader import Elector, Timing
from rollout.lease import LeaseLock
from rollout.model import Rollout
from rollout.ports import Notifier

log = logging.getLogger(__name__)

# The process exit code of a replica that lost the Lease (its pod restarts as a follower).
LOST_LEASE_EXIT = 75


def bounded_transactions(url: str, limit: timedelta) -> str:
    """The database URL with PostgreSQL's `idle_in_transaction_session_timeout` set to
    `limit` (unless the URL sets `options` itself). A leader paused inside a transaction (a
    stalled node) holds the leadership row's share lock, and `take_leadership` would wait for
    it as long as the pause lasts; the server ends such a session after `limit` instead, so a
    takeover waits at most that long. The store's transactions never idle for seconds."""
    parsed = make_url(url)
    if "options" in parsed.query:
        return url
    ms = int(limit.total_seconds() * 1000)
    option = {"options": f"-c idle_in_transaction_session_timeout={ms}"}
    return parsed.update_query_dict(option).render_as_string(hide_password=False)


class Fencing(Protocol):
    def take_leadership(self, holder: str) -> int: ...
    def fence(self, token: int | None) -> None: ...


class Leadership:
    def __init__(
        self,
        *,
        config: HaConfig,
        api_client: k8s.ApiClient,
        identity: str,
        store: Fencing,
        on_leading: Callable[[], None],
        on_lost: Callable[[], None],
        pick_up: Callable[[], None],
    ) -> None:
        self.identity = identity
        self._store = store
        self._on_leading = on_leading
        self._on_lost = on_lost
        self._pick_up = pick_up
        self._retry = config.retry_period.total_seconds()
        self._stopping = threading.Event()
        self.token: int | None = None
        self.elector = Elector(
            LeaseLock(api_client, name=config.lease_name, namespace=config.lease_namespace),
            identity=identity,
            timing=Timing(
                lease_duration=config.lease_duration,
                renew_deadline=config.renew_deadline,
                retry_period=config.retry_period,
            ),
            on_started=self._took_over,
            on_stopped=self._lost,
        )

    @property
    def leading(self) -> bool:
        """Leading and fenced: nothing acts before the fencing token is in place."""
        return self.elector.leading and self.token is not None

    def start(self) -> None:
        self.elector.start()

    def stop_picking_up(self) -> None:
        """The first part of a stop: no more pick-ups (nor fencing retries); the Lease is
        still renewed, so the work in flight can finish as the leader's."""
        self._stopping.set()

    def stop(self) -> None:
        """Hand the Lease back: another replica leads at once."""
        self._stopping.set()
        self.elector.stop()

    def _took_over(self) -> None:
        """On its own thread: fence, then hand over to the runtime (reconcile, then tick and
        send); it returns once reconciled."""
        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.2, max=self._retry),
            stop=lambda state: not self.elector.leading or self._stopping.is_set(),
            sleep=self._pause,
            reraise=True,
        )
        try:
            token = retrying(self._fence)
        except Exception as error:
            log.error("taking leadership in the database failed: %s", error)
            return
        log.info("%s leads as epoch %d", self.identity, token)
        self.token = token
        self._on_leading()

    def start_pick_up(self) -> None:
        """Called with the beat: from then on, decisions saved elsewhere are picked up."""
        threading.Thread(target=self._poll, name="pick-up", daemon=True).start()

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _fence(self) -> int:
        token = self._store.take_leadership(self.identity)
        self._store.fence(token)
        return token

    def _poll(self) -> None:
        """The leader's short poll for decisions saved by other replicas."""
        while not self._stopping.wait(self._retry) and self.elector.leading:
            try:
                self._pick_up()
            except Exception as error:
                log.warning("pick-up failed: %s: %s", type(error).__name__, error)

    def _lost(self) -> None:
        self.token = None
        self._on_lost()

    def readiness(self, *, reconciled: bool, database: str | None) -> tuple[bool, str]:
        """`/readyz`: a leader is ready once reconciled; a follower while it reaches both the
        database and the API server (it must record commands and see the Lease)."""
        who = self.identity
        if self.leading:
            if reconciled:
                return True, f"leader ({who}, epoch {self.token}): reconciled"
            return False, f"leader ({who}, epoch {self.token}): reconciling active rollouts"
        problems = []
        if not self.elector.connected:
            problems.append(f"cannot reach the API server ({self.elector.lock.describe})")
        if database is not None:
            problems.append(f"cannot reach the database ({database})")
        if problems:
            return False, f"follower ({who}): " + "; ".join(problems)
        leader = self.elector.holder or "none yet"
        return True, f"follower ({who}, leader {leader}): connected to the database and API server"


def exit_lost_lease() -> None:
    """`canary-bot serve`'s answer to a lost Lease: stop everything at once, mid-call if need
    be (the fenced store refuses whatever was on its way), and let the pod restart."""
    log.error("lost the Lease; exiting so that this replica restarts as a follower")
    logging.shutdown()
    os._exit(LOST_LEASE_EXIT)


class NotLeader(Exception):
    """This replica does not (or no longer) hold the Lease: it posts nothing."""


class LeaderOnlyNotifier:
    """The sender's notifier, checking right before every Slack call that this replica still
    leads: a leader paused past its renew deadline (a stalled node, a long GC) posts nothing
    on waking up, so the next leader's post (after looking for this one) is the only one."""

    def __init__(self, notifier: Notifier, *, leading: Callable[[], bool]) -> None:
        self._notifier = notifier
        self._leading = leading

    def _check(self) -> None:
        if not self._leading():
            raise NotLeader("not the leader: posting nothing")

    def show_card(self, rollout: Rollout, *, key: str) -> str:
        self._check()
        return self._notifier.show_card(rollout, key=key)

    def post_event(self, rollout: Rollout, event: Event, *, key: str) -> str:
        self._check()
        return self._notifier.post_event(rollout, event, key=key)

    def post_snapshot(self, rollout: Rollout, analysis: Analysis, *, title: str, key: str) -> str:
        self._check()
        return self._notifier.post_snapshot(rollout, analysis, title=title, key=key)

    def upload_chart(self, rollout: Rollout, png: bytes, *, title: str, at: datetime) -> None:
        self._check()
        self._notifier.upload_chart(rollout, png, title=title, at=at)

    def request_approval(self, rollout: Rollout, *, key: str) -> str:
        self._check()
        return self._notifier.request_approval(rollout, key=key)

    def close_approval(self, rollout: Rollout) -> None:
        self._check()
        self._notifier.close_approval(rollout)

    def alert(self, rollout: Rollout, alert: Alert, *, key: str) -> str:
        self._check()
        return self._notifier.alert(rollout, alert, key=key)

    def find_message(self, rollout: Rollout, key: str) -> str | None:
        self._check()
        return self._notifier.find_message(rollout, key)
