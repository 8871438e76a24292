"""The bot killed with SIGKILL mid-rollout, again and again, still finishes the rollout once.

DESIGN.md promises that a restarted bot carries every active rollout on "with no step skipped
or repeated". This test runs `canary-bot serve` as a real process against the sandbox's
emulators and kills it (no clean shutdown, nothing flushed) at seeded random moments while the
steps run, and at three moments arranged on purpose, each restart on the same port and database:

- the status card is in Slack but the bot has not yet recorded that it posted it;
- the rollout awaits approval but the approval request is not in Slack yet;
- an approval is stored but not yet carried out (mid-promotion).

To hold the bot still at those points, the Slack emulator answers the call with rate limits,
which slack_sdk's retry handler waits out, and for the first one the test also holds SQLite's
write lock so the bot cannot record the post it just made; the process is killed meanwhile.

Then the rollout must finish: one status card, each step announced once and in order, one
approval request, one promotion and one outcome message, the cluster only ever at the planned
replica counts, and the audit log showing the start, every step and the promotion.
"""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from canary_sandbox.sandbox import (
    BOB,
    CAROL,
    RELEASE_CHANNEL,
    STABLE_IMAGE,
    Sandbox,
    stable_deployment,
)
from emulators.slack import Message, SlackDriver
from rollout.store import SqliteStore
from rollout.traffic.replicas import split_replicas

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")
SEED = 20240611
# Ten replicas so that every step has its own canary replica count (1, 2, 4, 6, 8, 9): a step
# repeated or skipped on the cluster shows in the sampled counts, not only in Slack.
REPLICAS = 10
STEPS = (10, 20, 40, 60, 80, 90)
PLANNED_CANARY = [split_replicas(REPLICAS, weight)[0] for weight in STEPS]
CONFIG = textwrap.dedent(
    f"""\
    slack:
      release_channels: [{RELEASE_CHANNEL}]
      oncall: S0ONCALL
      deployers: [{BOB}, {CAROL}]
      approvers: [S0SRE]
      # The emulator enforces no rate limits here: the `serve` process need not pace its
      # messages like a production bot (the Slack budget is tested in test_slack_budget.py).
      rate_limits: {{chat_update_per_minute: 10000, post_message_per_channel_per_second: 100}}
    cluster_name: sandbox
    defaults:
      steps: [{", ".join(map(str, STEPS))}]
      step_interval: 1s
      analysis_interval: 1s
      progress_deadline: 30s
      rules: []
    services:
      checkout:
        namespace: shop
        deployment: checkout
        container: app
        strategy: replicas
        environment: production
    """
)
STEP_TEXT = re.compile(r"Step (\d+) of (\d+)")


