"""`canary-bot demo`: a scripted rollout in a sandbox, printed as the Slack conversation.

No Slack, cluster or credentials: the sandbox's emulators stand in for them, and the bot is the
production runtime talking to them over HTTP. The script starts a canary, shows a refused
approval (the starter may not approve alone), lets an approver approve, and checks that the
cluster ends as it should. It exits non-zero if any of that does not happen.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TextIO, TypeVar

from bot.sandbox import BOB, CAROL, MALLORY, RELEASE_CHANNEL, Sandbox
from emulators.slack import Message, ResponseUrlPost, SlackEmulator
from rollout.model import Phase, Rollout

T = TypeVar("T")

TIMEOUT = 60.0


class DemoFailed(Exception):
    pass


def run_demo(*, out: TextIO) -> int:
    with tempfile.TemporaryDirectory(prefix="canary-bot-demo-") as tmp:
        sandbox = Sandbox(workdir=Path(tmp))
        try:
            sandbox.start()
            sandbox.start_bot()
            _play(sandbox, out=out)
        except DemoFailed as failure:
            print(f"\ndemo FAILED: {failure}", file=out)
            return 1
        finally:
            sandbox.stop()
    return 0


def _play(sandbox: Sandbox, *, out: TextIO) -> None:
    driver, slack = sandbox.driver, sandbox.slack
    say = _narrator(out)
    say("A sandbox cluster runs shop/checkout (4 replicas of checkout:v2.3.4).")
    say(f"<@{BOB}> types in #releases:  /canary start checkout v2.3.5 --interval 2s")
    driver.command("start checkout v2.3.5 --interval 2s", user=BOB, channel=RELEASE_CHANNEL)
    approval = _wait(lambda: _approval_message(sandbox), "the approval request")
    say("The canary went through 25% -> 50% -> 75%; the bot asks the SRE group to approve.")
    for clicker, who in ((MALLORY, "not an approver"), (BOB, "the starter")):
        say(f"<@{clicker}> ({who}) clicks Approve; the bot refuses, privately:")
        seen = len(slack.responses)
        driver.click(message=approval, action_id="approve", user=clicker)
        refusal = _wait(partial(_response_after, slack, seen), "the refusal")
        say(f"    (only they see) {refusal.body.get('text')}")
    say(f"<@{CAROL}> (an approver) clicks Approve.")
    driver.click(message=approval, action_id="approve", user=CAROL)
    rollout = _wait(lambda: _finished(sandbox), "the promotion")
    say("")
    say("=" * 72)
    say("The release channel, as Slack would show it:")
    say("=" * 72)
    say(slack.transcript(RELEASE_CHANNEL))
    stable = sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout")
    canary = sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout-canary")
    image = stable["spec"]["template"]["spec"]["containers"][0]["image"] if stable else None
    if rollout.phase != Phase.SUCCEEDED or canary is not None or not str(image).endswith(":v2.3.5"):
        raise DemoFailed(f"cluster not promoted: phase {rollout.phase}, stable image {image}")
    say(f"Cluster now: shop/checkout runs {image}; checkout-canary is gone. Phase: succeeded.")


def _approval_message(sandbox: Sandbox) -> Message | None:
    for root in sandbox.slack.messages(RELEASE_CHANNEL):
        for reply in sandbox.slack.thread(RELEASE_CHANNEL, root.ts):
            if any(
                element.get("action_id") == "approve"
                for block in reply.blocks
                for element in block.get("elements", [])
            ):
                return reply
    return None


def _response_after(slack: SlackEmulator, seen: int) -> ResponseUrlPost | None:
    responses = slack.responses
    return responses[seen] if len(responses) > seen else None


def _finished(sandbox: Sandbox) -> Rollout | None:
    assert sandbox.runtime is not None
    rollouts = sandbox.runtime.store.history("checkout", limit=1)
    if rollouts and rollouts[0].phase.is_terminal:
        return rollouts[0]
    return None


def _wait(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.05)
    raise DemoFailed(f"timed out after {TIMEOUT:.0f}s waiting for {what}")


def _narrator(out: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    return say
