"""The status card: the rollout's root message, edited in place at every change.

Someone glancing at the channel should learn from the card alone where the release stands:
which cluster and service, which image replaces which, the phase, the traffic share actually
in effect, when the next step comes (in their own time zone), who started it and the latest
verdict. The same body answers `/canary status`, without the buttons.
"""

from __future__ import annotations

import re
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    HeaderBlock,
    PlainTextObject,
)

from handlers.blocks.common import (
    PHASE_LABEL,
    PHASE_SYMBOL,
    Message,
    clip,
    code,
    context,
    escape,
    fallback,
    fields,
    mention,
    mentions,
    percent,
    phase_text,
    plain,
    progress_bar,
    reason_text,
    section,
    slack_date,
)
from rollout.model import Phase, Rollout

HEADER_MAX = 150
_REASON_SHOWN = {Phase.PAUSED, Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED}
_PAUSABLE = {Phase.PENDING, Phase.PROGRESSING, Phase.AWAITING_APPROVAL}
# Rolling back again while a rollback runs, or pausing a promotion, would only be refused.
_ROLLBACKABLE = {*_PAUSABLE, Phase.PAUSED, Phase.PROMOTING, Phase.FAILED}


def status_card(
    rollout: Rollout,
    *,
    cluster_name: str,
    next_step_at: datetime | None,
    verdict: str | None = None,
) -> Message:
    """The root message; buttons only while a click could still change something."""
    blocks = _body(rollout, cluster_name=cluster_name, next_step_at=next_step_at, verdict=verdict)
    buttons = _buttons(rollout)
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    blocks.append(
        context(f"Rollout {code(rollout.id, 80)} · updated {slack_date(rollout.updated_at)}")
    )
    return Message(text=_summary(rollout, cluster_name), blocks=tuple(blocks))


def status_message(
    rollout: Rollout,
    *,
    cluster_name: str,
    next_step_at: datetime | None,
    verdict: str | None = None,
) -> Message:
    """The `/canary status` reply: the card's facts as of now, pointing at the live card."""
    blocks = _body(rollout, cluster_name=cluster_name, next_step_at=next_step_at, verdict=verdict)
    blocks.append(
        context(
            f"As of {slack_date(rollout.updated_at)} · the live card and its thread are in "
            f"<#{rollout.channel}> · rollout {code(rollout.id, 80)}"
        )
    )
    return Message(text=_summary(rollout, cluster_name), blocks=tuple(blocks))


def _summary(rollout: Rollout, cluster_name: str) -> str:
    return fallback(
        f"{PHASE_LABEL[rollout.phase]}: {plain(rollout.service, 100)} canary at "
        f"{percent(rollout.weight)} on {plain(cluster_name, 100)}"
    )


def _body(
    rollout: Rollout, *, cluster_name: str, next_step_at: datetime | None, verdict: str | None
) -> list[Block]:
    title = f"{PHASE_SYMBOL[rollout.phase]} {rollout.service} · {cluster_name}"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=clip(title, HEADER_MAX), emoji=True)),
        section(f"{code(rollout.stable_image, 1200)} → {_image_text(rollout.canary_image)}"),
    ]
    cells = [
        ("Phase", phase_text(rollout.phase)),
        ("Traffic to canary", f"`{progress_bar(rollout.weight)}`"),
        ("Step", _step_text(rollout)),
    ]
    next_step = _next_step_text(rollout, next_step_at)
    if next_step:
        cells.append(("Next step", next_step))
    if rollout.gate and rollout.phase in (Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED):
        cells.append(("Gate running", code(rollout.gate, 100)))
    cells.append(("Started by", f"{mention(rollout.started_by)} {slack_date(rollout.created_at)}"))
    if rollout.pipeline:
        cells.append(("Pipeline", pipeline_text(rollout.pipeline)))
    if verdict:
        cells.append(("Latest analysis", verdict_text(verdict)))
    if rollout.approvals:
        cells.append(("Approved by", mentions(rollout.approvals, limit=1500)))
    blocks.append(fields(cells))
    if rollout.phase in _REASON_SHOWN and rollout.reason:
        blocks.append(section(f"*Reason:* {reason_text(rollout.reason, 2500)}"))
    if rollout.phase is Phase.FAILED:
        blocks.append(
            section(
                ":warning: The rollback could not be completed: check the cluster by hand "
                f"(namespace {code(rollout.namespace, 100)}, "
                f"deployment {code(rollout.deployment, 100)})."
            )
        )
    return blocks


