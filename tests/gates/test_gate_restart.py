"""A bot that died while a pre-flight gate ran finds the gate named in the rollout record and
runs it again (gates are checks, safe to repeat); the start then carries on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, STABLE_IMAGE, Sandbox
from rollout.ports import SystemClock
from rollout.start import StartRequest, Starts
from rollout.store import SqliteStore
from tests.gates.conftest import canary_exists, gate_config, only_rollout, wait_until

NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")


@pytest.mark.timeout(60)
def test_gate_running_at_a_crash_runs_again_after_restart(tmp_path: Path) -> None:
    marker = tmp_path / "gate-runs"
    argv = ["sh", "-c", f"echo ran >> {marker}"]
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=gate_config(preflight=[{"command": {"argv": argv}}], step_interval="1h"),
    )
    box.start()
    try:
        # What the previous bot left: the start accepted, its image resolved, and the gate
        # marked running when it died (the worker's result never saved).
        store = SqliteStore(box.db_path)
        clock = SystemClock()
        starts = Starts(config=box.config, store=store, clock=clock, pinning=False)
        request = StartRequest(service="checkout", image="v2.3.5", by=BOB, channel=RELEASE_CHANNEL)
        accepted = starts.accept(request)
        assert accepted is not None
        running = dataclasses.replace(
            accepted,
            stable_image=STABLE_IMAGE,
            canary_image=NEW_IMAGE,
            container="app",
            gate="preflight:0",
            gate_started_at=clock.now(),
        )
        store.save(accepted, running, actor="canary-bot", action="gate")
        store.close()
        assert not canary_exists(box)

        box.start_bot()
        wait_until(lambda: canary_exists(box), what="the canary after the gate ran again")
        assert marker.read_text() == "ran\n"  # run once, by the restarted bot
        rollout = only_rollout(box)
        assert rollout.gate is None
        assert [r.key for r in rollout.gate_results if r.passed] == ["preflight:0"]
    finally:
        box.stop()
