"""What the Block Kit message tests share: inputs at Slack's limits, and ways to read a message.

`payload` runs slack_sdk's own validation (`Message.payload()`: text lengths, element counts,
button text) and checks the limits slack_sdk does not, so each test that reads a message also
proves it fits what Slack accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from handlers.blocks import Message
from rollout.model import Phase

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HUGE = "x" * 10_000
NASTY = "<!channel> & <@U999> *bold* `tick` " * 300
ACTIVE_PHASES = [phase for phase in Phase if phase.is_active]


def payload(message: Message) -> dict[str, Any]:
    data = message.payload()
    assert len(data["blocks"]) <= 50
    assert 0 < len(data["text"]) <= 3000
    # Limits slack_sdk does not check itself: section fields and context texts.
    for block in data["blocks"]:
        assert all(0 < len(cell["text"]) <= 2000 for cell in block.get("fields", []))
        if block["type"] == "context":
            assert all(0 < len(element["text"]) <= 3000 for element in block["elements"])
    return data


def texts(data: Any) -> Iterator[str]:
    """Every `text` string anywhere in a payload, buttons and confirmations included."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from texts(value)
    elif isinstance(data, list):
        for item in data:
            yield from texts(item)


def all_text(message: Message) -> str:
    return "\n".join(texts(payload(message)))


def buttons(message: Message) -> dict[str, dict[str, Any]]:
    found = {}
    for block in payload(message)["blocks"]:
        if block["type"] == "actions":
            for element in block["elements"]:
                found[element["action_id"]] = element
    return found
