"""Who may talk to the bot, what it accepts, and what it never says.

- Requests must carry Slack's signature over the exact body, made within five minutes either
  way of now; anything else is a 401 and changes nothing.
- A body over 256 KB is a 413 (with or without a Content-Length) and changes nothing.
- Every command that changes a rollout, and every button, checks the channel and the person
  (deployer, approver, the starter who may not approve alone); each refusal is an ephemeral
  explanation and an audit row `refused: <action>` naming who tried.
- Production services release only pinned images (a version tag or a digest).
- The bot token and the signing secret appear in no log line (caplog at DEBUG, and a served
  bot's own stderr at DEBUG) and nowhere in what the bot sends Slack or the cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from bot.config_loader import load_config_text
from canary_sandbox.sandbox import (
    BOB,
    BOT_TOKEN,
    CAROL,
    MALLORY,
    RELEASE_CHANNEL,
    SIGNING_SECRET,
    Sandbox,
    stable_deployment,
)
from emulators.slack import DriverResponse, payloads
from rollout.model import Rollout
from tests.reliability.support import (
    FORM,
    BotProcess,
    active_rollout,
    card_of,
    click_body,
    open_approval,
    sandbox_config,
    stored_rollouts,
    unsent_messages,
    wait_for,
)

SECRETS = (BOT_TOKEN, SIGNING_SECRET)
ELSEWHERE = "C0ELSEWHERE"
CHANGING = ("pause checkout", "resume checkout", "promote checkout", "rollback checkout")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=sandbox_config(
            services=["checkout", "web"], steps=[25, 50], step_interval="1h", staging=["web"]
        ),
    )
    box.start()
    box.kube.seed(stable_deployment(name="web", image="registry.example.com/shop/web:v1.0.0"))
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def store_of(sandbox: Sandbox) -> Any:
    assert sandbox.runtime is not None
    return sandbox.runtime.store


def refusals(sandbox: Sandbox) -> list[tuple[str, str]]:
    return [
        (row["actor"], row["action"])
        for row in store_of(sandbox).audit_rows()
        if row["action"].startswith("refused:") and row["detail"]
    ]


def nothing_happened(sandbox: Sandbox) -> None:
    sandbox.drain()  # the bot acts after its answer: look once that work is done
    assert store_of(sandbox).history("checkout") == []
    assert sandbox.kube.writes_snapshot() == []
    assert sandbox.slack.calls_to("chat.postMessage") == []


def step_one(sandbox: Sandbox) -> Rollout:
    reply = sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body

    return wait_for(
        partial(active_rollout, sandbox, "checkout", where=lambda r: r.step_ready), what="step 1"
    )


# --------------------------------------------------------------------------- signatures


def send_signed(
    sandbox: Sandbox, body: bytes, *, timestamp: int, secret: str = SIGNING_SECRET
) -> DriverResponse:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return sandbox.driver.post_raw(
        body,
        content_type=FORM,
        sign=False,
        headers={"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature},
    )


def start_form(sandbox: Sandbox, text: str = "start checkout v2.3.5") -> bytes:
    form = payloads.slash_command(
        payloads.AppIdentity(
            team_id="T0CANARY",
            team_domain="canary-demo",
            api_app_id="A0CANARY",
            verification_token="canary-verification-token",
        ),
        command="/canary",
        text=text,
        user=BOB,
        user_name="bob",
        channel=RELEASE_CHANNEL,
        channel_name="releases",
        response_url=sandbox.slack.new_response_url(channel=RELEASE_CHANNEL, user=BOB),
        trigger=payloads.trigger_id(),
    )
    return urlencode(form).encode()


@pytest.mark.timeout(30)
def test_requests_without_a_fresh_valid_signature_get_401(sandbox: Sandbox) -> None:
    now = int(time.time())
    body = start_form(sandbox)
    answers = {
        "unsigned": sandbox.driver.post_raw(body, content_type=FORM, sign=False),
        "wrong secret": send_signed(sandbox, body, timestamp=now, secret="not-the-secret-0000"),
        "5 min 1 s old": send_signed(sandbox, body, timestamp=now - 301),
        "5 min 1 s ahead": send_signed(sandbox, body, timestamp=now + 301),
        "an hour ahead": send_signed(sandbox, body, timestamp=now + 3600),
        "timestamp not a number": sandbox.driver.post_raw(
            body,
            content_type=FORM,
            sign=False,
            headers={
                "X-Slack-Request-Timestamp": "soon",
                "X-Slack-Signature": sandbox.driver.signature(body, timestamp="soon"),
            },
        ),
        "body changed after signing": sandbox.driver.post_raw(
            body.replace(b"v2.3.5", b"v6.6.6"),
            content_type=FORM,
            sign=False,
            headers={
                "X-Slack-Request-Timestamp": str(now),
                "X-Slack-Signature": sandbox.driver.signature(body, timestamp=str(now)),
            },
        ),
    }
    assert {what: a.status for what, a in answers.items()} == dict.fromkeys(answers, 401)
    nothing_happened(sandbox)
    # The same checks let a fresh, correctly signed request through (4 min of skew is fine).
    for skew in (-240, 240):
        help_body = start_form(sandbox, text="help")
        assert send_signed(sandbox, help_body, timestamp=now + skew).status == 200


@pytest.mark.timeout(30)
def test_an_oversized_body_gets_413_and_changes_nothing(sandbox: Sandbox) -> None:
    padding = b"&padding=" + b"x" * (300 * 1024)
    big = sandbox.driver.post_raw(start_form(sandbox) + padding, content_type=FORM)
    assert big.status == 413, big.body

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield start_form(sandbox)
        for _ in range(300):
            yield b"&padding=" + b"x" * 1024

    chunked = requests.post(
        _events_url(sandbox),
        data=chunks(),
        headers={"Content-Type": FORM, "X-Slack-Request-Timestamp": str(int(time.time()))},
        timeout=10,
    )
    assert chunked.status_code == 413
    nothing_happened(sandbox)
    under = start_form(sandbox, text="help") + b"&padding=" + b"x" * (200 * 1024)
    assert sandbox.driver.post_raw(under, content_type=FORM).status == 200


def _events_url(sandbox: Sandbox) -> str:
    assert sandbox.server is not None
    return f"{sandbox.server.url}/slack/events"


@pytest.mark.timeout(30)
def test_the_shape_check_judges_the_body_as_bolt_reads_it(sandbox: Sandbox) -> None:
    """The body is parsed once, by Bolt, and the shape check reads that parse: the check and
    the listeners never read one body two ways. Bolt takes a body for JSON only under exactly
    `application/json` (or when it starts with `{`); Werkzeug's mimetype is lowercased. Parsed
    a second time by the check from the mimetype, a form body under `Application/JSON` was
    judged as JSON that Bolt never saw."""
    odd = "Application/JSON"
    status = sandbox.driver.post_raw(start_form(sandbox, "status checkout"), content_type=odd)
    assert status.status == 200, status.body  # the form Bolt reads is a good command
    assert "has no rollouts yet" in status.body

    # A click without `actions`, which every click carries: Bolt reads it from the form.
    click = {"type": "block_actions", "user": {"id": BOB}, "team": {"id": "T0CANARY"}}
    body = urlencode({"payload": json.dumps(click)}).encode()
    refused = sandbox.driver.post_raw(body, content_type=odd)
    assert refused.status == 400
    assert refused.json == {"error": "malformed interaction payload at payload"}
    nothing_happened(sandbox)


# --------------------------------------------------------------------------- authorisation


@pytest.mark.timeout(60)
def test_every_command_and_click_checks_channel_and_person(sandbox: Sandbox) -> None:
    rollout = step_one(sandbox)
    sandbox.kube.clear_writes()
    driver = sandbox.driver

    def refused(answer: DriverResponse, why: str) -> None:
        assert answer.status == 200, answer.body
        assert answer.json and answer.json["response_type"] == "ephemeral", answer.body
        assert why in answer.body, answer.body

    for text in ("start web v1.0.1", *CHANGING):
        refused(driver.command(text, user=MALLORY, channel=RELEASE_CHANNEL), "not a deployer")
        refused(driver.command(text, user=BOB, channel=ELSEWHERE), "release channel")

    def click_refused(body: bytes, why: str) -> None:
        seen = len(sandbox.slack.responses)
        assert sandbox.driver.post_raw(body, content_type=FORM).status == 200
        wait_for(lambda: len(sandbox.slack.responses) > seen, what="the refusal")
        reply = sandbox.slack.responses[seen]
        assert why in reply.text and reply.response_type == "ephemeral", reply.body

    card = card_of(sandbox, rollout.id)
    assert card is not None
    for button in ("pause", "rollback"):
        click_refused(
            click_body(sandbox, message=card, action_id=button, user=MALLORY), "Only deployers"
        )
        click_refused(
            click_body(sandbox, message=card, action_id=button, user=BOB, channel=ELSEWHERE),
            "not on the message the bot posted it in",
        )

    assert driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL).status == 200
    approval = wait_for(lambda: open_approval(sandbox, rollout.thread_ts), what="the approval")
    click_refused(
        click_body(sandbox, message=approval, action_id="approve", user=MALLORY), "Only approvers"
    )
    click_refused(
        click_body(sandbox, message=approval, action_id="approve", user=BOB), "cannot approve"
    )
    click_refused(
        click_body(sandbox, message=approval, action_id="reject", user=MALLORY), "Only approvers"
    )

    after = store_of(sandbox).get(rollout.id)
    assert after is not None and after.phase == "awaiting_approval" and after.approvals == ()
    assert sandbox.kube.writes_snapshot() == []
    verbs = ("start", "pause", "resume", "promote", "rollback")
    assert sorted(refusals(sandbox)) == sorted(
        [(MALLORY, f"refused: {verb}") for verb in verbs]
        + [(BOB, f"refused: {verb}") for verb in verbs]
        + [(MALLORY, "refused: pause"), (MALLORY, "refused: rollback")]
        + [(BOB, "refused: pause"), (BOB, "refused: rollback")]
        + [(MALLORY, "refused: approve"), (BOB, "refused: approve"), (MALLORY, "refused: reject")]
    )


@pytest.mark.timeout(60)
def test_a_reject_submitted_by_someone_not_allowed_is_refused(sandbox: Sandbox) -> None:
    rollout = step_one(sandbox)
    sandbox.driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL)
    wait_for(lambda: open_approval(sandbox, rollout.thread_ts), what="the approval")
    view = {
        "id": "V0FORGED",
        "type": "modal",
        "callback_id": "canary_reject_reason",
        "private_metadata": json.dumps({"rollout_id": rollout.id, "channel": RELEASE_CHANNEL}),
    }
    values = {"reason": {"text": {"type": "plain_text_input", "value": "because"}}}
    assert sandbox.driver.submit_view(view=view, user=MALLORY, values=values).status == 200
    sandbox.drain()
    after = store_of(sandbox).get(rollout.id)
    assert after is not None and after.phase == "awaiting_approval", after
    assert (MALLORY, "refused: reject") in refusals(sandbox)


# --------------------------------------------------------------------------- image policy


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "image",
    [
        "latest",
        "LATEST",
        "registry.example.com/shop/checkout",
        "registry.example.com/shop/checkout:latest",
        "other.example.org/shop/checkout",
    ],
)
def test_production_refuses_moving_images(sandbox: Sandbox, image: str) -> None:
    reply = sandbox.driver.command(f"start checkout {image}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.json and reply.json["response_type"] == "ephemeral"
    assert "pinned image" in reply.body, reply.body
    assert refusals(sandbox) == [(BOB, "refused: start")]
    nothing_happened(sandbox)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("service", "image"),
    [
        ("checkout", "registry.example.com/shop/checkout@sha256:" + "ab" * 32),
        ("checkout", "v2.3.5"),
        ("web", "latest"),
    ],
)
def test_pinned_images_and_staging_services_may_start(
    sandbox: Sandbox, service: str, image: str
) -> None:
    reply = sandbox.driver.command(f"start {service} {image}", user=BOB, channel=RELEASE_CHANNEL)
    assert "Starting a canary" in reply.body, reply.body
    wait_for(partial(active_rollout, sandbox, service), what="the rollout")
    assert refusals(sandbox) == []


@pytest.mark.parametrize(
    ("policy", "image", "why"),
    [
        (
            "allowed_registries: [registry.example.com/]",
            "evil.example.org/x/checkout:v1",
            "registr",
        ),
        (  # a host that merely starts with the allowed one is another registry
            "allowed_registries: [registry.example.com]",
            "registry.example.com.evil.io/shop/checkout:v1",
            "not from an allowed registry",
        ),
        ("require_digest: true", "v2.3.5", "digest"),
    ],
)
def test_optional_registry_and_digest_policies(
    tmp_path: Path, policy: str, image: str, why: str
) -> None:
    text = sandbox_config(services=["checkout"], steps=[50]).replace(
        "defaults:\n", f"defaults:\n  {policy}\n"
    )
    load_config_text(text)  # today: an unknown key
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=text)
    box.start()
    try:
        box.start_bot()
        reply = box.driver.command(f"start checkout {image}", user=BOB, channel=RELEASE_CHANNEL)
        assert why in reply.body, reply.body
    finally:
        box.stop()


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
    sandbox = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=sandbox_config(services=["checkout"], steps=[50], step_interval="1h"),
    )
    sandbox.start()
    bot = BotProcess(sandbox, log_path=tmp_path / "canary-bot.log", log_level="DEBUG")
    try:
        bot.start()
        answers = full_rollout(sandbox, sandbox.driver_for(bot.url))
    finally:
        bot.close()
        sandbox.stop()
    output = bot.log_text()
    assert " DEBUG slack_sdk" in output, "the served bot did not log at DEBUG"
    assert exposures(output) == []
    assert exposures(everything_sent(sandbox, answers)) == []
