"""What the reliability tests share: a bot process that restarts fast, and ways to look at it.

`BotProcess` runs the real `canary-bot serve` (`bot.cli.main`) in its own process, so SIGKILL
takes it down with nothing flushed. Importing the bot costs ~3 s on a small CI machine, and the
crash test restarts it fifty times, so a fork server imports it once and forks one child per
start: each child is a fresh process that runs `main(["serve", ...])` from the top (config,
secrets, store, reconcile, scheduler, HTTP server), exactly as the console script does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests

from canary_sandbox.sandbox import RELEASE_CHANNEL, Sandbox
from emulators.slack import Message, payloads
from emulators.slack.blocks import find_button
from rollout.model import Rollout

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"
# The start of a log record in the bot's log (`bot/cli.py`'s format), as opposed to a
# traceback's line.
_LOG_RECORD = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} [A-Z]+ ")

# Imports the bot once, then forks a `canary-bot serve` per line read:
# "<port> <admin port> <log path>".
# SIGCHLD is ignored so the kernel reaps killed children (no zombies keep their pid alive).
_FORK_SERVER = textwrap.dedent(
    """\
    import os, signal, sys
    import bot.cli, bot.server
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        port, admin_port, log_path = line.split(maxsplit=2)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            log = os.open(log_path.strip(), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            argv = ["serve", "--host", "127.0.0.1", "--port", port, "--admin-port", admin_port]
            os._exit(bot.cli.main(argv))
        sys.stdout.write(f"{pid}\\n")
        sys.stdout.flush()
    """
)


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.01,
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BotProcess:
    """`canary-bot serve` on one port and one database, killed and restarted at will."""

    def __init__(self, sandbox: Sandbox, *, log_path: Path, log_level: str = "WARNING") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.log_path = log_path
        self.starts = 0
        self.pid: int | None = None
        env = {**sandbox.process_env(), "CANARY_LOG_LEVEL": log_level}
        self._server = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self, *, timeout: float = 30.0) -> float:
        """Start a fresh process and wait until it is ready (/readyz: reconciled); returns the
        seconds taken."""
        assert self.pid is None, "already running"
        began = time.monotonic()
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"===== start #{self.starts} =====\n")
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(f"{self.port} {self.admin_port} {self.log_path}\n")
        self._server.stdin.flush()
        self.pid = int(self._server.stdout.readline())
        wait_for(self._ready, what=f"/readyz of start #{self.starts}", timeout=timeout)
        return time.monotonic() - began

    def _ready(self) -> bool:
        assert self.pid is not None
        if not alive(self.pid):
            raise AssertionError(f"canary-bot exited during start-up:\n{self.log_tail()}")
        try:
            ready = requests.get(f"{self.admin_url}/readyz", timeout=0.5).status_code == 200
            # The main port is up too (it listens before the admin port reports ready).
            return ready and requests.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL: no signal handler, no shutdown, nothing flushed."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it hangs."""
        if self.pid is not None:
            try:
                self._signal(signal.SIGTERM, timeout=10)
            except AssertionError:
                self._signal(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        if self._server.stdin is not None:
            self._server.stdin.close()
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait(timeout=10)
        if self._server.stdout is not None:
            self._server.stdout.close()

    def _signal(self, signum: int, *, timeout: float = 10.0) -> None:
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        wait_for(lambda: not alive(pid), what=f"pid {pid} to end", timeout=timeout, interval=0.005)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@contextmanager
def served_bot(
    workdir: Path, *, config_text: str, log_level: str = "WARNING"
) -> Iterator[tuple[Sandbox, BotProcess]]:
    """A sandbox with `config_text` and `canary-bot serve` on it, started and ready; both
    stopped on the way out (what the sandbox recorded can still be read). The bot's log is
    `workdir/canary-bot.log`."""
    sandbox = Sandbox(workdir=workdir / "sandbox", config_text=config_text)
    sandbox.start()
    bot = BotProcess(sandbox, log_path=workdir / "canary-bot.log", log_level=log_level)
    try:
        bot.start()
        yield sandbox, bot
    finally:
        bot.close()
        sandbox.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def logged_errors(text: str) -> list[str]:
    """The log's error lines, each with the traceback logged with it (the lines up to the next
    record), so that a test failing on one shows its cause."""
    found: list[str] = []
    in_error = False
    for line in text.splitlines():
        record = _LOG_RECORD.match(line) is not None or line.startswith("=====")
        if record:
            in_error = " ERROR " in line
        if in_error or "Traceback" in line:
            found.append(line)
    return found


# --------------------------------------------------------------------------- the store


def stored_rollouts(db_path: Path) -> list[dict[str, Any]]:
    """Every rollout as the bot last committed it, oldest first, read without taking a lock
    the bot needs (a read-only connection; WAL lets it read while the bot writes)."""
    if not db_path.exists():
        return []
    uri = f"file:{db_path}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            rows = db.execute("SELECT data FROM rollouts ORDER BY created_at").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    return [json.loads(row[0]) for row in rows]


def unsent_messages(db_path: Path) -> int:
    """Messages still in the outbox (held, queued or on their way), read without a lock."""
    if not db_path.exists():
        return 0
    uri = f"file:{db_path}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            row = db.execute("SELECT COUNT(*) FROM outbox WHERE state != 'sent'").fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(row[0])


def audit_rows(db_path: Path, *, since_id: int = 0) -> list[dict[str, Any]]:
    uri = f"file:{db_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM audit WHERE id > ? ORDER BY id", [since_id]).fetchall()
    return [dict(row) for row in rows]


def steps_entered(audit: Iterable[Mapping[str, Any]]) -> list[int]:
    """The step numbers entered, in audit order: a saved transition that raises the step
    number enters a step (a repeated or skipped step shows here)."""
    entered = []
    for row in audit:
        before = json.loads(row["before"]) if row["before"] else None
        after = json.loads(row["after"]) if row["after"] else None
        if after is not None and after["step"] > (before["step"] if before else 0):
            entered.append(after["step"])
    return entered


def active_rollout(
    sandbox: Sandbox, service: str, *, where: Callable[[Rollout], object] = bool
) -> Rollout | None:
    """The service's active rollout in an in-process bot, if it passes `where`."""
    assert sandbox.runtime is not None, "the bot runs in this process"
    rollout: Rollout | None = sandbox.runtime.store.active_for(service)
    return rollout if rollout is not None and where(rollout) else None


# --------------------------------------------------------------------------- the cluster


def replicas(sandbox: Sandbox, name: str, *, namespace: str = "shop") -> int | None:
    found = sandbox.kube.get("apps/v1", "Deployment", namespace, name)
    return None if found is None else int(found["spec"]["replicas"])


def scale_behind_the_bots_back(
    sandbox: Sandbox, name: str, count: int, *, namespace: str = "shop"
) -> None:
    """Someone runs `kubectl scale`: a direct write, no faults, not in the write record."""
    found = sandbox.kube.registry.by_kind("apps/v1", "Deployment")
    assert found is not None
    kind, version = found
    sandbox.kube.api.patch(
        kind,
        version,
        namespace,
        name,
        {"spec": {"replicas": count}},
        content_type="application/merge-patch+json",
    )


# --------------------------------------------------------------------------- Slack


def metadata_of(message: Message) -> dict[str, Any]:
    payload = (message.metadata or {}).get("event_payload") or {}
    return payload if isinstance(payload, dict) else {}


def card_of(sandbox: Sandbox, rollout_id: str, channel: str = RELEASE_CHANNEL) -> Message | None:
    cards = [
        m
        for m in sandbox.slack.messages(channel)
        if metadata_of(m).get("rollout") == rollout_id and metadata_of(m).get("key") == "card"
    ]
    return cards[0] if cards else None


def has_button(blocks: Iterable[dict[str, Any]], action_id: str) -> bool:
    return any(
        element.get("action_id") == action_id
        for block in blocks
        for element in block.get("elements", [])
    )


def first_blocks(message: Message) -> list[dict[str, Any]]:
    return message.history[0].blocks if message.history else message.blocks


def open_approval(sandbox: Sandbox, thread_ts: str | None) -> Message | None:
    if thread_ts is None:
        return None
    replies = sandbox.slack.thread(RELEASE_CHANNEL, thread_ts)
    return next((m for m in replies if has_button(m.blocks, "approve")), None)


def click_body(
    sandbox: Sandbox, *, message: Any, action_id: str, user: str, channel: str | None = None
) -> bytes:
    """The exact bytes of one click, so the same delivery can be sent again (a retry);
    `channel` forges the channel the click claims to come from."""
    current = sandbox.slack.as_slack_json(message)
    found = find_button(current.get("blocks", []), action_id)
    assert found is not None
    block_id, button = found
    app = payloads.AppIdentity(
        team_id=sandbox.slack.team_id,
        team_domain=sandbox.slack.team_domain,
        api_app_id="A0CANARY",
        verification_token="canary-verification-token",
    )
    payload = payloads.block_actions(
        app,
        user=payloads.user_object(app, user=user, user_name=sandbox.slack.user_name(user)),
        channel=channel or message.channel,
        channel_name=sandbox.slack.channel_name(channel or message.channel),
        message=current,
        block_id=block_id,
        button=button,
        response_url=sandbox.slack.new_response_url(
            channel=message.channel, user=user, message_ts=message.ts
        ),
        trigger=payloads.trigger_id(),
    )
    return urlencode({"payload": json.dumps(payload)}).encode()


def texts(messages: Sequence[Message]) -> list[str]:
    return [m.text for m in messages]


def sandbox_config(
    *,
    services: Sequence[str],
    steps: Sequence[int],
    step_interval: str = "1s",
    deployers: str = "[U01ALICE, U02BOB, U03CAROL]",
    approvers: str = "[S0SRE]",
    rules: str = "[]",
    progress_deadline: str = "30s",
    staging: Sequence[str] = (),
    allow_overrides: str = "{approvers: [steps, interval, promote]}",
) -> str:
    """A sandbox config with one `replicas` service per name (Deployment of the same name);
    production unless named in `staging`."""
    blocks = "".join(
        f"  {name}:\n"
        f"    namespace: shop\n"
        f"    deployment: {name}\n"
        f"    container: app\n"
        f"    strategy: replicas\n"
        f"    environment: {'staging' if name in staging else 'production'}\n"
        for name in services
    )
    return (
        "slack:\n"
        f"  release_channels: [{RELEASE_CHANNEL}]\n"
        "  oncall: S0ONCALL\n"
        f"  deployers: {deployers}\n"
        f"  approvers: {approvers}\n"
        "cluster_name: sandbox\n"
        "defaults:\n"
        f"  steps: [{', '.join(map(str, steps))}]\n"
        f"  step_interval: {step_interval}\n"
        "  analysis_interval: 1s\n"
        f"  progress_deadline: {progress_deadline}\n"
        f"  rules: {rules}\n"
        f"  allow_overrides: {allow_overrides}\n"
        "services:\n" + blocks
    )
