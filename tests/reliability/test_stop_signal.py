"""SIGTERM stops `canary-bot serve` whichever of its threads the kernel hands the signal to.

CI caught a served bot that had not exited 30 s after SIGTERM, its main thread blocked in a
join of the HTTP server's thread, its servers still listening. Python runs a signal handler in
the main thread only, between bytecodes; a blocking join wakes for a signal delivered to the
main thread, not for one the kernel gave another thread, nor for one landing just before the
join blocks. The second is a race a test cannot arrange; the first has the same effect and can
be arranged: `tgkill` sends the signal to one chosen thread, as the kernel may.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.support import BotProcess, alive, sandbox_config, served_bot, wait_for


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[BotProcess]:
    config = sandbox_config(services=["checkout"], steps=[50], step_interval="1h")
    with served_bot(tmp_path, config_text=config, log_level="INFO") as (_, served):
        yield served


def tgkill(pid: int, tid: int, signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {signum})")


@pytest.mark.timeout(90)
def test_sigterm_given_to_a_worker_thread_still_stops_the_bot(bot: BotProcess) -> None:
    pid = bot.pid
    assert pid is not None
    workers = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    assert workers, "the served bot runs no thread beside its main one"
    tgkill(pid, workers[-1], signal.SIGTERM)
    wait_for(lambda: not alive(pid), what=f"pid {pid} to stop after SIGTERM", timeout=20)
    bot.pid = None  # stopped: nothing left for close() to signal
    log = bot.log_text()
    assert "stopping on signal 15" in log, bot.log_tail()
    assert "Traceback" not in log, bot.log_tail()
