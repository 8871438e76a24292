"""On-demand snapshots are rate-limited per service (`snapshot_min_interval`, default 1m).

`/canary status <service>` in a release channel renders a chart and uploads it to the
rollout's thread. A second ask within the interval still gets the status, with a note that
points at the latest snapshot in the thread, and uploads nothing. Waiting is deterministic:
the bot's after-acknowledgement work is drained, and the outbox sent, before counting uploads.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from canary_sandbox.sandbox import BOB, CAROL, MALLORY, RELEASE_CHANNEL, Sandbox
from tests.reliability.support import active_rollout, free_port, sandbox_config, wait_for


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    config = sandbox_config(
        services=["checkout"],
        steps=[25, 50],
        step_interval="1h",
        rules="[{metric: error_rate, above: 0.5, for: 0s}]",
    )
    # Nothing listens there: every measurement is "no data", and the snapshot shows it.
    config += f"prometheus: {{url: 'http://127.0.0.1:{free_port()}', timeout: 1s}}\n"
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=config)
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def asked_for(sandbox: Sandbox) -> int:
    runtime = sandbox.runtime
    assert runtime is not None
    runtime.drain()  # the command's work after its acknowledgement queues the snapshot...
    # ...and the outbox sender uploads it on its own thread.
    wait_for(lambda: not runtime.store.unsent(), what="the outbox to be sent")
    return len([f for f in sandbox.slack.files if "on request" in f.title])


@pytest.mark.timeout(60)
def test_a_second_snapshot_within_the_interval_is_not_uploaded(sandbox: Sandbox) -> None:
    assert sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_for(
        partial(active_rollout, sandbox, "checkout", where=lambda r: r.thread_ts is not None),
        what="the rollout's thread",
    )
    first = sandbox.driver.command("status checkout", user=MALLORY, channel=RELEASE_CHANNEL)
    assert first.status == 200 and "No new snapshot" not in first.body, first.body
    assert asked_for(sandbox) == 1

    for user in (MALLORY, CAROL):  # per service, whoever asks
        again = sandbox.driver.command("status checkout", user=user, channel=RELEASE_CHANNEL)
        assert again.status == 200 and again.json["response_type"] == "ephemeral"
        assert "No new snapshot" in again.body and "snapshot_min_interval" in again.body
        assert "checkout" in again.body  # the status itself is still answered
    assert asked_for(sandbox) == 1
