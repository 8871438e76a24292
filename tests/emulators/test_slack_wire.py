"""The emulator at the HTTP level: encodings other clients use, and response URLs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.slack import SlackEmulator, SlackFaults

TOKEN = "xoxb-test-token"
CHANNEL = "C0RELEASES"


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator(bot_token=TOKEN) as emu:
        yield emu


def _api(emulator: SlackEmulator, method: str, **form: str) -> dict[str, Any]:
    reply = requests.post(emulator.api_url + method, data=form, timeout=5)
    assert reply.status_code == 200
    body: dict[str, Any] = reply.json()
    return body


def test_form_fields_token_and_json_string_blocks_are_accepted(emulator: SlackEmulator) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    posted = _api(
        emulator, "chat.postMessage", token=TOKEN, channel=CHANNEL, blocks=json.dumps(blocks)
    )
    assert posted["ok"] is True
    [message] = emulator.messages(CHANNEL)
    assert message.blocks[0]["text"]["text"] == "*hi*"
    assert "token" not in emulator.calls[-1].args  # the secret is not kept in the record


def test_query_string_arguments_and_missing_token(emulator: SlackEmulator) -> None:
    reply = requests.get(emulator.api_url + "auth.test", params={"token": TOKEN}, timeout=5)
    assert reply.json()["user_id"] == "UBOT"
    assert _api(emulator, "auth.test")["error"] == "not_authed"


def test_delete_removes_the_message(emulator: SlackEmulator) -> None:
    ts = _api(emulator, "chat.postMessage", token=TOKEN, channel=CHANNEL, text="x")["ts"]
    assert _api(emulator, "chat.delete", token=TOKEN, channel=CHANNEL, ts=ts)["ok"] is True
    assert emulator.messages(CHANNEL) == [] and emulator.message(CHANNEL, ts) is None
    again = _api(emulator, "chat.delete", token=TOKEN, channel=CHANNEL, ts=ts)
    assert again["error"] == "message_not_found"


def test_duplicate_action_ids_in_one_block_are_invalid_blocks(emulator: SlackEmulator) -> None:
    button = {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "go"}
    blocks = [{"type": "actions", "elements": [button, button]}]
    reply = _api(
        emulator, "chat.postMessage", token=TOKEN, channel=CHANNEL, blocks=json.dumps(blocks)
    )
    assert reply["error"] == "invalid_blocks"
    assert any("duplicate action_id" in e for e in reply["errors"])


def test_a_swapped_faults_object_takes_effect(emulator: SlackEmulator) -> None:
    emulator.faults = SlackFaults(error_next=1)
    first = _api(emulator, "chat.postMessage", token=TOKEN, channel=CHANNEL, text="x")
    second = _api(emulator, "chat.postMessage", token=TOKEN, channel=CHANNEL, text="x")
    assert (first["error"], second["ok"]) == ("internal_error", True)


def test_response_url_posts_are_applied_as_slack_applies_them(emulator: SlackEmulator) -> None:
    ts = _api(emulator, "chat.postMessage", token=TOKEN, channel=CHANNEL, text="Approve?")["ts"]
    click_url = emulator.new_response_url(channel=CHANNEL, user="U02BOB", message_ts=ts)
    command_url = emulator.new_response_url(channel=CHANNEL, user="U01ALICE")

    def post(url: str, body: dict[str, Any]) -> int:
        return requests.post(url, json=body, timeout=5).status_code

    assert post(command_url, {"text": "only you can see this"}) == 200
    assert post(command_url, {"text": "everyone sees this", "response_type": "in_channel"}) == 200
    assert post(click_url, {"text": "Approved", "replace_original": True}) == 200

    [ephemeral] = emulator.ephemerals
    assert (ephemeral.user, ephemeral.source) == ("U01ALICE", "response_url")
    assert [m.text for m in emulator.messages(CHANNEL)] == ["Approved", "everyone sees this"]
    assert [r.text for r in emulator.responses_to(click_url)] == ["Approved"]

    assert post(click_url, {"delete_original": True}) == 200
    assert [m.text for m in emulator.messages(CHANNEL)] == ["everyone sees this"]


def test_a_response_url_takes_five_posts_then_is_used_up(emulator: SlackEmulator) -> None:
    url = emulator.new_response_url(channel=CHANNEL, user="U01ALICE")
    codes = [requests.post(url, json={"text": "x"}, timeout=5).status_code for _ in range(6)]
    assert codes == [200] * 5 + [404]
    assert len(emulator.responses_to(url)) == 5
    unknown = url.rsplit("/", 1)[0] + "/nope"
    assert requests.post(unknown, json={"text": "x"}, timeout=5).status_code == 404
