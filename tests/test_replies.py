"""`/canary status` answers are kept per rollout state (handlers/replies.py): the same state is
rendered once, and any change the status shows is a new rendering, never the old one."""

from __future__ import annotations

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
