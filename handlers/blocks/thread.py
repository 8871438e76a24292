"""Thread replies: one short line per thing that happened to the rollout.

The card says where the rollout stands; the thread tells how it got there, so each reply says
what changed, who did it and why, in the words a release engineer would use in the channel.
"""

from __future__ import annotations

from typing import assert_never

from handlers.blocks.common import (
    PHASE_SYMBOL,
    Message,
    code,
    fallback,
    human_duration,
    mention,
    percent,
    plain,
    progress_bar,
    reason_text,
    section,
)
from rollout.events import (
    ApprovalRecorded,
    Event,
    Finished,
    GateChecked,
    Paused,
    PromotionStarted,
    Resumed,
    RollbackStarted,
    StepReached,
)
from rollout.model import Phase, Rollout

REASON_MAX = 2000


def event_message(rollout: Rollout, event: Event) -> Message:
    """The thread reply for `event`; the text doubles as the notification."""
    text = _describe(rollout, event)
    return Message(text=fallback(text), blocks=(section(text),))


def _describe(rollout: Rollout, event: Event) -> str:
    match event:
        case StepReached():
            return (
                f":arrow_up_small: Step {event.step} of {event.steps}: the canary now gets "
                f"*{percent(event.weight)}* of traffic  `{progress_bar(event.weight)}`"
            )
        case Paused():
            why = f": {reason_text(event.reason, REASON_MAX)}" if event.reason else ""
            return (
                f"{PHASE_SYMBOL[Phase.PAUSED]} Paused by {mention(event.by)}{why}\n"
                f"The canary keeps {percent(rollout.weight)} of traffic until "
                f"`/canary resume {plain(rollout.service, 100)}`."
            )
        case Resumed():
            return f":arrow_forward: Resumed by {mention(event.by)}"
        case ApprovalRecorded():
            return (
                f":ballot_box_with_check: Approved by {mention(event.by)}: {event.have} of "
                f"{event.need} approvals, {max(event.need - event.have, 0)} more needed"
            )
        case PromotionStarted():
            who = f" by {mention(event.by)}" if event.by else ""
            return (
                f"{PHASE_SYMBOL[Phase.PROMOTING]} Promotion started{who}: the stable deployment "
                f"moves to {code(rollout.canary_image)} and takes 100% of traffic."
            )
        case RollbackStarted():
            who = f" by {mention(event.by)}" if event.by else ""
            return (
                f"{PHASE_SYMBOL[Phase.ROLLING_BACK]} Rolling back{who}: "
                f"{reason_text(event.reason, REASON_MAX)}\nAll traffic goes back to "
                f"{code(rollout.stable_image)}."
            )
        case Finished():
            return _finished(rollout, event)
        case GateChecked():
            mark = ":white_check_mark:" if event.passed else ":x:"
            verdict = "passed" if event.passed else "failed"
            head = f"{mark} Gate *{plain(event.name, 100)}* {verdict}"
            first, _, lines = event.detail.strip().partition("\n")
            if lines:  # log or output lines: the why, then the lines as they were
                body = plain(lines.replace("`", "'"), REASON_MAX)
                return f"{head}: {reason_text(first, 500)}\n```{body}```"
            return head + (f": {reason_text(event.detail, REASON_MAX)}" if event.detail else "")
    assert_never(event)


def _finished(rollout: Rollout, event: Finished) -> str:
    took = human_duration(event.duration)
    why = f": {reason_text(event.reason, REASON_MAX)}" if event.reason else "."
    if event.phase == Phase.SUCCEEDED:
        return (
            f"{PHASE_SYMBOL[Phase.SUCCEEDED]} Released {code(rollout.canary_image)} in {took}: "
            "it now serves all traffic and the canary is gone."
        )
    if event.phase == Phase.ROLLED_BACK:
        return (
            f"{PHASE_SYMBOL[Phase.ROLLED_BACK]} Rolled back after {took}{why}\n"
            f"All traffic is on {code(rollout.stable_image)} again."
        )
    if event.phase == Phase.FAILED:
        return (
            f"{PHASE_SYMBOL[Phase.FAILED]} The rollback could not be completed after {took}{why}\n"
            "The cluster needs a look by hand."
        )
    return f"Finished ({plain(event.phase, 50)}) after {took}{why}"
