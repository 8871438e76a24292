"""Through signed HTTP: a pause reason that tries to ping a group and plant a link stays text.

Everything the bot sends afterwards (acknowledgement, Web API posts and updates, response_url
posts) is searched for the entities the user typed; they appear only escaped.
"""

from __future__ import annotations

import json
import re
from functools import partial

import pytest

from canary_sandbox.sandbox import ALICE, BOB, RELEASE_CHANNEL, Sandbox
from tests.reliability.support import active_rollout, wait_for

TYPED = "<!subteam^S0SRE> <https://evil.example|Click here to approve>"
ENTITY = re.compile(r"<[^<>]*>")


def everything_sent(sandbox: Sandbox, *, since: int) -> list[str]:
    sent = [
        json.dumps(call.args)
        for call in sandbox.slack.calls[since:]
        if call.method.startswith(("chat.", "files."))
    ]
    return sent + [json.dumps(post.body) for post in sandbox.slack.responses]


@pytest.mark.timeout(60)
def test_a_pause_reason_posts_no_live_entity(sandbox: Sandbox) -> None:
    assert sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    rollout = wait_for(
        partial(active_rollout, sandbox, "checkout", where=lambda r: r.thread_ts and r.step_ready),
        what="step 1",
    )
    since = len(sandbox.slack.calls)
    answer = sandbox.driver.command(f"pause checkout {TYPED}", user=ALICE, channel=RELEASE_CHANNEL)
    assert answer.status == 200, answer.body
    replies = wait_for(
        lambda: [
            m
            for m in sandbox.slack.thread(RELEASE_CHANNEL, rollout.thread_ts or "")
            if "Paused by" in m.text
        ],
        what="the pause in the thread",
    )
    assert sandbox.runtime is not None
    sandbox.runtime.drain()  # the card update and anything else the pause queued
    sent = [answer.body, *everything_sent(sandbox, since=since)]
    live = {entity for text in sent for entity in ENTITY.findall(text)}
    assert not [e for e in live if "subteam" in e or "evil.example" in e or "http" in e], live
    # Only the bot's own mention of who paused is live; the typed text is shown, escaped.
    assert "<@U01ALICE>" in replies[0].text
    assert "&lt;!subteam^S0SRE&gt;" in replies[0].text
