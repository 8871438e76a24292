"""The Slack emulator answers the real slack_sdk WebClient the way Slack does."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from emulators.slack import SlackEmulator, SlackFaults

TOKEN = "xoxb-test-token"
CHANNEL = "C0RELEASES"
APPROVE_BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Promote *checkout* to 100%?"}},
    {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Approve"},
                "action_id": "approve",
                "value": "r1",
            },
        ],
    },
]


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator(
        usergroups={"S0SRE": ["U02BOB", "U03CAROL"]},
        users={"U02BOB": {"real_name": "Bob Builder", "tz": "Europe/Paris", "tz_offset": 3600}},
    ) as emu:
        yield emu


@pytest.fixture
def client(emulator: SlackEmulator) -> WebClient:
    return WebClient(token=TOKEN, base_url=emulator.api_url, timeout=5)


def test_auth_test_names_the_bot(client: WebClient) -> None:
    reply = client.auth_test()
    assert (reply["user_id"], reply["bot_id"], reply["team_id"]) == ("UBOT", "BBOT", "T0CANARY")


def test_root_replies_and_update_are_recorded_as_slack_shows_them(
    client: WebClient, emulator: SlackEmulator
) -> None:
    root = client.chat_postMessage(channel=CHANNEL, text="checkout: 5%", blocks=APPROVE_BLOCKS)
    first = client.chat_postMessage(channel=CHANNEL, text="weight 5%", thread_ts=root["ts"])
    second = client.chat_postMessage(channel=CHANNEL, text="weight 25%", thread_ts=root["ts"])
    client.chat_update(channel=CHANNEL, ts=root["ts"], text="checkout: 25%", blocks=[])
    client.chat_update(channel=CHANNEL, ts=root["ts"], text="checkout: 45%")

    assert float(root["ts"]) < float(first["ts"]) < float(second["ts"])
    [card] = emulator.messages(CHANNEL)
    assert (card.ts, card.text, card.edited, card.blocks) == (root["ts"], "checkout: 45%", 2, [])
    assert [v.text for v in card.history] == ["checkout: 5%", "checkout: 25%", "checkout: 45%"]
    assert card.history[0].blocks[1]["elements"][0]["action_id"] == "approve"
    assert [m.text for m in emulator.thread(CHANNEL, root["ts"])] == ["weight 5%", "weight 25%"]
    assert all(m.thread_ts == root["ts"] for m in emulator.thread(CHANNEL, root["ts"]))

    replies = client.conversations_replies(channel=CHANNEL, ts=root["ts"])["messages"]
    assert [m["ts"] for m in replies] == [root["ts"], first["ts"], second["ts"]]
    assert replies[0]["reply_count"] == 2 and replies[0]["edited"]["user"] == "UBOT"


def test_slack_fills_in_block_ids_and_keeps_given_ones(client: WebClient) -> None:
    reply = client.chat_postMessage(channel=CHANNEL, text="t", blocks=APPROVE_BLOCKS)
    blocks = reply["message"]["blocks"]
    assert all(b["block_id"] for b in blocks)
    assert blocks[1]["elements"][0]["action_id"] == "approve"


def test_ts_is_unique_and_increasing_under_concurrent_posts(
    client: WebClient, emulator: SlackEmulator
) -> None:
    def post_many(n: int) -> None:
        for i in range(8):
            client.chat_postMessage(channel=CHANNEL, text=f"{n}-{i}")

    threads = [threading.Thread(target=post_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    stamps = [c.response["ts"] for c in emulator.calls_to("chat.postMessage")]
    assert len(set(stamps)) == 32
    assert stamps == sorted(stamps, key=float)


def test_ephemeral_is_kept_apart_from_channel_messages(
    client: WebClient, emulator: SlackEmulator
) -> None:
    reply = client.chat_postEphemeral(channel=CHANNEL, user="U01ALICE", text="unknown service")
    assert reply["message_ts"]
    assert emulator.messages(CHANNEL) == []
    [ephemeral] = emulator.ephemerals
    assert (ephemeral.user, ephemeral.text) == ("U01ALICE", "unknown service")


def test_permalinks_of_root_and_reply(client: WebClient) -> None:
    root = client.chat_postMessage(channel=CHANNEL, text="root")
    reply = client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=root["ts"])
    root_link = client.chat_getPermalink(channel=CHANNEL, message_ts=root["ts"])["permalink"]
    reply_link = client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])["permalink"]
    base = f"https://canary-demo.slack.com/archives/{CHANNEL}/p"
    assert root_link == base + root["ts"].replace(".", "")
    assert reply_link == (
        base + reply["ts"].replace(".", "") + f"?thread_ts={root['ts']}&cid={CHANNEL}"
    )


def test_usergroups_and_users(client: WebClient, emulator: SlackEmulator) -> None:
    assert client.usergroups_users_list(usergroup="S0SRE")["users"] == ["U02BOB", "U03CAROL"]
    emulator.usergroups["S0SRE"].append("U04DAN")  # membership changes while running
    assert client.usergroups_users_list(usergroup="S0SRE")["users"][-1] == "U04DAN"
    with pytest.raises(SlackApiError) as missing:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert missing.value.response["error"] == "no_such_subteam"

    bob = client.users_info(user="U02BOB")["user"]
    assert (bob["real_name"], bob["tz"], bob["tz_offset"]) == ("Bob Builder", "Europe/Paris", 3600)
    stranger = client.users_info(user="U09X")["user"]
    assert stranger["tz_offset"] == 0 and stranger["real_name"]


def test_files_upload_v2_lands_in_the_thread(client: WebClient, emulator: SlackEmulator) -> None:
    root = client.chat_postMessage(channel=CHANNEL, text="root")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    reply = client.files_upload_v2(
        channel=CHANNEL, thread_ts=root["ts"], file=png, filename="step-1.png", title="Step 1"
    )
    assert reply["file"]["name"] == "step-1.png"
    [upload] = emulator.files
    assert (upload.content, upload.title, upload.channel) == (png, "Step 1", CHANNEL)
    assert upload.thread_ts == root["ts"]
    [carrier] = emulator.thread(CHANNEL, root["ts"])
    assert [f.file_id for f in carrier.files] == [upload.file_id]
    assert client.files_info(file=upload.file_id)["file"]["size"] == len(png)


def test_upload_of_wrong_length_is_refused(client: WebClient, emulator: SlackEmulator) -> None:
    url = client.files_getUploadURLExternal(filename="a.png", length=10)["upload_url"]
    assert url.startswith(emulator.base_url)
    assert requests.post(url, data=b"short", timeout=5).status_code == 400
    assert emulator.files == []


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.chat_postMessage(channel=CHANNEL), "no_text"),
        (lambda c: c.chat_postMessage(channel="#releases", text="x"), "channel_not_found"),
        (lambda c: c.chat_update(channel=CHANNEL, ts="1.000001", text="x"), "message_not_found"),
        (
            lambda c: c.chat_postMessage(channel=CHANNEL, text="x", thread_ts="1.000001"),
            "invalid_thread_ts",
        ),
        (lambda c: c.api_call("chat.frobnicate"), "unknown_method"),
        (
            lambda c: c.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"type": "nope"}]),
            "invalid_blocks",
        ),
        (
            lambda c: c.chat_postMessage(
                channel=CHANNEL, text="x", blocks=[{"type": "divider"}] * 51
            ),
            "invalid_blocks",
        ),
    ],
)
def test_slack_error_names(
    client: WebClient, call: Callable[[WebClient], object], error: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        call(client)
    assert raised.value.response["error"] == error


def test_bad_token_is_invalid_auth(emulator: SlackEmulator) -> None:
    intruder = WebClient(token="xoxb-wrong", base_url=emulator.api_url, timeout=5)
    with pytest.raises(SlackApiError) as raised:
        intruder.chat_postMessage(channel=CHANNEL, text="hello")
    assert raised.value.response["error"] == "invalid_auth"
    assert emulator.messages(CHANNEL) == []


def test_rate_limit_is_a_429_the_sdk_retry_handler_waits_out(emulator: SlackEmulator) -> None:
    retrying = WebClient(
        token=TOKEN,
        base_url=emulator.api_url,
        timeout=5,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    emulator.faults.rate_limit_next = 1
    retrying.chat_postMessage(channel=CHANNEL, text="after a pause")
    first, second = emulator.calls_to("chat.postMessage")
    assert (first.status, first.error, second.ok) == (429, "ratelimited", True)
    assert second.at - first.at >= 1.0  # Retry-After: 1 waited out (a lower bound: load only adds)
    assert [m.text for m in emulator.messages(CHANNEL)] == ["after a pause"]


def test_without_a_retry_handler_the_rate_limit_surfaces(
    client: WebClient, emulator: SlackEmulator
) -> None:
    emulator.faults.rate_limit_next = 1
    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "1"


def test_fault_rates_are_deterministic_per_seed() -> None:
    def outcomes(seed: int) -> list[str | None]:
        faults = SlackFaults(rate_limit_rate=0.2, error_rate=0.3, seed=seed)
        return [faults.draw("chat.postMessage") for _ in range(40)]

    assert outcomes(7) == outcomes(7)
    assert {"ratelimited", "internal_error", None} == set(outcomes(7))
    assert outcomes(7) != outcomes(8)
    only_updates = SlackFaults(error_rate=1.0, methods=frozenset({"chat.update"}))
    assert only_updates.draw("chat.postMessage") is None
    assert only_updates.draw("chat.update") == "internal_error"


def test_views_open_and_update_are_recorded_with_an_id(
    client: WebClient, emulator: SlackEmulator
) -> None:
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Start"}, "blocks": []}
    opened = client.views_open(trigger_id="1.2.abc", view=modal)["view"]
    client.views_update(view_id=opened["id"], view={**modal, "callback_id": "start"})
    assert [v["id"] for v in emulator.views] == [opened["id"], opened["id"]]
    assert emulator.views[-1]["callback_id"] == "start"


def test_wait_for_reports_what_it_waited_for(emulator: SlackEmulator) -> None:
    with pytest.raises(AssertionError, match="the approval request"):
        emulator.wait_for(lambda: False, timeout=0.1, what="the approval request")
