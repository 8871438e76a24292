"""The bot token and the signing secret appear in no log line (in process at DEBUG, and in a
served bot's own output) and nowhere in what the bot sends Slack or writes to the cluster.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import (
    BOB,
    BOT_TOKEN,
    CAROL,
    MALLORY,
    RELEASE_CHANNEL,
    SIGNING_SECRET,
    Sandbox,
)
from emulators.slack import DriverResponse
from tests.reliability.support import (
    open_approval,
    sandbox_config,
    served_bot,
    stored_rollouts,
    unsent_messages,
    wait_for,
)

SECRETS = (BOT_TOKEN, SIGNING_SECRET)
# --------------------------------------------------------------------------- secrets


def exposures(text: str) -> list[str]:
    return [f"{'token' if s == BOT_TOKEN else 'signing secret'}" for s in SECRETS if s in text]


def everything_sent(sandbox: Sandbox, answers: list[DriverResponse]) -> str:
    """Every Slack call and response, every response_url post, every answer to Slack, every
    write to the cluster, the audit log and the stored rollouts."""
    parts = [json.dumps([c.args, c.response]) for c in sandbox.slack.calls]
    parts += [json.dumps(r.body) for r in sandbox.slack.responses]
    parts += [a.body for a in answers]
    parts += [json.dumps(w.body) for w in sandbox.kube.writes_snapshot()]
    if sandbox.runtime is not None:
        parts += [json.dumps(row) for row in sandbox.runtime.store.audit_rows()]
        parts += [repr(r) for r in sandbox.runtime.store.history("checkout")]
    return "\n".join(parts)


def full_rollout(sandbox: Sandbox, driver: Any) -> list[DriverResponse]:
    """Start, a step, an approval refused and one granted, the promotion; and a forged call."""
    answers = [driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)]
    answers.append(driver.command("start checkout v2.3.5", user=BOB, channel="C0X", sign=False))
    step = wait_for(
        lambda: next((r for r in stored_rollouts(sandbox.db_path) if r["step_ready"]), None),
        what="step 1",
    )
    answers.append(driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL))
    approval = wait_for(lambda: open_approval(sandbox, step["thread_ts"]), what="the approval")
    answers.append(driver.click(message=approval, action_id="approve", user=MALLORY))
    answers.append(driver.click(message=approval, action_id="approve", user=CAROL))
    wait_for(
        lambda: (
            [r["phase"] for r in stored_rollouts(sandbox.db_path)] == ["succeeded"]
            and unsent_messages(sandbox.db_path) == 0
        ),
        what="the promotion",
    )
    return answers


@pytest.mark.timeout(60)
def test_secrets_never_reach_logs_or_messages(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers = full_rollout(sandbox, sandbox.driver)
    sandbox.drain()  # what the bot logs and sends after its acks is in the record too
    # Whoever logs a secret, however (message, argument, exception), it is redacted.
    careless = logging.getLogger("rollout.engine")
    careless.warning("token is %s", BOT_TOKEN)
    careless.debug(f"secret is {SIGNING_SECRET}")
    try:
        raise RuntimeError(f"bad auth {BOT_TOKEN}")
    except RuntimeError:
        careless.exception("failed")
    logs = caplog.text + "\n".join(str(r.exc_text) for r in caplog.records)
    assert any(r.name.startswith("slack_sdk") for r in caplog.records), "no DEBUG capture"
    assert "[redacted]" in logs
    assert exposures(logs) == []
    assert exposures(everything_sent(sandbox, answers)) == []


@pytest.mark.timeout(60)
def test_secrets_never_reach_a_served_bots_output(tmp_path: Path) -> None:
    config = sandbox_config(services=["checkout"], steps=[50], step_interval="1h")
    with served_bot(tmp_path, config_text=config, log_level="DEBUG") as (sandbox, bot):
        answers = full_rollout(sandbox, sandbox.driver_for(bot.url))
    output = bot.log_text()
    assert " DEBUG slack_sdk" in output, "the served bot did not log at DEBUG"
    assert exposures(output) == []
    assert exposures(everything_sent(sandbox, answers)) == []
