"""Replies to `/canary help`, `list` and `history`, and the ephemeral refusal.

These answer one person's question, so they favour density: one line per active rollout, one
short paragraph per past rollout, and examples in help that can be copied as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, HeaderBlock, PlainTextObject

from handlers.blocks.common import (
    MAX_BLOCKS,
    PHASE_LABEL,
    PHASE_SYMBOL,
    SECTION_MAX,
    Message,
    clip,
    code,
    context,
    escape,
    fallback,
    human_duration,
    mention,
    mentions,
    plain,
    progress_bar,
    reason_markup,
    reason_text,
    section,
    slack_date,
)
from rollout.model import Phase, Rollout

HISTORY_SHOWN = 15
_HELP = (
    (
        "Start a canary",
        "`/canary start checkout v2.3.5`\n"
        "`/canary start checkout registry.example.com/shop/checkout:v2.3.5 --steps 5,25,50 "
        "--interval 30m`\n"
        "A bare tag replaces the tag of the running image. Add `--no-approval` to promote without "
        "asking (where the service allows it).",
    ),
    ("Watch", "`/canary status checkout` · `/canary list` · `/canary history checkout`"),
    (
        "Steer",
        "`/canary pause checkout waiting for the batch job` · `/canary resume checkout`\n"
        "`/canary promote checkout` skips the remaining steps and asks for approval.\n"
        "`/canary rollback checkout latency looks off` sends all traffic back to stable at once.",
    ),
)


def help_message() -> Message:
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="/canary — canary releases"))]
    blocks.extend(section(f"*{title}*\n{body}") for title, body in _HELP)
    blocks.append(
        context(
            "Steps are canary traffic weights in percent; 100% comes after approval. "
            "Rollbacks happen on their own when a metric rule is breached. `--steps`, "
            "`--interval`, `--no-approval` and `promote` are allowed where the service's "
            "`allow_overrides` grants them to you."
        )
    )
    return Message(text="How to use /canary", blocks=tuple(blocks))


def error_message(text: str, *, then: str = "") -> Message:
    """An ephemeral refusal. `text` is plain, and may hold what the user typed: it is escaped
    whole, so nothing in it becomes a mention or a link. `then` is mrkdwn the bot wrote (who
    to ask, which channel), added after the escaping."""
    body = f":warning: {escape(text)}{then}"
    return Message(text=fallback(body), blocks=(section(body),))


def refusal_message(markup: str) -> Message:
    """A refusal from the state machine: a reason-like markup (see `reason_markup`)."""
    body = f":warning: {reason_markup(markup)}"
    return Message(text=fallback(body), blocks=(section(body),))


def list_message(rollouts: Sequence[Rollout], *, now: datetime) -> Message:
    """The active ones among `rollouts`, oldest first, one line each."""
    active = sorted((r for r in rollouts if r.phase.is_active), key=lambda r: r.created_at)
    if not active:
        text = "No rollouts are running. Start one with `/canary start <service> <tag-or-image>`."
        return Message(text=text, blocks=(section(escape(text)),))
    lines = [_list_line(rollout, now=now) for rollout in active]
    title = f"{len(active)} active rollout{'s' if len(active) != 1 else ''}"
    blocks: list[Block] = [section(f"*{title}*")]
    blocks.extend(_pack(lines, room=MAX_BLOCKS - len(blocks)))
    return Message(text=fallback(title), blocks=tuple(blocks))


def _list_line(rollout: Rollout, *, now: datetime) -> str:
    total = len(rollout.plan.steps)
    return (
        f"{PHASE_SYMBOL[rollout.phase]} *{plain(rollout.service, 100)}* "
        f"{code(_short_image(rollout.canary_image), 80)} `{progress_bar(rollout.weight)}` "
        f"step {max(rollout.step_index + 1, 0)}/{total} · {PHASE_LABEL[rollout.phase].lower()} · "
        f"{mention(rollout.started_by)} · {human_duration(now - rollout.created_at)} ago"
    )


def _pack(lines: Sequence[str], *, room: int) -> list[Block]:
    """Lines into as few sections as fit; what doesn't fit in `room` blocks is counted."""
    chunks: list[str] = []
    for index, line in enumerate(lines):
        if chunks and len(chunks[-1]) + 1 + len(line) <= SECTION_MAX:
            chunks[-1] += "\n" + line
            continue
        if len(chunks) == room - 1:
            chunks.append(f"…and {len(lines) - index} more")
            break
        chunks.append(clip(line, SECTION_MAX))
    return [section(chunk) for chunk in chunks]


def _short_image(image: str) -> str:
    """`registry:5000/shop/app:v2` -> `app:v2`: in a list the repository is noise."""
    return image.rsplit("/", 1)[-1]


def history_message(service: str, rollouts: Sequence[Rollout]) -> Message:
    """Recent rollouts of `service`, newest first: outcome, duration, people, reason."""
    recent = sorted(rollouts, key=lambda r: r.created_at, reverse=True)
    name = plain(service, 100)
    if not recent:
        text = f"No rollouts of *{name}* yet."
        return Message(text=text, blocks=(section(text),))
    shown = recent[:HISTORY_SHOWN]
    blocks: list[Block] = [section(f"*Recent rollouts of {name}*")]
    blocks.extend(section(_history_entry(rollout)) for rollout in shown)
    if len(recent) > len(shown):
        blocks.append(context(f"The latest {len(shown)} of {len(recent)} are shown."))
    return Message(text=fallback(f"Recent rollouts of {name}"), blocks=tuple(blocks))


def _history_entry(rollout: Rollout) -> str:
    if rollout.finished_at is not None:
        took = f"in {human_duration(rollout.finished_at - rollout.created_at)}"
    else:
        took = "still running"
    lines = [
        f"{PHASE_SYMBOL[rollout.phase]} {code(_short_image(rollout.canary_image), 150)} "
        f"*{PHASE_LABEL[rollout.phase].lower()}* {took}",
        f"Started by {mention(rollout.started_by)} {slack_date(rollout.created_at)}",
    ]
    if rollout.approvals:
        lines.append(f"Approved by {mentions(rollout.approvals, limit=600)}")
    if rollout.rejected_by:
        lines.append(f"Rejected by {mention(rollout.rejected_by)}")
    if rollout.reason and rollout.phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.PAUSED):
        lines.append(f"> {reason_text(' '.join(rollout.reason.split()), 1000)}")
    return "\n".join(lines)