def wait_for(probe: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BotProcess:
    """`canary-bot serve` as a child process on one port and one database, restartable."""

    def __init__(self, sandbox: Sandbox, *, log_path: Path) -> None:
        self._sandbox = sandbox
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port()
        self.log_path = log_path
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"===== start #{self.starts} =====\n".encode())
            self._proc = subprocess.Popen(
                self._sandbox.serve_command(port=self.port, admin_port=self.admin_port),
                cwd=REPO,
                env=self._sandbox.process_env(),
                stdout=log,
                stderr=log,
            )
        wait_for(self._ready, what=f"/readyz of start #{self.starts}", timeout=30)

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise AssertionError(
                f"canary-bot exited with {self._proc.returncode}:\n{self.log_tail()}"
            )
        try:
            ready = f"http://127.0.0.1:{self.admin_port}/readyz"
            return requests.get(ready, timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL: no signal handler, no shutdown, no flush runs."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


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


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sandbox = Sandbox(workdir=tmp_path / "sandbox", config_text=CONFIG, seed=False)
    sampler = ReplicaSampler(sandbox)
    bot = BotProcess(sandbox, log_path=tmp_path / "canary-bot.log")
    try:
        sandbox.start()
        sandbox.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        sandbox.kube.seed(stable_deployment(replicas=REPLICAS))
        sampler.start()
        bot.start()
        yield World(sandbox=sandbox, bot=bot, sampler=sampler)
    finally:
        bot.stop()
        sampler.stop()
        sandbox.stop()


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


def has_approve_button(blocks: list[dict[str, Any]]) -> bool:
    return any(
        element.get("action_id") == "approve"
        for block in blocks
        for element in block.get("elements", [])
    )


def open_approval(sandbox: Sandbox) -> Message | None:
    return next((m for m in thread(sandbox) if has_approve_button(m.blocks)), None)


def first_version_blocks(message: Message) -> list[dict[str, Any]]:
    return message.history[0].blocks if message.history else message.blocks


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


@pytest.mark.timeout(180)
def test_rollout_survives_repeated_sigkill_without_skipping_or_repeating_a_step(
    world: World,
) -> None:
    sandbox, rng = world.sandbox, random.Random(SEED)

    # 1. The card is in Slack but the bot has not yet written down that it posted it: Slack's
    # answer to the card's post is held back, and the test takes SQLite's write lock as soon
    # as the card is in the channel, so the bot cannot record it; it dies there.
    sandbox.slack.faults.methods = frozenset({"chat.postMessage"})
    sandbox.slack.faults.latency = 2.0
    reply = world.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    wait_for(lambda: outbox_state(sandbox, "card") == "sending", what="the card's post")
    with store_writes_blocked(sandbox):
        wait_for(lambda: sandbox.slack.messages(RELEASE_CHANNEL), what="the card")
        world.kill_and_restart("card posted, not yet recorded", restart=False)
    sandbox.slack.faults.latency = 0.0
    world.bot.start()

    # 2. At seeded random moments while the steps run (never past the next-to-last step, so
    # that the arranged kill at the approval gate below still has its moment).
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 3.0))
        rollout = stored(sandbox)
        assert rollout is not None
        if rollout["phase"] == "progressing" and rollout["step_index"] < len(STEPS) - 2:
            world.kill_and_restart(f"at random, step {rollout['step_index'] + 1}")

    # 3. Awaiting approval, before the request is in Slack: once the last step is announced
    # the next message is the approval request; hold it in rate limits and kill meanwhile.
    wait_for(
        lambda: (len(STEPS), len(STEPS)) in step_numbers(sandbox),
        what="the last step's announcement",
        timeout=60,
    )
    limited = hold_slack(sandbox, "chat.postMessage")
    wait_for(lambda: phase_is(sandbox, "awaiting_approval"), what="awaiting_approval")
    wait_for(
        lambda: rate_limited_calls(sandbox, "chat.postMessage") > limited,
        what="the approval request being held",
    )
    world.kill_and_restart("awaiting approval, request being posted")

    # 4. Mid-promotion: Approve is stored, then closing the request is held; kill meanwhile.
    approval = wait_for(lambda: open_approval(sandbox), what="the approval request")
    limited = hold_slack(sandbox, "chat.update")
    clicked = world.driver.click(message=approval, action_id="approve", user=CAROL)
    assert clicked.status == 200, clicked.body
    wait_for(lambda: phase_is(sandbox, "promoting", "succeeded"), what="the approval stored")
    wait_for(
        lambda: rate_limited_calls(sandbox, "chat.update") > limited,
        what="the approval decision being held",
    )
    world.kill_and_restart("mid-promotion, approval just stored")

    # 5. It finishes on its own.
    wait_for(lambda: phase_is(sandbox, "succeeded"), what="the rollout to succeed", timeout=60)
    stable = wait_for(lambda: promoted_stable(sandbox), what="the promoted stable Deployment")
    world.bot.stop()
    world.sampler.stop()
    assert stable["spec"]["replicas"] == REPLICAS
    assert len(world.kills) >= 4, world.kills

    # Every check runs, so one failure report shows everything a restart got wrong.
    problems = [
        *slack_problems(sandbox),
        *store_problems(sandbox),
        *cluster_problems(world.sampler.samples),
        *logged_errors(world.bot.log_path),
    ]
    kills = "\n".join(f"  {kill}" for kill in world.kills)
    assert not problems, (
        "\n".join(problems)
        + f"\nkilled:\n{kills}\nchannel:\n{sandbox.slack.transcript(RELEASE_CHANNEL)}"
    )


