"""`canary-bot demo --scripted` end to end, as CI and a newcomer run it: a real process.

The script itself checks the cluster and the channel and exits non-zero when the scenario goes
wrong; this test also reads its output for the three things the demo exists to show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_scripted_demo_promotes_then_rolls_back_and_pages_oncall() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "demo", "--scripted"],
        cwd=ROOT,
        env={**os.environ, "CANARY_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # so a hung demo is killed together with its Prometheus
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"the scripted demo did not finish in {TIMEOUT_S}s:\n{out}")

    assert process.returncode == 0, out
    # The promotion, after the bot refused a non-approver and the starter.
    assert "(only Mallory sees) Only approvers may approve: @sre." in out
    assert "(only Bob sees) You started this rollout" in out
    assert "OK promotion: shop/checkout runs registry.example.com/shop/checkout:v2.3.5" in out
    # The breach: rolled back on the error-rate rule, stable untouched, on-call paged.
    assert "OK rollback: error_rate" in out
    assert "shop/checkout is back on registry.example.com/shop/checkout:v2.3.5, 4 pods" in out
    assert "OK alert: on-call paged in #releases: @oncall" in out
    assert "demo OK" in out
