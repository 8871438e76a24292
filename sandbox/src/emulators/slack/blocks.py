"""Block Kit as Slack's API treats it: refuse what Slack refuses, fill in what Slack fills in.

A bot bug that only real Slack would catch (too many blocks, a section over 3000 characters,
two buttons with one action_id) must fail here too, with Slack's error names. Slack also assigns
a `block_id` (and a button `action_id`) when the app leaves them out; clicks carry those ids
back, so the emulator assigns them as well.
"""

from __future__ import annotations

import hashlib
from typing import Any

from emulators.slack.api_args import Args, SlackError
from emulators.slack.records import JsonObject

BLOCK_TYPES = frozenset(
    {
        "actions", "alert", "call", "card", "carousel", "context", "context_actions", "divider",
        "file", "header", "image", "input", "markdown", "plan", "rich_text", "section",
        "table", "task_card", "video",
    }
)  # fmt: skip
MAX_MESSAGE_BLOCKS = 50
MAX_TEXT = 40_000
# (block type, field) -> longest text Slack accepts in that field
TEXT_LIMITS = {("section", "text"): 3000, ("header", "text"): 150}
MAX_ACTION_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000


def parse_blocks(args: Args) -> list[JsonObject] | None:
    """The `blocks` argument as a list, or None when it was not given."""
    value = args.json_value("blocks", error="invalid_blocks_format")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise SlackError("invalid_blocks_format")
    return value


def parse_attachments(args: Args) -> list[JsonObject] | None:
    value = args.json_value("attachments", error="invalid_attachments")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise SlackError("invalid_attachments")
    return value


def check_text(text: str | None) -> None:
    if text is not None and len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")


def check_blocks(blocks: list[JsonObject]) -> None:
    """Raise `invalid_blocks` listing every problem, as Slack does."""
    problems: list[str] = []
    if len(blocks) > MAX_MESSAGE_BLOCKS:
        problems.append(f"must contain at most {MAX_MESSAGE_BLOCKS} blocks [json-pointer:/blocks]")
    seen_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            problems.append(f"unsupported type: {kind!r} [json-pointer:{where}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_ids:
                problems.append(f"duplicate block_id {block_id!r} [json-pointer:{where}]")
            seen_ids.add(str(block_id))
        for (limited_type, key), limit in TEXT_LIMITS.items():
            text = _text_of(block.get(key)) if kind == limited_type else None
            if text is not None and len(text) > limit:
                problems.append(f"must be at most {limit} characters [json-pointer:{where}/{key}]")
        if kind == "section" and block.get("text") is None and not block.get("fields"):
            problems.append(f"must provide text or fields [json-pointer:{where}]")
        problems.extend(_element_problems(block, where))
    if problems:
        raise SlackError("invalid_blocks", errors=problems)


def _text_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value.get("text", ""))
    return None


def _element_problems(block: JsonObject, where: str) -> list[str]:
    problems: list[str] = []
    elements = _interactive_elements(block)
    if block.get("type") == "actions" and len(elements) > MAX_ACTION_ELEMENTS:
        problems.append(f"must contain at most {MAX_ACTION_ELEMENTS} elements [{where}]")
    action_ids: set[str] = set()
    for element in elements:
        action_id = element.get("action_id")
        if action_id is not None:
            if action_id in action_ids:
                problems.append(f"duplicate action_id {action_id!r} [json-pointer:{where}]")
            action_ids.add(str(action_id))
        if element.get("type") == "button":
            label = _text_of(element.get("text"))
            if not label or len(label) > MAX_BUTTON_TEXT:
                problems.append(f"button text must be 1..{MAX_BUTTON_TEXT} characters [{where}]")
            if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
                problems.append(f"button value over {MAX_BUTTON_VALUE} characters [{where}]")
    return problems


def _interactive_elements(block: JsonObject) -> list[JsonObject]:
    if block.get("type") == "actions":
        return [e for e in block.get("elements", []) if isinstance(e, dict)]
    accessory = block.get("accessory")
    return [accessory] if isinstance(accessory, dict) else []


def with_ids(blocks: list[JsonObject], *, seed: str) -> list[JsonObject]:
    """Copies of `blocks` with the ids Slack would have assigned; stable for the same seed."""
    result: list[JsonObject] = []
    for index, block in enumerate(blocks):
        copy = dict(block)
        copy.setdefault("block_id", _short_id(f"{seed}/{index}"))
        if copy.get("type") == "actions":
            copy["elements"] = [
                _with_action_id(e, f"{seed}/{index}/{n}")
                for n, e in enumerate(copy.get("elements", []))
            ]
        elif isinstance(copy.get("accessory"), dict):
            copy["accessory"] = _with_action_id(copy["accessory"], f"{seed}/{index}/accessory")
        result.append(copy)
    return result


def _with_action_id(element: Any, seed: str) -> Any:
    if not isinstance(element, dict) or element.get("type") == "image":
        return element
    return {**element, "action_id": element.get("action_id") or _short_id(seed)}


def _short_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:5]


def find_button(
    blocks: list[JsonObject], action_id: str, *, value: str | None = None
) -> tuple[str, JsonObject] | None:
    """The (block_id, element) of the first button with `action_id` (and `value`, if given)."""
    for block in blocks:
        for element in _interactive_elements(block):
            if (
                element.get("type") == "button"
                and element.get("action_id") == action_id
                and (value is None or element.get("value") == value)
            ):
                return str(block.get("block_id", "")), element
    return None


def buttons(blocks: list[JsonObject]) -> list[tuple[str, str | None]]:
    """(action_id, value) of every button, to say what was there when a click finds nothing."""
    return [
        (str(e.get("action_id")), e.get("value"))
        for b in blocks
        for e in _interactive_elements(b)
        if e.get("type") == "button"
    ]
