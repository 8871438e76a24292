"""Start-up never blocks serving: `/healthz` answers while the cluster does not, `/readyz` waits.

Before, `serve` reconciled every active rollout before its HTTP server listened, so an API
server that accepted connections but did not answer kept `/healthz` silent and a liveness probe
killed the pod in a loop. Here `canary-bot serve` runs as its own process while the Kubernetes
emulator holds every request unanswered: both ports answer `/healthz`, `/readyz` says 503 for
as long as the cluster stays silent, and 200 once the bot could reconcile.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from tests.reliability.support import active_rollout, free_port, wait_for

HELD_S = 120.0  # longer than any client deadline: a held request is never answered in time


def status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=1).status_code
    except requests.RequestException:
        return None


@pytest.fixture
def sandbox_with_a_rollout(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox with one rollout at its first step, and no bot running."""
    box = Sandbox(workdir=tmp_path / "sandbox")
    box.start()
    try:
        box.start_bot()
        reply = box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
        assert reply.status == 200, reply.body
        wait_for(
            lambda: active_rollout(box, "checkout", where=lambda r: r.step_ready),
            what="the first step",
        )
        box.stop_bot()
        yield box
    finally:
        box.stop()


@pytest.mark.timeout(240)
def test_healthz_answers_at_once_and_readyz_waits_for_the_cluster(
    sandbox_with_a_rollout: Sandbox, tmp_path: Path
) -> None:
    box = sandbox_with_a_rollout
    box.kube.faults.timeout_rate = 1.0  # every request held, none answered in time
    box.kube.faults.timeout_sleep = HELD_S
    port, admin_port = free_port(), free_port()
    main, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log:
        bot = subprocess.Popen(
            box.serve_command(port=port, admin_port=admin_port),
            env=box.process_env(),
            stdout=log,
            stderr=log,
        )
    try:
        began = time.monotonic()
        wait_for(lambda: status(f"{admin}/healthz") == 200, what="admin /healthz", timeout=60)
        wait_for(lambda: status(f"{main}/healthz") == 200, what="main /healthz", timeout=60)
        answered_after = time.monotonic() - began
        # Reconciling needs the cluster, which holds every request: alive, but not ready.
        assert status(f"{admin}/readyz") == 503
        assert status(f"{admin}/healthz") == 200
        assert status(f"{main}/healthz") == 200
        assert status(f"{main}/readyz") == 404  # probes and metrics live on the admin port
        assert status(f"{main}/metrics") == 404
        box.kube.faults.reset()  # the API server answers again
        wait_for(lambda: status(f"{admin}/readyz") == 200, what="/readyz 200", timeout=150)
        print(f"\n/healthz answered {answered_after:.2f} s after the process was started")
    finally:
        bot.terminate()
        bot.wait(timeout=30)
