"""Only requests Slack signed, recently, over the exact body, and of at most 256 KB reach the
bot: anything else is a 401 or a 413 and changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import requests

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, SIGNING_SECRET, Sandbox
from emulators.slack import DriverResponse, payloads
from tests.reliability.security.conftest import nothing_happened
from tests.reliability.support import FORM

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
