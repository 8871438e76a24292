"""Every message a rollout sends goes out exactly once, even across crashes.

Two rules make that hold. First, a message the state machine decided on is stored in the
rollout's outbox together with the decision (see `rollout/outbox.py`), so a crash cannot lose
it. Second, each message has a key; before posting, the key is marked `pending` in SQLite, and
after, `sent` with the message's ts. A key found `pending` after a restart means the bot died
mid-post: the notifier then looks for the message in Slack by the key it carries in its
metadata, and posts only if it is not there. Slack trouble never stops a rollout: failures are
logged and the message stays queued for the next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from rollout.analysis import Analysis, Measurement
from rollout.events import Alert, Finished, StepReached
from rollout.machine import Action, Announce, CloseApproval, Page, RequestApproval
from rollout.model import Phase, Rollout
from rollout.outbox import MessageAction, from_json, message_key, to_json
from rollout.ports import Clock, Notifier
from rollout.store import SqliteStore

log = logging.getLogger(__name__)

BOT = "canary-bot"
CARD_KEY = "card"


class Messenger:
    def __init__(self, *, store: SqliteStore, notifier: Notifier, clock: Clock) -> None:
        self._store = store
        self._notifier = notifier
        self._clock = clock

    # ----------------------------------------------------------------- the outbox

    def enqueue(self, rollout: Rollout, actions: Sequence[Action]) -> tuple[Rollout, list[str]]:
        """Put the message actions into the outbox; returns the keys, aligned with `actions`
        (an empty key for a cluster action)."""
        keys: list[str] = []
        entries = []
        for index, action in enumerate(actions):
            if isinstance(action, Announce | Page | RequestApproval | CloseApproval):
                key = message_key(action, decided_at=rollout.updated_at, index=index)
                entries.append(to_json(key, action))
                keys.append(key)
            else:
                keys.append("")
        if not entries:
            return rollout, keys
        return replace(rollout, outbox=(*rollout.outbox, *entries)), keys

    def flush(self, rollout: Rollout) -> Rollout:
        """Send whatever an earlier decision left in the outbox (after a crash or a failure)."""
        for entry in rollout.outbox:
            key, action = from_json(entry)
            rollout = self.deliver(rollout, key, action)
        return rollout

    def deliver(self, rollout: Rollout, key: str, action: MessageAction) -> Rollout:
        sent = False
        match action:
            case Announce(event=event):
                sent = self._once(
                    rollout, key, lambda: self._notifier.post_event(rollout, event, key=key)
                )
            case Page(alert=alert):
                sent = self._page(rollout, alert, key=key)
            case RequestApproval():
                rollout, sent = self._request_approval(rollout, key=key)
            case CloseApproval():
                sent = self._close_approval(rollout, key=key)
        if not sent:
            return rollout  # stays queued; the next tick tries again
        remaining = tuple(entry for entry in rollout.outbox if entry["key"] != key)
        if remaining == rollout.outbox:
            return rollout
        delivered = replace(rollout, outbox=remaining)
        self._store.save(rollout, delivered, actor=BOT, action="sent", detail=key, audit=False)
        return delivered

    # ----------------------------------------------------------------- level-triggered

    def ensure(self, rollout: Rollout, *, before: Rollout | None) -> Rollout:
        """Whatever the state says must be visible in Slack is there: the card (posted once,
        then updated when what it shows changes), the current step, the approval request."""
        if rollout.thread_ts is None:
            ts = self._once_ts(
                rollout, CARD_KEY, lambda: self._notifier.show_card(rollout, key=CARD_KEY)
            )
            if ts is not None:
                posted = replace(rollout, thread_ts=ts)
                self._store.save(rollout, posted, actor=BOT, action="card posted")
                rollout = posted
        elif before is None or card_view(before) != card_view(rollout):
            self._try(lambda: self._notifier.show_card(rollout, key=CARD_KEY))
        if rollout.phase == Phase.PROGRESSING and rollout.step_ready:
            event = StepReached(
                step=rollout.step_index + 1, steps=len(rollout.plan.steps), weight=rollout.weight
            )
            key = f"step:{event.step}"
            self._once(rollout, key, lambda: self._notifier.post_event(rollout, event, key=key))
        if rollout.phase == Phase.AWAITING_APPROVAL and rollout.approval_ts is None:
            rollout, _ = self._request_approval(rollout, key="approval")
        return rollout

    def finish(
        self,
        before: Rollout,
        finished: Rollout,
        *,
        action: str,
        also: Sequence[MessageAction] = (),
    ) -> Rollout:
        """Save a terminal phase with its outcome messages queued, then send them."""
        outcome = Finished(
            phase=finished.phase.value,
            reason=finished.reason,
            duration=(finished.finished_at or finished.updated_at) - finished.created_at,
        )
        messages: list[MessageAction] = [Announce(outcome), *also]
        if finished.approval_ts is not None:
            messages.insert(0, CloseApproval())
        queued, keys = self.enqueue(finished, messages)
        self._store.save(before, queued, actor=BOT, action=action)
        for key, message in zip(keys, messages, strict=True):
            queued = self.deliver(queued, key, message)
        return queued

    def snapshot(
        self,
        rollout: Rollout,
        analysis: Analysis,
        *,
        title: str,
        key: str,
        history: Callable[[], Sequence[Measurement]],
    ) -> None:
        self._once(
            rollout,
            key,
            lambda: self._notifier.post_snapshot(
                rollout, analysis, title=title, history=history(), key=key
            ),
        )

    # ----------------------------------------------------------------- sending once

    def _request_approval(self, rollout: Rollout, *, key: str) -> tuple[Rollout, bool]:
        if rollout.approval_ts is not None:
            return rollout, True
        ts = self._once_ts(rollout, key, lambda: self._notifier.request_approval(rollout, key=key))
        if ts is None:
            return rollout, False
        asked = replace(rollout, approval_ts=ts)
        self._store.save(rollout, asked, actor=BOT, action="approval requested")
        return asked, True

    def _close_approval(self, rollout: Rollout, *, key: str) -> bool:
        if rollout.approval_ts is None:
            return True

        def close() -> str:
            self._notifier.close_approval(rollout)
            return "updated"

        # An update is idempotent: after a crash it is simply done again, never searched for.
        return self._once_ts(rollout, key, close, searchable=False) is not None

    def _page(self, rollout: Rollout, alert: Alert, *, key: str) -> bool:
        sent = self._once(rollout, key, lambda: self._notifier.alert(rollout, alert, key=key))
        if sent:
            self._store.audit(
                at=alert.at,
                actor=BOT,
                action="paged on-call",
                rollout_id=rollout.id,
                detail=f"{alert.title}: {alert.detail}",
            )
        return sent

    def _once(self, rollout: Rollout, key: str, send: Callable[[], str]) -> bool:
        return self._once_ts(rollout, key, send) is not None

    def _once_ts(
        self, rollout: Rollout, key: str, send: Callable[[], str], *, searchable: bool = True
    ) -> str | None:
        ts, state = self._store.message(rollout.id, key)
        if state == "sent":
            return ts
        if state == "pending" and searchable:
            found = self._try(lambda: self._notifier.find_message(rollout, key))
            if found:
                self._store.remember_message(rollout.id, key, found)
                return found
        self._store.mark_pending(rollout.id, key)
        posted = self._try(send)
        if posted is not None:
            self._store.remember_message(rollout.id, key, posted)
        return posted

    def _try(self, send: Callable[[], str | None]) -> str | None:
        try:
            return send()
        except Exception as error:
            log.warning("Slack call failed (will retry): %s: %s", type(error).__name__, error)
            return None


def card_view(rollout: Rollout) -> tuple[object, ...]:
    """The fields the status card shows; the card is updated only when one of them changes."""
    return (
        rollout.phase,
        rollout.step_index,
        rollout.step_ready,
        rollout.weight,
        rollout.next_step_at,
        rollout.approvals,
        rollout.reason,
        rollout.verdict,
    )
