"""Any text a user or the cluster can put into a message makes a message Slack accepts
(property-based: every message kind, with arbitrary service names, images, reasons, weights).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.blocks import (
    alert_message,
    approval_closed,
    approval_request,
    error_message,
    event_message,
    history_message,
    list_message,
    status_card,
    status_message,
)
from rollout.events import Alert, Paused
from rollout.model import Phase
from tests.blocks_support import NOW, payload
from tests.builders import progressing_rollout

# --- anything a user or the cluster can put into a message ------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    service=st.text(min_size=1, max_size=400),
    image=st.text(min_size=1, max_size=4000),
    reason=st.text(max_size=6000),
    cluster=st.text(min_size=1, max_size=400),
    phase=st.sampled_from(list(Phase)),
    weight=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_text_makes_valid_messages(
    service: str, image: str, reason: str, cluster: str, phase: Phase, weight: float
) -> None:
    rollout = progressing_rollout(
        now=NOW, service=service, canary_image=image, reason=reason, phase=phase, weight=weight
    )
    alert = Alert(title=reason or "t", detail=reason, traffic_on_stable=False, at=NOW)
    for message in (
        status_card(rollout, cluster_name=cluster, next_step_at=NOW, verdict=reason or None),
        status_message(rollout, cluster_name=cluster, next_step_at=None),
        approval_request(rollout, approvers=["U02BOB"]),
        approval_closed(rollout),
        alert_message(rollout, alert, oncall="U1AB", permalink=None, cluster_name=cluster),
        event_message(rollout, Paused(by=service, reason=reason)),
        list_message([rollout], now=NOW),
        history_message(service, [rollout]),
        error_message(reason or "x"),
    ):
        payload(message)
