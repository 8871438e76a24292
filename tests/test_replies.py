"""`/canary status` answers are kept per rollout state (handlers/replies.py): the same state is
rendered once, and any change the status shows is a new rendering, never the old one."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from handlers.blocks import status_message
from handlers.replies import StatusReplies, with_note
from rollout.model import Phase
from tests.builders import NOW, progressing_rollout


def test_a_status_is_rendered_once_per_state_and_anew_on_any_change() -> None:
    replies = StatusReplies()
    rollout = progressing_rollout()
    first = replies.payload(rollout, cluster_name="prod")
    expected = status_message(rollout, cluster_name="prod", next_step_at=rollout.next_step_at)
    assert first == expected.payload()
    assert replies.payload(rollout, cluster_name="prod") is first  # kept, not rendered again

    changes = [
        rollout.evolve(now=NOW + timedelta(seconds=1), weight=50.0, step_index=2),
        rollout.evolve(now=NOW + timedelta(seconds=1), phase=Phase.PAUSED, reason="why"),
        # A field changed without a new `updated_at` is still a new state.
        replace(rollout, stable_image="registry:5000/shop/checkout:v0"),
    ]
    for changed in changes:
        shown = replies.payload(changed, cluster_name="prod")
        fresh = status_message(changed, cluster_name="prod", next_step_at=changed.next_step_at)
        assert shown == fresh.payload() != first
    assert replies.payload(rollout, cluster_name="staging") != first  # the cluster is shown


def test_a_note_is_added_to_a_copy_never_to_the_kept_answer() -> None:
    replies = StatusReplies()
    rollout = progressing_rollout()
    kept = replies.payload(rollout, cluster_name="prod")
    noted = with_note(kept, "No new snapshot")
    assert len(noted["blocks"]) == len(kept["blocks"]) + 1
    assert replies.payload(rollout, cluster_name="prod") == kept
    assert "No new snapshot" not in str(kept)
    # Notes are rendered once per text, and each answer shows its own.
    later = with_note(kept, "ask again in 5s")
    assert later["blocks"][-1] != noted["blocks"][-1] and "ask again in 5s" in str(later)
    assert with_note(kept, "No new snapshot") == noted


def test_the_acknowledgement_is_kept_as_json_per_state_and_note() -> None:
    # What Slack receives for `/canary status`: the ephemeral answer as JSON text, built once
    # per state and note, not turned into JSON again for each of fifty requests.
    replies = StatusReplies()
    rollout = progressing_rollout()
    text = replies.answer(rollout, cluster_name="prod")
    assert json.loads(text) == {
        "response_type": "ephemeral",
        **replies.payload(rollout, cluster_name="prod"),
    }
    assert replies.answer(rollout, cluster_name="prod") is text

    noted = replies.answer(rollout, cluster_name="prod", note="No new snapshot")
    kept = replies.payload(rollout, cluster_name="prod")
    assert json.loads(noted) == {"response_type": "ephemeral", **with_note(kept, "No new snapshot")}
    assert replies.answer(rollout, cluster_name="prod", note="No new snapshot") is noted

    # A new state (a new Rollout, as the store hands out after a write) is a new answer.
    moved = rollout.evolve(now=NOW + timedelta(seconds=1), weight=50.0, step_index=2)
    fresh = status_message(moved, cluster_name="prod", next_step_at=moved.next_step_at)
    assert (
        json.loads(replies.answer(moved, cluster_name="prod"))["blocks"]
        == (fresh.payload()["blocks"])
    )
    assert replies.answer(rollout, cluster_name="staging") != text
