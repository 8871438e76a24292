"""`/canary status <service>` answers, rendered once per state of the rollout.

Turning Block Kit models into JSON (`to_dict`, which also checks Slack's limits) was the
largest single cost of acknowledging a status request (bench/ack.py's profile: about a third
of the bot's own time per request), and fifty people asking about one rollout ask about the
same state. So the rendered answer is kept, keyed by everything the status shows; any change
of the rollout is a new key. Bounded, least recently used first out.

The acknowledgement itself is kept too, as the JSON text Slack receives (`answer`): Bolt's
`ack(...)` turns the same blocks into dicts again and then into JSON on every request, which
was the largest part of what the bot's status answer cost beyond a bare Bolt app's empty
acknowledgement (bench/ack_profile.py).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from functools import lru_cache
from typing import Any

from handlers.blocks import status_message
from handlers.blocks.common import context
from rollout.model import Rollout

Payload = dict[str, Any]
MAX_KEPT = 256


def shown(rollout: Rollout) -> tuple[Hashable, ...]:
    """Every field `status_message` reads (handlers/blocks/card.py)."""
    return (
        rollout.id,
        rollout.updated_at,
        rollout.created_at,
        rollout.phase,
        rollout.service,
        rollout.namespace,
        rollout.deployment,
        rollout.channel,
        rollout.stable_image,
        rollout.canary_image,
        rollout.weight,
        rollout.step_index,
        rollout.step_ready,
        rollout.next_step_at,
        rollout.no_data_since,
        rollout.plan.steps,
        rollout.plan.on_no_data,
        rollout.started_by,
        rollout.verdict,
        rollout.approvals,
        rollout.reason,
    )


class StatusReplies:
    def __init__(self, *, max_kept: int = MAX_KEPT) -> None:
        self._kept: OrderedDict[tuple[Hashable, ...], Payload] = OrderedDict()
        self._answers: OrderedDict[tuple[Hashable, ...], str] = OrderedDict()
        self._max = max_kept
        self._lock = threading.Lock()
        # The last rollout asked about and its key. The store hands out the same immutable
        # Rollout while its row is unchanged, so the same object is the same state, and its
        # key need not be built (and hashed) again for each of fifty requests.
        self._last: tuple[Rollout, str, tuple[Hashable, ...]] | None = None

    def answer(self, rollout: Rollout, *, cluster_name: str, note: str | None = None) -> str:
        """The whole ephemeral acknowledgement, as JSON text, with `note` as a context line."""
        key = (*self._key(rollout, cluster_name), note)
        with self._lock:
            found = self._answers.get(key)
            if found is not None:
                self._answers.move_to_end(key)
                return found
        payload = self.payload(rollout, cluster_name=cluster_name)
        text = json.dumps(
            {"response_type": "ephemeral", **(with_note(payload, note) if note else payload)}
        )
        with self._lock:
            self._answers[key] = text
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)
        return text

    def _key(self, rollout: Rollout, cluster_name: str) -> tuple[Hashable, ...]:
        last = self._last
        if last is not None and last[0] is rollout and last[1] == cluster_name:
            return last[2]
        key = (cluster_name, *shown(rollout))
        self._last = (rollout, cluster_name, key)  # one assignment: read whole or not at all
        return key

    def payload(self, rollout: Rollout, *, cluster_name: str) -> Payload:
        key = self._key(rollout, cluster_name)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        message = status_message(
            rollout, cluster_name=cluster_name, next_step_at=rollout.next_step_at
        )
        rendered = message.payload()
        with self._lock:
            self._kept[key] = rendered
            while len(self._kept) > self._max:
                self._kept.popitem(last=False)
        return rendered


def with_note(payload: Payload, note: str) -> Payload:
    """The answer with a context line added (a new dict: the kept one is shared)."""
    return {**payload, "blocks": [*payload["blocks"], _note_block(note)]}


@lru_cache(maxsize=64)
def _note_block(note: str) -> dict[str, Any]:
    """The rendered context line, per text: the "no new snapshot, ask again in ..." note
    changes once a second at most, and rendering it through slack_sdk's models (which check
    Slack's limits) cost about as much as the rest of a cached answer."""
    return context(note).to_dict()