def _image_text(image: str) -> str:
    """`repo:tag` and the short digest it is pinned to (the digest decides what runs)."""
    name, at, digest = image.partition("@")
    if not at or ":" not in name.rpartition("/")[2]:
        return code(image, 1200)
    return f"{code(name, 1200)} @ {code(digest.removeprefix('sha256:')[:12], 20)}"


def _step_text(rollout: Rollout) -> str:
    total = len(rollout.plan.steps)
    if rollout.phase in (Phase.PROMOTING, Phase.SUCCEEDED):
        return f"{total} of {total}, then 100%"
    if rollout.step_index < 0:
        return f"0 of {total}"
    return f"{rollout.step_index + 1} of {total} ({rollout.target_weight}%)"


def _next_step_text(rollout: Rollout, next_step_at: datetime | None) -> str | None:
    if rollout.phase is Phase.PAUSED:
        return "on hold until resumed"
    if rollout.phase is Phase.AWAITING_APPROVAL:
        return "100% once approved"
    if rollout.held_for_data and rollout.no_data_since is not None:
        return f"held: no metrics since {slack_date(rollout.no_data_since)}"
    if next_step_at is not None and rollout.phase in (Phase.PENDING, Phase.PROGRESSING):
        return slack_date(next_step_at)
    return None


def verdict_text(verdict: str) -> str:
    """A verdict with a coloured dot when it starts with a known word."""
    lowered = verdict.lower()
    if lowered.startswith("healthy"):
        dot = ":large_green_circle:"
    elif lowered.startswith("breached"):
        dot = ":red_circle:"
    elif lowered.startswith("no data"):
        dot = ":white_circle:"
    else:
        dot = ":grey_question:"
    return f"{dot} {plain(verdict, 1500)}"


def _buttons(rollout: Rollout) -> list[ButtonElement]:
    buttons: list[ButtonElement] = []
    if rollout.phase in _PAUSABLE:
        buttons.append(ButtonElement(text="Pause", action_id="pause", value=rollout.id))
    if rollout.phase is Phase.PAUSED:
        buttons.append(
            ButtonElement(text="Resume", action_id="resume", value=rollout.id, style="primary")
        )
    if rollout.phase in _ROLLBACKABLE:
        buttons.append(
            ButtonElement(
                text="Roll back",
                action_id="rollback",
                value=rollout.id,
                style="danger",
                confirm=_rollback_confirm(rollout),
            )
        )
    return buttons


def _rollback_confirm(rollout: Rollout) -> ConfirmObject:
    return ConfirmObject(
        title=PlainTextObject(text=clip(f"Roll back {rollout.service}?", 100)),
        text=(
            f"All traffic goes back to {code(rollout.stable_image, 150)} and the canary is "
            "removed. This rollout cannot be resumed afterwards."
        ),
        confirm="Roll back",
        deny="Cancel",
        style="danger",
    )


# A pipeline URL becomes a link only when nothing in it can end Slack's `<url|text>` early.
_SAFE_URL = re.compile(r"https?://[^\s<>|]{1,500}")


def pipeline_text(pipeline: dict[str, str]) -> str:
    """`ci:github-actions · commit 1a2b3c4 · run by alice · <url|pipeline run>`: all of it
    the pipeline's own text (escaped), but for the link, which is the point of the line."""
    parts = [plain(pipeline.get("name", "pipeline"), 80)]
    if pipeline.get("commit"):
        parts.append(f"commit {code(pipeline['commit'][:12], 40)}")
    if pipeline.get("triggered_by"):
        parts.append(f"run by {plain(pipeline['triggered_by'], 80)}")
    url = pipeline.get("pipeline_url", "")
    if _SAFE_URL.fullmatch(url):
        parts.append(f"<{escape(url)}|pipeline run>")
    return " · ".join(parts)