def promoted_stable(sandbox: Sandbox) -> dict[str, Any] | None:
    stable = sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout")
    canary = sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout-canary")
    if stable is None or canary is not None:
        return None
    image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
    ready = stable.get("status", {}).get("readyReplicas")
    return stable if image == NEW_IMAGE and ready == REPLICAS else None


def slack_problems(sandbox: Sandbox) -> Iterator[str]:
    roots = sandbox.slack.messages(RELEASE_CHANNEL)
    if len(roots) != 1:
        yield f"{len(roots)} top-level messages in the channel, want one status card"
    total = len(STEPS)
    steps = step_numbers(sandbox)
    if steps != [(n, total) for n in range(1, total + 1)]:
        yield f"step announcements (step, of) {steps}, want each of 1..{total} once, in order"
    replies = thread(sandbox)
    asked = [m for m in replies if has_approve_button(first_version_blocks(m))]
    if len(asked) != 1:
        yield f"{len(asked)} approval requests, want one"
    elif has_approve_button(asked[0].blocks) or CAROL not in asked[0].text:
        yield f"approval request not closed with the decision: {asked[0].text!r}"
    for what, text in (("promotion announcement", "Promotion started"), ("outcome", "Released")):
        found = sum(1 for m in replies if text in m.text)
        if found != 1:
            yield f"{found} {what} replies ({text!r}), want one"


def store_problems(sandbox: Sandbox) -> Iterator[str]:
    store = SqliteStore(sandbox.db_path)
    try:
        rollouts = store.history("checkout")
        audit = store.audit_rows(rollouts[0].id) if rollouts else []
    finally:
        store.close()
    if [r.phase.value for r in rollouts] != ["succeeded"]:
        yield f"stored rollouts {[(r.id, r.phase.value) for r in rollouts]}, want one succeeded"
    actions = [(row["actor"], row["action"]) for row in audit]
    for wanted in ((BOB, "start"), (CAROL, "approve"), ("canary-bot", "promoted")):
        if actions.count(wanted) != 1:
            yield f"audit has {actions.count(wanted)} rows {wanted}, want one"
    # Entering a step is a saved transition that raises the step number: once per step.
    entered = []
    for row in audit:
        before = json.loads(row["before"]) if row["before"] else None
        after = json.loads(row["after"]) if row["after"] else None
        if after is not None and after["step"] > (before["step"] if before else 0):
            entered.append(after["step"])
    if entered != list(range(1, len(STEPS) + 1)):
        yield f"audit shows steps entered {entered}, want 1..{len(STEPS)} once each"
    weights = [
        int(match.group(1))
        for row in audit
        if row["action"] == "cluster change"
        and (match := re.match(r"(?:set canary|re-applied) weight (\d+)%", row["detail"] or ""))
    ]
    if weights != sorted(weights) or not set(weights) <= set(STEPS):
        yield f"audited weight changes {weights}, want only planned weights, never going back"


def cluster_problems(samples: list[tuple[int | None, int | None]]) -> Iterator[str]:
    canary = _collapsed([c for c, _ in samples])
    # Absent, created at zero replicas (a step may follow before a sample sees the zero), one
    # count per step, absent again once promoted.
    if canary not in ([None, 0, *PLANNED_CANARY, None], [None, *PLANNED_CANARY, None]):
        yield f"canary replicas over time {canary}, want {[None, 0, *PLANNED_CANARY, None]}"
    # The canary grows before stable shrinks, so stable follows it, and is back to full size
    # (with the new image) only at promotion.
    stable = _collapsed([s for _, s in samples])
    planned = [REPLICAS, *(REPLICAS - c for c in PLANNED_CANARY), REPLICAS]
    if stable != planned:
        yield f"stable replicas over time {stable}, want {planned}"


def _collapsed(values: list[int | None]) -> list[int | None]:
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def logged_errors(log_path: Path) -> Iterator[str]:
    for line in log_path.read_text(errors="replace").splitlines():
        if " ERROR " in line or "Traceback" in line:
            yield f"bot log: {line}"
