"""The approval request in the rollout's thread, and what replaces its buttons afterwards.

The request must let an approver decide without scrolling: what reached the last step, what
pressing Approve will do to production, and how many approvals are needed. Once decided (or
moot) the same message is edited to record who decided and when, with no button left to press.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    PlainTextObject,
)

from handlers.blocks.common import (
    PHASE_LABEL,
    PHASE_SYMBOL,
    Message,
    clip,
    code,
    context,
    fallback,
    mention,
    mentions,
    percent,
    plain,
    reason_text,
    section,
    slack_date,
)
from rollout.model import Phase, Rollout

MENTIONS_MAX = 1500


def approval_request(rollout: Rollout, *, approvers: Sequence[str]) -> Message:
    """Mentions every approver; Approve (with a confirmation) and Reject carry the rollout id."""
    who = mentions(approvers, limit=MENTIONS_MAX) if approvers else ""
    heading = f"{PHASE_SYMBOL[Phase.AWAITING_APPROVAL]} *Approval needed* {who}".rstrip()
    last = rollout.plan.steps[-1] if rollout.plan.steps else 0
    lines = [
        heading,
        f"The canary of *{plain(rollout.service, 100)}* reached its last step "
        f"({percent(rollout.weight or last)} of traffic). Approving promotes "
        f"{code(rollout.canary_image, 600)} to 100%: the stable deployment gets the new image "
        "and the canary is removed.",
    ]
    need = rollout.plan.approvals_required
    if need > 1:
        lines.append(f"*{need}* approvals from different people are needed.")
    if rollout.approvals:
        lines.append(
            f"Approved so far by {mentions(rollout.approvals, limit=600)} "
            f"({len(rollout.approvals)} of {need})."
        )
    if not rollout.plan.self_approval:
        lines.append(
            f"{mention(rollout.started_by)} started this rollout and cannot approve it alone."
        )
    blocks: list[Block] = [
        section("\n".join(lines)),
        ActionsBlock(
            elements=[
                ButtonElement(
                    text="Approve",
                    action_id="approve",
                    value=rollout.id,
                    style="primary",
                    confirm=_approve_confirm(rollout),
                ),
                ButtonElement(text="Reject", action_id="reject", value=rollout.id, style="danger"),
            ]
        ),
        context(f"Rollout {code(rollout.id, 80)}"),
    ]
    text = f"Approval needed for {plain(rollout.service, 100)} {who}".rstrip()
    return Message(text=fallback(text), blocks=tuple(blocks))


def _approve_confirm(rollout: Rollout) -> ConfirmObject:
    return ConfirmObject(
        title=PlainTextObject(text=clip(f"Promote {rollout.service}?", 100)),
        text=f"{code(rollout.canary_image, 200)} will take 100% of traffic.",
        confirm="Approve",
        deny="Cancel",
        style="primary",
    )


def approval_closed(rollout: Rollout) -> Message:
    """The decision (who and when), or why no decision is needed any more; never buttons."""
    text = _outcome(rollout)
    blocks = (section(text), context(f"Rollout {code(rollout.id, 80)}"))
    return Message(text=fallback(text), blocks=blocks)


def _outcome(rollout: Rollout) -> str:
    when = f", {slack_date(rollout.decided_at)}" if rollout.decided_at else ""
    if rollout.rejected_by:
        # The stored reason starts "rejected by <@U…>", which this line already says.
        given = (rollout.reason or "").removeprefix(f"rejected by <@{rollout.rejected_by}>")
        given = given.removeprefix(":").strip()
        why = f": {reason_text(given, 2000)}" if given else ""
        return f":no_entry: Rejected by {mention(rollout.rejected_by)}{when}{why}"
    if rollout.approvals and rollout.approved:
        return (
            f":white_check_mark: Approved by {mentions(rollout.approvals, limit=MENTIONS_MAX)}"
            f"{when}"
        )
    moved_on = PHASE_LABEL[rollout.phase].lower()
    why = f" — {reason_text(rollout.reason, 2000)}" if rollout.reason else ""
    return f"{PHASE_SYMBOL[rollout.phase]} Approval no longer needed: {moved_on}{why}"
