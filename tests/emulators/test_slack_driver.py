"""The driver reaches a real Bolt app over HTTP exactly as Slack would, signatures included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, request
from flask.typing import ResponseReturnValue
from slack_bolt import Ack, App, Respond
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_sdk import WebClient
from waitress.server import BaseWSGIServer, create_server

from emulators.slack import SlackDriver, SlackEmulator

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret"
CHANNEL = "C0RELEASES"


@dataclass
class Bot:
    emulator: SlackEmulator
    driver: SlackDriver
    client: WebClient
    seen: list[dict[str, Any]]


def _bolt_app(client: WebClient, seen: list[dict[str, Any]]) -> App:
    app = App(signing_secret=SECRET, client=client)

    @app.command("/canary")
    def on_command(ack: Ack, command: dict[str, Any]) -> None:
        seen.append(command)
        ack(text=f"heard: {command['text']}", response_type="ephemeral")

    @app.action("approve")
    def on_approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        seen.append(body)
        respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")

    @app.view("start")
    def on_submit(ack: Ack, view: dict[str, Any]) -> None:
        seen.append(view)
        ack()

    return app


@pytest.fixture(scope="module")
def bot() -> Iterator[Bot]:
    with SlackEmulator(users={"U01ALICE": {"name": "alice"}}) as emulator:
        client = WebClient(token=TOKEN, base_url=emulator.api_url, timeout=5)
        seen: list[dict[str, Any]] = []
        handler = SlackRequestHandler(_bolt_app(client, seen))
        web = Flask(__name__)

        @web.post("/slack/events")
        def events() -> ResponseReturnValue:
            return handler.handle(request)

        server = create_server(web, host="127.0.0.1", port=0, threads=4)
        assert isinstance(server, BaseWSGIServer)  # one listening socket, not several
        thread = threading.Thread(target=server.run, name="bolt-under-test", daemon=True)
        thread.start()
        try:
            driver = SlackDriver(
                bot_url=f"http://127.0.0.1:{server.getsockname()[1]}/slack/events",
                signing_secret=SECRET,
                emulator=emulator,
            )
            yield Bot(emulator=emulator, driver=driver, client=client, seen=seen)
        finally:
            server.close()
            thread.join(timeout=5)
            server.task_dispatcher.shutdown()
            assert not thread.is_alive()


def test_signed_command_is_acknowledged_with_the_listener_reply(bot: Bot) -> None:
    reply = bot.driver.command("status checkout", user="U01ALICE", channel=CHANNEL)
    assert reply.status == 200
    assert reply.json == {"text": "heard: status checkout", "response_type": "ephemeral"}
    command = bot.seen[-1]
    assert (command["user_id"], command["user_name"], command["channel_id"]) == (
        "U01ALICE",
        "alice",
        CHANNEL,
    )
    assert command["response_url"] == reply.response_url
    # The driver times each answer; how fast the bot answers is bench/ack.py's figure.
    assert reply.elapsed > 0


def test_unsigned_command_is_refused(bot: Bot) -> None:
    before = len(bot.seen)
    reply = bot.driver.command("list", user="U01ALICE", channel=CHANNEL, sign=False)
    assert reply.status == 401
    assert len(bot.seen) == before


def test_stale_timestamp_is_refused(bot: Bot) -> None:
    before = len(bot.seen)
    six_minutes_ago = int(time.time()) - 360
    reply = bot.driver.command("list", user="U01ALICE", channel=CHANNEL, timestamp=six_minutes_ago)
    assert reply.status == 401
    assert len(bot.seen) == before


def test_tampered_body_is_refused(bot: Bot) -> None:
    body = b"token=x&command=%2Fcanary&text=list&user_id=U01ALICE&channel_id=C0RELEASES"
    stamp = str(int(time.time()))
    signature = bot.driver.signature(body, timestamp=stamp)
    reply = bot.driver.post_raw(
        body.replace(b"list", b"rollback"),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature},
        sign=False,
    )
    assert reply.status == 401


def test_click_reaches_the_action_listener_and_respond_replaces_the_message(bot: Bot) -> None:
    root = bot.client.chat_postMessage(channel=CHANNEL, text="rollout")
    ask = bot.client.chat_postMessage(
        channel=CHANNEL,
        thread_ts=root["ts"],
        text="Approve?",
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "Approve?"}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "action_id": "approve",
                        "value": "rollout-1",
                        "style": "primary",
                    }
                ],
            },
        ],
    )
    message = bot.emulator.message(CHANNEL, ask["ts"])
    assert message is not None

    reply = bot.driver.click(message=message, action_id="approve", user="U02BOB")

    assert reply.status == 200
    body = bot.seen[-1]
    [action] = body["actions"]
    assert (action["value"], action["style"], action["type"]) == ("rollout-1", "primary", "button")
    assert body["container"] == {
        "type": "message",
        "message_ts": ask["ts"],
        "channel_id": CHANNEL,
        "is_ephemeral": False,
        "thread_ts": root["ts"],
    }
    assert body["message"]["blocks"][1]["block_id"] == action["block_id"]
    bot.emulator.wait_for(
        lambda: bool(bot.emulator.responses_to(str(reply.response_url))),
        timeout=5,
        what="respond() to reach the response URL",
    )
    [posted] = bot.emulator.responses_to(str(reply.response_url))
    assert posted.body["replace_original"] is True
    replaced = bot.emulator.message(CHANNEL, ask["ts"])
    assert replaced is not None
    assert (replaced.text, replaced.blocks, replaced.edited) == ("Approved by <@U02BOB>", [], 1)


def test_click_on_a_missing_button_fails_clearly(bot: Bot) -> None:
    posted = bot.client.chat_postMessage(channel=CHANNEL, text="no buttons here")
    message = bot.emulator.message(CHANNEL, posted["ts"])
    assert message is not None
    with pytest.raises(AssertionError, match="no button action_id='approve'"):
        bot.driver.click(message=message, action_id="approve", user="U02BOB")


def test_view_submission_reaches_the_view_listener(bot: Bot) -> None:
    modal = {
        "type": "modal",
        "callback_id": "start",
        "title": {"type": "plain_text", "text": "Start"},
        "blocks": [],
    }
    view = bot.client.views_open(trigger_id="1.2.x", view=modal)["view"]
    values = {"service": {"name": {"type": "plain_text_input", "value": "checkout"}}}
    reply = bot.driver.submit_view(view=view, user="U01ALICE", values=values)
    assert reply.status == 200
    assert bot.seen[-1]["state"]["values"] == values
