"""What the end-to-end analysis tests share: their settings and ways to read what the bot did
(its thread, its card, its measurements, the cluster).

Kept apart from `test_rollout_analysis.py` so that file holds its fixtures and tests.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from canary_sandbox.sandbox import (
    BOB,
    RELEASE_CHANNEL,
    STABLE_IMAGE,
    Sandbox,
)
from emulators.slack import Message, payloads
from emulators.slack.blocks import find_button
from emulators.slack.records import JsonObject
from rollout.analysis import Measurement, PrometheusProvider, Verdict, judge
from rollout.config import Rule
from rollout.model import Phase, Rollout

NS, SERVICE = "shop", "checkout"
RPS = 40.0
NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")
ONCALL = "<!subteam^S0ONCALL>"
# The analysis settings of every test, in seconds.
STEP_INTERVAL = 3.0
INTERVAL = 1.0
WINDOW = 5
FOR = 3.0
NO_DATA_ALERT_AFTER = 3.0
ERROR_THRESHOLD = 0.05

# The test's own view of the canary's error rate, written independently of the bot's queries.
_CANARY = f'namespace="{NS}",service="{SERVICE}",track="canary"'
CANARY_ERROR_RATE = (
    f'sum(rate(http_requests_total{{{_CANARY},code=~"5.."}}[{WINDOW}s]))'
    f" / sum(rate(http_requests_total{{{_CANARY}}}[{WINDOW}s]))"
)
CANARY_REQUEST_RATE = f"sum(rate(http_requests_total{{{_CANARY}}}[{WINDOW}s]))"


# --------------------------------------------------------------------------- helpers


def wait_until(probe: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def query_value(provider: PrometheusProvider, promql: str) -> float | None:
    series = provider.query(promql)
    return series[0].value if series else None


def start_rollout(sandbox: Sandbox) -> None:
    reply = sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200 and reply.json is not None, reply.body
    assert reply.json["response_type"] == "ephemeral"


def the_rollout(sandbox: Sandbox) -> Rollout:
    assert sandbox.runtime is not None
    rollouts = sandbox.runtime.store.history(SERVICE)
    assert len(rollouts) == 1
    return rollouts[0]


def root(sandbox: Sandbox) -> Message | None:
    """The rollout's status card: the first top-level message in the release channel."""
    messages = sandbox.slack.messages(RELEASE_CHANNEL)
    return messages[0] if messages else None


def replies(sandbox: Sandbox) -> list[Message]:
    card = root(sandbox)
    return [] if card is None else sandbox.slack.thread(RELEASE_CHANNEL, card.ts)


def steps_announced(sandbox: Sandbox) -> list[int]:
    # "Step 2 of 3: the canary now gets 50%", not the metric snapshot "Step 2 of 3 reached".
    found = (re.search(r"Step (\d+) of 3: ", m.text) for m in replies(sandbox))
    return [int(match.group(1)) for match in found if match]


def alerts(sandbox: Sandbox) -> list[Message]:
    """Top-level messages in the alert channel (the release channel here) but the root card."""
    roots = sandbox.slack.messages(RELEASE_CHANNEL)
    return [m for m in roots[1:] if not m.is_reply]


def approval_message(sandbox: Sandbox) -> Message | None:
    for reply in replies(sandbox):
        if find_button(reply.blocks, "approve") is not None:
            return reply
    return None


def shown(message: Message) -> str:
    """Every text a person sees in the message: the fallback and each block's text."""
    texts = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    texts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    # mrkdwn escapes these three; a person sees the characters.
    text = "\n".join(texts)
    return text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")


def replicas(sandbox: Sandbox, name: str) -> int | None:
    """`spec.replicas` of a Deployment in the shop namespace; None when it does not exist."""
    deployment = sandbox.kube.get("apps/v1", "Deployment", NS, name)
    return None if deployment is None else int(deployment["spec"].get("replicas", 1))


