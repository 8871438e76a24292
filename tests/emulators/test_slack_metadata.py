"""Message metadata and the reading methods a restarted bot searches it with.

The bot tags each message it posts with metadata and, after a crash, looks for the tag in
`conversations.history` / `conversations.replies` before posting again. These tests hold the
emulator to what Slack does there: which metadata is kept, dropped or refused, and how the two
reading methods order and page their messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.metadata import Metadata

from emulators.slack import SlackEmulator

TOKEN = "xoxb-test-token"
CHANNEL = "C0RELEASES"
TAG: dict[str, Any] = {
    "event_type": "canary_bot_message",
    "event_payload": {"rollout": "r1", "key": "card"},
}


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emu:
        yield emu


@pytest.fixture
def client(emulator: SlackEmulator) -> WebClient:
    return WebClient(token=TOKEN, base_url=emulator.api_url, timeout=5)


def tag(key: str) -> dict[str, Any]:
    return {"event_type": "canary_bot_message", "event_payload": {"rollout": "r1", "key": key}}


def test_metadata_sent_as_json_is_kept_and_shown(
    client: WebClient, emulator: SlackEmulator
) -> None:
    # The SDK's own model, which chat_postMessage sends in a JSON body.
    model = Metadata(event_type=TAG["event_type"], event_payload=TAG["event_payload"])
    reply = client.chat_postMessage(channel=CHANNEL, text="card", metadata=model)
    assert reply["message"]["metadata"] == TAG
    [message] = emulator.messages(CHANNEL)
    assert message.metadata == TAG
    assert message.history[0].metadata == TAG
    assert emulator.as_slack_json(message)["metadata"] == TAG


def test_metadata_sent_as_a_form_field_is_parsed(
    client: WebClient, emulator: SlackEmulator
) -> None:
    client.api_call(
        "chat.postMessage", data={"channel": CHANNEL, "text": "card", "metadata": json.dumps(TAG)}
    )
    [call] = emulator.calls_to("chat.postMessage")
    assert isinstance(call.args["metadata"], str)  # it really arrived form-encoded
    [message] = emulator.messages(CHANNEL)
    assert message.metadata == TAG


def test_update_keeps_replaces_or_removes_metadata(
    client: WebClient, emulator: SlackEmulator
) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="5%", metadata=TAG)["ts"]

    kept = client.chat_update(channel=CHANNEL, ts=ts, text="25%")
    assert kept["message"]["metadata"] == TAG
    assert emulator.messages(CHANNEL)[0].metadata == TAG

    client.chat_update(channel=CHANNEL, ts=ts, text="45%", metadata=tag("card-2"))
    assert emulator.messages(CHANNEL)[0].metadata == tag("card-2")

    # Slack documents an empty object as the way to remove a message's metadata.
    removed = client.chat_update(channel=CHANNEL, ts=ts, text="65%", metadata={})
    assert "metadata" not in removed["message"]
    [card] = emulator.messages(CHANNEL)
    assert card.metadata is None
    assert [v.metadata for v in card.history] == [TAG, TAG, tag("card-2"), None]


@pytest.mark.parametrize(
    "metadata",
    [
        "not json",
        json.dumps(["canary_bot_message"]),
        json.dumps({"event_type": "canary_bot_message"}),
        json.dumps({"event_type": 7, "event_payload": {}}),
        json.dumps({"event_type": "canary_bot_message", "event_payload": "r1"}),
    ],
)
def test_malformed_metadata_is_refused_and_nothing_is_posted(
    client: WebClient, emulator: SlackEmulator, metadata: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        client.api_call(
            "chat.postMessage", data={"channel": CHANNEL, "text": "x", "metadata": metadata}
        )
    assert raised.value.response["error"] == "invalid_metadata_format"
    assert emulator.messages(CHANNEL) == []


def test_malformed_metadata_on_update_changes_nothing(
    client: WebClient, emulator: SlackEmulator
) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="5%", metadata=TAG)["ts"]
    with pytest.raises(SlackApiError) as raised:
        client.api_call(
            "chat.update",
            json={"channel": CHANNEL, "ts": ts, "text": "25%", "metadata": ["not", "an", "object"]},
        )
    assert raised.value.response["error"] == "invalid_metadata_format"
    [card] = emulator.messages(CHANNEL)
    assert (card.text, card.edited, card.metadata) == ("5%", 0, TAG)


def test_an_event_type_slack_rejects_posts_the_message_without_metadata(
    client: WebClient, emulator: SlackEmulator
) -> None:
    # A period is outside Slack's event-type alphabet: the post succeeds, the metadata is
    # dropped, and only a warning says so. A bot that relies on its tag must notice this.
    reply = client.chat_postMessage(
        channel=CHANNEL,
        text="card",
        metadata={"event_type": "canary.bot", "event_payload": {"rollout": "r1"}},
    )
    assert reply["warning"] == "invalid_metadata_schema"
    assert reply["response_metadata"]["warnings"] == ["invalid_metadata_schema"]
    assert "metadata" not in reply["message"]
    [message] = emulator.messages(CHANNEL)
    assert message.metadata is None

    hyphenated = {"event_type": "canary-bot", "event_payload": {}}
    assert "warning" not in client.chat_postMessage(channel=CHANNEL, text="x", metadata=hyphenated)


def test_history_is_newest_first_and_pages_through_every_message(
    client: WebClient, emulator: SlackEmulator
) -> None:
    posted = [
        client.chat_postMessage(channel=CHANNEL, text=f"m{i}", metadata=tag(f"k{i}"))["ts"]
        for i in range(250)
    ]
    client.chat_postMessage(channel=CHANNEL, text="in a thread", thread_ts=posted[0])

    first = client.conversations_history(channel=CHANNEL)
    assert len(first["messages"]) == 100 and first["has_more"]  # Slack's default limit

    # The SDK follows next_cursor itself; each turn of its iterator swaps in the next page.
    # At most five turns, so a cursor that leads nowhere fails here instead of looping.
    responses = client.conversations_history(channel=CHANNEL, limit=100, include_all_metadata=True)
    pages = [page.data for page in islice(responses, 5)]
    assert [len(p["messages"]) for p in pages] == [100, 100, 50]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert pages[-1]["response_metadata"]["next_cursor"] == ""
    seen = [m for p in pages for m in p["messages"]]
    assert [m["ts"] for m in seen] == list(reversed(posted))  # no thread reply, none twice
    assert [m["metadata"]["event_payload"]["key"] for m in seen[:2]] == ["k249", "k248"]
    assert seen[-1]["reply_count"] == 1


def test_history_hides_metadata_unless_asked(client: WebClient) -> None:
    client.chat_postMessage(channel=CHANNEL, text="card", metadata=TAG)
    [plain] = client.conversations_history(channel=CHANNEL)["messages"]
    assert "metadata" not in plain
    [hidden] = client.conversations_history(channel=CHANNEL, include_all_metadata=False)["messages"]
    assert "metadata" not in hidden
    [shown] = client.conversations_history(channel=CHANNEL, include_all_metadata=True)["messages"]
    assert shown["metadata"] == TAG


def test_a_page_cursor_is_stable_when_new_messages_arrive(client: WebClient) -> None:
    posted = [client.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"] for i in range(5)]
    first = client.conversations_history(channel=CHANNEL, limit=2)
    client.chat_postMessage(channel=CHANNEL, text="late")
    cursor = first["response_metadata"]["next_cursor"]
    second = client.conversations_history(channel=CHANNEL, limit=2, cursor=cursor)
    assert [m["ts"] for m in second["messages"]] == [posted[2], posted[1]]


def test_history_honours_oldest_latest_and_inclusive(client: WebClient) -> None:
    ts = [client.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"] for i in range(5)]

    def window(**bounds: Any) -> list[str]:
        return [
            m["ts"] for m in client.conversations_history(channel=CHANNEL, **bounds)["messages"]
        ]

    assert window(oldest=ts[1], latest=ts[3]) == [ts[2]]
    assert window(oldest=ts[1], latest=ts[3], inclusive=True) == [ts[3], ts[2], ts[1]]
    assert window(oldest=ts[3]) == [ts[4]]


def test_replies_are_root_first_oldest_first_and_page_with_metadata(
    client: WebClient, emulator: SlackEmulator
) -> None:
    root = client.chat_postMessage(channel=CHANNEL, text="card", metadata=tag("card"))["ts"]
    replies = [
        client.chat_postMessage(
            channel=CHANNEL, text=f"step {i}", thread_ts=root, metadata=tag(f"step-{i}")
        )["ts"]
        for i in range(5)
    ]
    responses = client.conversations_replies(
        channel=CHANNEL, ts=root, limit=2, include_all_metadata=True
    )
    pages = [page.data for page in islice(responses, 5)]
    assert [[m["ts"] for m in p["messages"]] for p in pages] == [
        [root, replies[0]],
        replies[1:3],
        replies[3:5],
    ]
    keys = [m["metadata"]["event_payload"]["key"] for p in pages for m in p["messages"]]
    assert keys == ["card", *(f"step-{i}" for i in range(5))]

    unasked = client.conversations_replies(channel=CHANNEL, ts=root)["messages"]
    assert len(unasked) == 6 and all("metadata" not in m for m in unasked)
    assert [m.metadata for m in emulator.thread(CHANNEL, root)] == [
        tag(f"step-{i}") for i in range(5)
    ]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.conversations_history(channel="#releases"), "channel_not_found"),
        (lambda c: c.conversations_history(channel=CHANNEL, cursor="bm9wZQ=="), "invalid_cursor"),
        (lambda c: c.conversations_history(channel=CHANNEL, cursor="%%%"), "invalid_cursor"),
        (lambda c: c.conversations_history(channel=CHANNEL, oldest="soon"), "invalid_ts_oldest"),
        (lambda c: c.conversations_history(channel=CHANNEL, latest="later"), "invalid_ts_latest"),
        (lambda c: c.conversations_replies(channel=CHANNEL, ts="1.000001"), "thread_not_found"),
    ],
)
def test_reading_errors_use_slacks_names(
    client: WebClient, call: Callable[[WebClient], object], error: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        call(client)
    assert raised.value.response["error"] == error
