"""The world of the repeated-SIGKILL test (test_crash_restart.py): the rollout's plan, a
sampler of the replica counts the bot asked for, the bot process killed and restarted (the
`BotProcess` of tests/reliability/support.py), and ways to read the bot's database without
taking a lock it needs and to hold the bot still at a chosen moment.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

from canary_sandbox.sandbox import RELEASE_CHANNEL, STABLE_IMAGE, Sandbox
from emulators.slack import Message, SlackDriver
from rollout.traffic.replicas import split_replicas
from tests.reliability.support import BotProcess, has_button

NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")
# Ten replicas so that every step has its own canary replica count (1, 2, 4, 6, 8, 9): a step
# repeated or skipped on the cluster shows in the sampled counts, not only in Slack.
REPLICAS = 10
STEPS = (10, 20, 40, 60, 80, 90)
PLANNED_CANARY = [split_replicas(REPLICAS, weight)[0] for weight in STEPS]
STEP_TEXT = re.compile(r"Step (\d+) of (\d+)")


class ReplicaSampler(threading.Thread):
    """Samples the canary and stable replica counts the bot asked for, every few milliseconds."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(name="replica-sampler", daemon=True)
        self._sandbox = sandbox
        self._stop_event = threading.Event()
        self.samples: list[tuple[int | None, int | None]] = []

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            canary = self._replicas("checkout-canary")
            stable = self._replicas("checkout")
            if not self.samples or self.samples[-1] != (canary, stable):
                self.samples.append((canary, stable))

    def _replicas(self, name: str) -> int | None:
        found = self._sandbox.kube.get("apps/v1", "Deployment", "shop", name)
        return None if found is None else int(found["spec"]["replicas"])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@dataclass
class World:
    sandbox: Sandbox
    bot: BotProcess
    sampler: ReplicaSampler
    kills: list[str] = field(default_factory=list)

    @property
    def driver(self) -> SlackDriver:
        return self.sandbox.driver_for(self.bot.url)

    def kill_and_restart(self, moment: str, *, restart: bool = True) -> None:
        self.bot.kill()
        rollout = stored(self.sandbox) or {}
        facts = ("phase", "step_index", "step_ready", "approval_ts")
        self.kills.append(f"{moment}: " + ", ".join(f"{k}={rollout.get(k)}" for k in facts))
        # Faults arranged to hold the old process still must not greet the new one.
        self.sandbox.slack.faults.rate_limit_next = 0
        self.sandbox.slack.faults.methods = None
        if restart:
            self.bot.start()


def stored(sandbox: Sandbox) -> dict[str, Any] | None:
    """The rollout as the bot last committed it, read without taking any lock it needs."""
    if not sandbox.db_path.exists():
        return None
    uri = f"file:{sandbox.db_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        rows = db.execute(
            "SELECT data FROM rollouts WHERE service = 'checkout' ORDER BY created_at"
        ).fetchall()
    return json.loads(rows[-1][0]) if rows else None


def outbox_state(sandbox: Sandbox, key: str) -> str | None:
    """The state of the checkout rollout's outbox row `key` (read-only, as `stored`)."""
    uri = f"file:{sandbox.db_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        rows = db.execute(
            "SELECT o.state FROM outbox o JOIN rollouts r ON r.id = o.rollout_id "
            "WHERE r.service = 'checkout' AND o.key = ?",
            [key],
        ).fetchall()
    return str(rows[-1][0]) if rows else None


def phase_is(sandbox: Sandbox, *phases: str) -> dict[str, Any] | None:
    rollout = stored(sandbox)
    return rollout if rollout is not None and rollout["phase"] in phases else None


def thread(sandbox: Sandbox) -> list[Message]:
    """The replies under the card the bot knows as the rollout's own."""
    root = (stored(sandbox) or {}).get("thread_ts")
    return sandbox.slack.thread(RELEASE_CHANNEL, root) if root else []


def open_approval(sandbox: Sandbox) -> Message | None:
    return next((m for m in thread(sandbox) if has_button(m.blocks, "approve")), None)


def step_numbers(sandbox: Sandbox) -> list[tuple[int, int]]:
    found = (STEP_TEXT.search(m.text) for m in thread(sandbox))
    return [(int(f.group(1)), int(f.group(2))) for f in found if f]


def rate_limited_calls(sandbox: Sandbox, method: str) -> int:
    return sum(1 for c in sandbox.slack.calls_to(method) if c.error == "ratelimited")


def hold_slack(sandbox: Sandbox, method: str, *, times: int = 3) -> int:
    """Answer the next calls of `method` with rate limits (the bot waits ~1 s per retry)."""
    before = rate_limited_calls(sandbox, method)
    sandbox.slack.faults.methods = frozenset({method})
    sandbox.slack.faults.retry_after = 1
    sandbox.slack.faults.rate_limit_next = times
    return before


@contextmanager
def store_writes_blocked(sandbox: Sandbox) -> Iterator[None]:
    """Hold SQLite's write lock: the bot's next commit waits (its busy timeout) until released."""
    db = sqlite3.connect(sandbox.db_path, isolation_level=None, timeout=5)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()
