"""The chart worker process leaves with the bot, even when the bot is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.chart_renderer import RENDER_NICENESS, ChartRenderer

ROOT = Path(__file__).resolve().parents[1]

# A bot-like parent: starts the renderer's worker process, says its pid, then waits.
PARENT = """
import os, sys, time
from bot.chart_renderer import ChartRenderer
pool = ChartRenderer(store=None, observer=None)._executor()
print(pool.submit(os.getpid).result(timeout=60), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whoever adopted it to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state and "dead" not in state


def test_the_render_worker_exits_when_the_bot_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    worker = 0
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert worker != parent.pid and _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the chart worker outlived the bot that started it"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_render_worker_runs_behind_the_bot_for_the_cpu() -> None:
    # A chart competes for the cores with the bot's answers to Slack (bench/ack.py): the
    # worker yields to the bot's own process whenever both want a core.
    renderer = ChartRenderer(store=None, observer=None)  # type: ignore[arg-type]
    try:
        worker = renderer._executor()
        worker_niceness = worker.submit(os.nice, 0).result(timeout=60)
        worker_policy = worker.submit(os.sched_getscheduler, 0).result(timeout=60)
    finally:
        renderer.close()
    assert worker_niceness == min(os.nice(0) + RENDER_NICENESS, 19)
    assert worker_niceness > os.nice(0)
    # Linux: it runs only when nothing else in the container wants the CPU.
    assert worker_policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the bot itself is not affected
