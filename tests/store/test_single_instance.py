"""One `canary-bot serve` per SQLite file: a second one refuses to start with one line naming
the file and the first one's pid; tools still read the file meanwhile; a crash frees it.

Real processes on a real sandbox (Kubernetes and Slack emulators), as in production: the lock
is an flock the kernel drops when its holder dies, however it dies.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bot.cli import main
from canary_sandbox.sandbox import Sandbox
from rollout.stores import SqliteStore
from tests.builders import NOW
from tests.reliability.support import free_port, wait_for


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(workdir=tmp_path / "sandbox")
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def serve(box: Sandbox, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A `serve` process, once its admin port answers; and that port's /healthz URL."""
    admin = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            box.serve_command(port=free_port(), admin_port=admin),
            env=box.process_env(),
            stdout=out,
            stderr=out,
        )
    healthz = f"http://127.0.0.1:{admin}/healthz"
    wait_for(lambda: alive(healthz), what=f"serve (pid {process.pid}) /healthz", timeout=60)
    return process, healthz


def alive(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.timeout(180)
def test_a_second_serve_on_the_same_file_refuses_with_one_line(
    box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = SqliteStore(box.db_path)
    before.audit(at=NOW, actor="U01ALICE", action="config reviewed")
    before.close()
    first, _ = serve(box, tmp_path / "first.log")
    try:
        second = subprocess.run(
            box.serve_command(port=free_port(), admin_port=free_port()),
            env=box.process_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"canary-bot: the store {box.db_path} is in use"), line
        assert f"pid {first.pid}" in line, line
        # The lock is serve's alone: reading the file for an export still works.
        assert main(["audit", "export", "--config", str(box.config_path)]) == 0
        assert '"action": "config reviewed"' in capsys.readouterr().out
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: nothing unlocks on the way out
        first.wait(timeout=30)
    third, healthz = serve(box, tmp_path / "third.log")  # the kernel dropped the dead one's lock
    try:
        assert third.poll() is None and alive(healthz)
    finally:
        third.terminate()
        third.wait(timeout=30)