def measurements(sandbox: Sandbox) -> list[Measurement]:
    assert sandbox.runtime is not None
    rows = sandbox.runtime.store.measurements(
        the_rollout(sandbox).id, since=datetime.fromtimestamp(0, UTC)
    )
    return [Measurement.from_json(row) for row in rows]


def has_canary_data(sandbox: Sandbox) -> bool:
    return any(m.get("error_rate").canary is not None for m in measurements(sandbox))


def posted_at(sandbox: Sandbox, message: Message) -> float:
    """Wall-clock time at which the bot posted `message`."""
    for call in sandbox.slack.calls_to("chat.postMessage"):
        if call.response.get("ts") == message.ts:
            return call.wall
    raise AssertionError(f"no chat.postMessage for {message.ts}")


def click_as_displayed(
    sandbox: Sandbox, displayed: JsonObject, *, action_id: str, user: str
) -> tuple[int, str]:
    """Click a button on a message as a client still displays it (buttons since removed).

    Slack delivers clicks from clients that have not yet redrawn an edited message, so the
    bot must refuse a click on an approval it has closed. Returns (HTTP status, response URL).
    """
    found = find_button(displayed.get("blocks", []), action_id)
    assert found is not None, f"no {action_id} button on the displayed message"
    block_id, button = found
    app = payloads.AppIdentity(
        team_id="T0CANARY",
        team_domain=sandbox.slack.team_domain,
        api_app_id="A0CANARY",
        verification_token="canary-verification-token",
    )
    response_url = sandbox.slack.new_response_url(
        channel=RELEASE_CHANNEL, user=user, message_ts=displayed["ts"]
    )
    payload = payloads.block_actions(
        app,
        user=payloads.user_object(app, user=user, user_name=sandbox.slack.user_name(user)),
        channel=RELEASE_CHANNEL,
        channel_name=sandbox.slack.channel_name(RELEASE_CHANNEL),
        message=displayed,
        block_id=block_id,
        button=button,
        response_url=response_url,
        trigger=payloads.trigger_id(),
    )
    reply = sandbox.driver.post_raw(
        urlencode({"payload": json.dumps(payload)}).encode(),
        content_type="application/x-www-form-urlencoded",
    )
    return reply.status, response_url


def assert_rolled_back_on_cluster(sandbox: Sandbox) -> None:
    assert replicas(sandbox, "checkout-canary") in (None, 0)
    assert replicas(sandbox, "checkout") == 4
    stable = sandbox.kube.get("apps/v1", "Deployment", NS, "checkout")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == STABLE_IMAGE


def rollback_decided_at(sandbox: Sandbox) -> datetime:
    """The beat time of the audit row that moved the rollout from progressing to rolling back."""
    assert sandbox.runtime is not None
    for row in sandbox.runtime.store.audit_rows(the_rollout(sandbox).id):
        if row["after"] and json.loads(row["after"])["phase"] == Phase.ROLLING_BACK.value:
            return datetime.fromisoformat(row["at"])
    raise AssertionError("no audit row records the rollback's start")


def first_breach_judged(sandbox: Sandbox, rules: Sequence[Rule]) -> datetime:
    """The first recorded sample at which the judge, seeing the samples so far, finds a breach."""
    samples = sorted(measurements(sandbox), key=lambda m: m.at)
    interval = timedelta(seconds=INTERVAL)
    for seen, sample in enumerate(samples, start=1):
        analysis = judge(
            rules=rules, history=samples[:seen], now=sample.at, analysis_interval=interval
        )
        if any(r.verdict == Verdict.BREACHED for r in analysis.results):
            return sample.at
    raise AssertionError("no recorded sample shows the breach held for `for`")


def rolled_back(sandbox: Sandbox) -> bool:
    return replicas(sandbox, "checkout-canary") in (None, 0) and replicas(sandbox, "checkout") == 4
