"""The vocabulary every canary-bot message shares: the Message value, mentions, dates, symbols.

Builders compose these pieces so a phase looks the same on the card, in the thread and in
`/canary list`, and so every text that reaches Slack has passed through one place that escapes
user input and keeps it inside Slack's length limits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, MarkdownTextObject, SectionBlock

from rollout.model import Phase

MAX_BLOCKS = 50
SECTION_MAX = 3000
FIELD_MAX = 2000
# The notification text of a message; Slack truncates far later, but a push notification or a
# screen reader should get a sentence, not a page.
FALLBACK_MAX = 3000

PHASE_SYMBOL = {
    Phase.PENDING: ":hourglass_flowing_sand:",
    Phase.PROGRESSING: ":arrows_counterclockwise:",
    Phase.PAUSED: ":double_vertical_bar:",
    Phase.AWAITING_APPROVAL: ":raised_hand:",
    Phase.PROMOTING: ":rocket:",
    Phase.SUCCEEDED: ":white_check_mark:",
    Phase.ROLLING_BACK: ":rewind:",
    Phase.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    Phase.FAILED: ":x:",
}

PHASE_LABEL = {
    Phase.PENDING: "Starting",
    Phase.PROGRESSING: "Progressing",
    Phase.PAUSED: "Paused",
    Phase.AWAITING_APPROVAL: "Awaiting approval",
    Phase.PROMOTING: "Promoting",
    Phase.SUCCEEDED: "Succeeded",
    Phase.ROLLING_BACK: "Rolling back",
    Phase.ROLLED_BACK: "Rolled back",
    Phase.FAILED: "Failed",
}

_USER = re.compile(r"[UW][A-Z0-9]{2,}")
_GROUP = re.compile(r"S[A-Z0-9]{2,}")
# A reason's markup (rollout/wording.py): the bot's own `<@U…>` mentions and the escapes of the
# text quoted into it. Nothing else in a reason is markup.
_REASON_MARKUP = re.compile(r"<@[UW][A-Z0-9]+>|&(?:amp|lt|gt);")


@dataclass(frozen=True)
class Message:
    """One Slack message: notification `text` plus Block Kit `blocks` (at most 50)."""

    text: str
    blocks: tuple[Block, ...]

    def __post_init__(self) -> None:
        if len(self.blocks) > MAX_BLOCKS:
            raise ValueError(f"a message may hold {MAX_BLOCKS} blocks, not {len(self.blocks)}")

    def payload(self) -> dict[str, Any]:
        """Keyword arguments for chat.postMessage/update; `to_dict` enforces Slack's limits."""
        return {"text": self.text, "blocks": [block.to_dict() for block in self.blocks]}


def escape(text: str) -> str:
    """Slack mrkdwn escaping, so `<!channel>` in a reason is shown, not sent."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def reason_markup(text: str) -> str:
    """A reason as mrkdwn: the bot's mentions and the escapes made by `rollout.wording.quote`
    stay; any other `&`, `<` or `>` (in text the domain wrote, like `threshold > 1%`) is
    escaped. User text in a reason is already quoted, so it can never become an entity."""
    parts: list[str] = []
    last = 0
    for match in _REASON_MARKUP.finditer(text):
        parts.append(escape(text[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(escape(text[last:]))
    return "".join(parts)


def clip(text: str, limit: int) -> str:
    """At most `limit` characters; a cut never leaves half an `&amp;` or `<@U…>` behind."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    bracket = cut.rfind("<")
    if bracket != -1 and ">" not in cut[bracket:]:
        cut = cut[:bracket]
    return cut + "…"


def plain(text: str, limit: int) -> str:
    """User or cluster text (a reason, an image) made safe to embed in mrkdwn, then clipped."""
    return clip(escape(text.strip()), limit)


def reason_text(text: str, limit: int) -> str:
    """A reason for mrkdwn (see `reason_markup`), clipped."""
    return clip(reason_markup(text.strip()), limit)


def one_line(text: str, limit: int) -> str:
    """Like `plain`, with line breaks folded, for texts that share a line with others."""
    return plain(" ".join(text.split()), limit)


def code(text: str, limit: int = 200) -> str:
    """Inline code for images and ids; backticks inside would end the span early."""
    inner = one_line(text.replace("`", "'"), limit)
    return f"`{inner}`"


def mention(principal: str) -> str:
    """`U…`/`W…` -> `<@U…>`, `S…` -> `<!subteam^S…>`; anything else (e.g. the bot) as text."""
    if _USER.fullmatch(principal):
        return f"<@{principal}>"
    if _GROUP.fullmatch(principal):
        return f"<!subteam^{principal}>"
    return plain(principal, 80)


def mentions(principals: Sequence[str], *, limit: int) -> str:
    """Space-separated mentions; when they don't fit, as many as fit and `and N more`."""
    shown: list[str] = []
    used = 0
    for index, principal in enumerate(principals):
        text = mention(principal)
        rest = len(principals) - index - 1
        tail = len(f" and {rest} more") if rest else 0
        if used + len(text) + 1 + tail > limit:
            return " ".join(shown) + f" and {len(principals) - index} more"
        shown.append(text)
        used += len(text) + 1
    return " ".join(shown)


def slack_date(moment: datetime, *, pattern: str = "{date_short_pretty} at {time}") -> str:
    """Shown in each reader's own time zone; the fallback (UTC) is for clients that can't."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    fallback = aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(aware.timestamp())}^{pattern}|{fallback}>"


def human_duration(value: timedelta) -> str:
    """Coarse and readable: `42s`, `12m`, `1h 5m`, `2d 3h`."""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def percent(weight: float) -> str:
    """`25%`, `12.5%`: one decimal at most, none when whole."""
    rounded = round(weight, 1)
    return f"{rounded:g}%"


def progress_bar(weight: float, *, width: int = 10) -> str:
    """`▓▓▓░░░░░░░ 25%`: any traffic shows one cell, and only 100% fills the bar."""
    # A weight read back from a half-set-up router can be NaN; show it as no traffic.
    share = min(max(weight, 0.0), 100.0) if math.isfinite(weight) else 0.0
    filled = int(share * width / 100 + 0.5)
    if share > 0 and filled == 0:
        filled = 1
    if share < 100 and filled == width:
        filled = width - 1
    return "▓" * filled + "░" * (width - filled) + f" {percent(share)}"


def phase_text(phase: Phase) -> str:
    return f"{PHASE_SYMBOL[phase]} {PHASE_LABEL[phase]}"


def section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=clip(text, SECTION_MAX)))


def fields(pairs: Sequence[tuple[str, str]]) -> SectionBlock:
    """Up to 10 `*label*\\nvalue` cells, shown two per row."""
    cells = [
        MarkdownTextObject(text=clip(f"*{label}*\n{value}", FIELD_MAX)) for label, value in pairs
    ]
    return SectionBlock(fields=cells)


def context(*texts: str) -> ContextBlock:
    return ContextBlock(
        elements=[MarkdownTextObject(text=clip(text, SECTION_MAX)) for text in texts if text]
    )


def fallback(text: str) -> str:
    return clip(text, FALLBACK_MAX)
