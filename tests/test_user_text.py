"""User text stays text: no reason a person types becomes a mention, a ping, a date or a link.

A property over arbitrary reasons (with the fragments an attacker would try): the reason goes
the way Slack delivers it through the parser, the state machine and every message that shows
it (thread replies, the card, history, the closed approval). Every `<…>` entity in the output
must be one the bot writes anyway: the output holds exactly the entities that the same
messages hold for a harmless reason.
"""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import parse
from handlers.blocks import (
    approval_closed,
    error_message,
    event_message,
    history_message,
    status_card,
)
from rollout import commands
from rollout.machine import Announce, Decision, apply_command
from rollout.model import Phase
from tests.blocks_support import NOW, all_text
from tests.builders import progressing_rollout

ENTITY = re.compile(r"<[^<>]*>")
FRAGMENTS = (
    "<@U1>",
    "<@U02BOB>",
    "<!here>",
    "<!channel>",
    "<!subteam^S1>",
    "<!subteam^S0SRE|@sre>",
    "<!date^1^{date}^https://x|y>",
    "<!date^1700000000^{date_short}^https://evil.example|Click here to approve>",
    "<http://x|y>",
    "<https://evil.example|Click here to approve>",
    "<#C0RELEASES>",
    "&lt;",
    "&gt;",
    "&amp;",
    "&lt;@U1&gt;",
    "<",
    ">",
    "&",
    "|",
    "^",
    "rolled back by ",
    "rejected by ",
    ": ",
    " ",
)
reasons = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), min_size=1, max_size=12
).map("".join)


def entities(texts: list[str]) -> Counter[str]:
    return Counter(match for text in texts for match in ENTITY.findall(text))


def _messages(decision: Decision) -> list[str]:
    rollout = decision.rollout
    shown = [
        event_message(rollout, action.event)
        for action in decision.actions
        if isinstance(action, Announce)
    ]
    shown.append(status_card(rollout, cluster_name="prod", next_step_at=None))
    shown.append(history_message(rollout.service, [rollout]))
    if rollout.rejected_by:
        shown.append(approval_closed(rollout))
    return [all_text(message) for message in shown]


def rendered(reason: str) -> list[str]:
    """Everything the bot would show after a pause, a rollback and a reject with `reason`."""
    texts: list[str] = []
    for verb in ("pause", "rollback"):
        parsed = parse.parse_command(f"{verb} checkout {reason}")
        said = getattr(parsed, "reason", None)
        command: commands.Command = (
            commands.Pause(by="U01ALICE", reason=said)
            if verb == "pause"
            else commands.Rollback(by="U01ALICE", reason=said)
        )
        decision = apply_command(progressing_rollout(phase=Phase.PROGRESSING), command, now=NOW)
        assert isinstance(decision, Decision)
        texts += _messages(decision)
    waiting = progressing_rollout(phase=Phase.AWAITING_APPROVAL)
    decision = apply_command(waiting, commands.Reject(by="U02BOB", reason=reason), now=NOW)
    assert isinstance(decision, Decision)
    texts += _messages(decision)
    # A refusal that echoes what was typed (an unknown service name, say).
    texts.append(all_text(error_message(f"Unknown service `{reason}`. Known: ", then="<@U1>")))
    return texts


BASELINE = entities(rendered("harmless reason"))


@settings(max_examples=1000, deadline=None)
@given(reason=reasons)
def test_no_reason_produces_an_entity_the_bot_did_not_write(reason: str) -> None:
    texts = rendered(reason)
    assert entities(texts) == BASELINE, (reason, texts)


def test_the_reason_is_still_shown_as_typed() -> None:
    """Escaped, not dropped: Slack shows `&lt;!here&gt;` as `<!here>`."""
    texts = rendered("<!here> & <@U1>")
    assert any("&lt;!here&gt; &amp; &lt;@U1&gt;" in text for text in texts), texts
    # The bot's own mention of who acted is still live.
    assert any("Paused by <@U01ALICE>" in text for text in texts)
    assert BASELINE["<@U01ALICE>"] > 0 and BASELINE["<@U02BOB>"] > 0
