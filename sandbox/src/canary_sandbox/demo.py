"""`canary-bot demo`: the whole product on loopback, in a Slack-like page or as a script.

No Slack, cluster or credentials: `DemoWorld` runs the emulators, live synthetic traffic, its
metrics and the production bot. By default a local chat page (`bot/demo_web`) lets a person use
the bot as in Slack. `--scripted` plays two rollouts without a browser instead, printing the
conversation: one promoted after refused approvals, and one whose canary breaks and is rolled
back with an on-call alert. It exits non-zero if the cluster or the channel ends up wrong, so CI
runs it as an end-to-end check.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TextIO, TypeVar

from canary_sandbox.demo_web.server import DemoWebServer
from canary_sandbox.demo_web.world import (
    CHANNEL_NAMES,
    GROUP_HANDLES,
    ONCALL_GROUP,
    PEOPLE,
    SERVICE,
    DemoWorld,
)
from canary_sandbox.sandbox import ALICE, BOB, CAROL, MALLORY, RELEASE_CHANNEL
from emulators.slack import Message, ResponseUrlPost, SlackEmulator
from rollout.model import Phase, Rollout
from rollout.stores import Store

T = TypeVar("T")

DEFAULT_PORT = 8080
TIMEOUT = 60.0
Say = Callable[[str], None]


class DemoFailed(Exception):
    pass


def run_demo(
    *, out: TextIO, scripted: bool = False, port: int = DEFAULT_PORT, open_browser: bool = True
) -> int:
    say = _narrator(out)
    if "CANARY_LOG_LEVEL" not in os.environ:
        # The bot's INFO lines (a scheduler beat every second) would bury the conversation.
        logging.getLogger().setLevel(logging.WARNING)
    # A plain `kill` must still stop Prometheus and the servers: unwind through the finally.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return _run(say, scripted=scripted, port=port, open_browser=open_browser)
    except KeyboardInterrupt:
        say("Stopped.")
        return 130


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _run(say: Say, *, scripted: bool, port: int, open_browser: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="canary-bot-demo-") as tmp:
        world = DemoWorld(workdir=Path(tmp))
        web: DemoWebServer | None = None
        if not scripted:
            try:  # bind first, so a busy port fails before anything starts
                web = DemoWebServer(world, port=port)
            except OSError as error:
                say(f"canary-bot demo: cannot listen on 127.0.0.1:{port} ({error.strerror});")
                say("pass another port with --port, or --port 0 for any free one")
                return 2
        say("Starting: emulated cluster (shop/checkout, 4 replicas), Slack, traffic, the bot…")
        try:
            world.start()
            say(f"Metrics: {world.metrics_backend}.")
            if web is not None:
                return _serve(world, web, open_browser=open_browser, say=say)
            return _scripted(world, say=say)
        finally:
            if web is not None:
                web.stop()
            world.stop()


def _serve(world: DemoWorld, web: DemoWebServer, *, open_browser: bool, say: Say) -> int:
    web.start()
    say("")
    say(f"  The demo workspace is at {web.url}  (Ctrl-C stops it)")
    say("")
    say("  Type /canary start checkout v2.3.5, open the thread, act as Bob or Carol to approve,")
    say("  or press 'Break the canary' to watch the bot roll back and page on-call.")
    if open_browser and _has_desktop():
        webbrowser.open(web.url)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # Waking twice a second: a blocking wait misses a signal the kernel gave another thread.
    while not stopping.wait(timeout=0.5):
        pass
    say("Stopping the demo.")
    return 0


def _has_desktop() -> bool:
    """Without one, `webbrowser` may start a text browser that takes over the terminal."""
    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    return bool(graphical) or sys.platform in ("darwin", "win32")


# ------------------------------------------------------------------------ the scripted scenario


def _scripted(world: DemoWorld, *, say: Say) -> int:
    try:
        _promotion(world, say=say)
        _breach(world, say=say)
    except DemoFailed as failure:
        say(f"\ndemo FAILED: {failure}")
        say("\nThe channel so far:\n" + transcript(world.slack))
        return 1
    say("")
    say("=" * 78)
    say("#releases, as Slack shows it:")
    say("=" * 78)
    say(transcript(world.slack))
    say("=" * 78)
    say("demo OK: one promotion, one automatic rollback with an on-call alert.")
    return 0


def _promotion(world: DemoWorld, *, say: Say) -> None:
    driver, slack = world.driver, world.slack
    say("\n1. A release that goes well")
    rollout = _start(world, "v2.3.5", by=BOB, say=say)
    approval = _wait(partial(_approval_message, world, rollout.id), "the approval request")
    say("   The canary went 25% -> 50% -> 75% with healthy metrics; the bot asks @sre.")
    for clicker, who in ((MALLORY, "not an approver"), (BOB, "the one who started it")):
        say(f"   {_name(clicker)} ({who}) clicks Approve; the bot refuses, to them only:")
        seen = len(slack.responses)
        driver.click(message=approval, action_id="approve", user=clicker)
        refusal = _wait(partial(_response_after, slack, seen), "the refusal")
        say(f"     (only {_name(clicker)} sees) {_plain(refusal.text)}")
    say(f"   {_name(CAROL)} (an SRE approver) clicks Approve.")
    driver.click(message=approval, action_id="approve", user=CAROL)
    done = _wait(partial(_finished, world, rollout.id), "the promotion")
    image, replicas, canary = _cluster(world)
    if done.phase != Phase.SUCCEEDED or canary or not image.endswith(":v2.3.5"):
        raise DemoFailed(f"not promoted: phase {done.phase}, stable image {image}")
    say(f"OK promotion: shop/checkout runs {image} on {replicas} pods; the canary is gone.")


def _breach(world: DemoWorld, *, say: Say) -> None:
    say("\n2. A release whose canary breaks")
    rollout = _start(world, "v2.3.6", by=ALICE, say=say)
    _wait(lambda: world.canary_weight() or None, "the canary to get traffic")
    say(f"   The canary serves {world.canary_weight():g}% of requests. Now it breaks:")
    world.break_canary()
    say(f"   its error rate jumps to {world.canary_error_rate():.0%} (rule: above 5% for 5s).")
    try:
        done = _wait(partial(_finished, world, rollout.id), "the automatic rollback")
    finally:
        world.break_canary(False)
    image, replicas, canary = _cluster(world)
    if done.phase != Phase.ROLLED_BACK or canary or not image.endswith(":v2.3.5"):
        raise DemoFailed(f"not rolled back: phase {done.phase}, stable image {image}")
    say(f"OK rollback: {done.reason}; shop/checkout is back on {image}, {replicas} pods.")
    alert = _wait(partial(_alert, world.slack, rollout.id), "the on-call alert")
    say(f"OK alert: on-call paged in #releases: {_plain(alert.text)}")


def _start(world: DemoWorld, tag: str, *, by: str, say: Say) -> Rollout:
    # Two-second steps (the page's default is three) keep the whole script, run in CI, short.
    text = f"start {SERVICE} {tag} --interval 2s"
    say(f"   {_name(by)} types in #releases:  /canary {text}")
    reply = world.driver.command(text, user=by, channel=RELEASE_CHANNEL)
    answer = reply.json.get("text") if isinstance(reply.json, dict) else None
    if reply.status != 200:
        raise DemoFailed(f"the bot answered the command with HTTP {reply.status}")
    if answer:
        say(f"     (only {_name(by)} sees) {_plain(answer)}")
    return _wait(partial(_active, world), f"the rollout to start (the bot said: {answer})")


def _store(world: DemoWorld) -> Store:
    assert world.sandbox.runtime is not None
    return world.sandbox.runtime.store


def _active(world: DemoWorld) -> Rollout | None:
    return _store(world).active_for(SERVICE)


def _finished(world: DemoWorld, rollout_id: str) -> Rollout | None:
    rollout = _store(world).get(rollout_id)
    return rollout if rollout is not None and rollout.phase.is_terminal else None


def _approval_message(world: DemoWorld, rollout_id: str) -> Message | None:
    rollout = _store(world).get(rollout_id)
    if rollout is None or rollout.thread_ts is None:  # the card is not posted yet
        return None
    for reply in world.slack.thread(RELEASE_CHANNEL, rollout.thread_ts):
        for block in reply.blocks:
            if any(e.get("action_id") == "approve" for e in block.get("elements", [])):
                return reply
    return None


def _response_after(slack: SlackEmulator, seen: int) -> ResponseUrlPost | None:
    responses = slack.responses
    return responses[seen] if len(responses) > seen else None


def _alert(slack: SlackEmulator, rollout_id: str) -> Message | None:
    """The top-level page for this rollout: on-call mentioned, the breached rule named."""
    for message in slack.messages(RELEASE_CHANNEL):
        blocks = str(message.blocks)
        if f"<!subteam^{ONCALL_GROUP}>" in message.text and rollout_id in blocks:
            return message if "error_rate" in blocks else None
    return None


def _cluster(world: DemoWorld) -> tuple[str, int, bool]:
    """The stable image and replica count, and whether a canary Deployment is left."""
    kube = world.sandbox.kube
    stable = kube.get("apps/v1", "Deployment", "shop", SERVICE) or {}
    spec = stable.get("spec", {})
    image = str(spec.get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image"))
    canary = kube.get("apps/v1", "Deployment", "shop", f"{SERVICE}-canary") is not None
    return image, int(spec.get("replicas", 0)), canary


def _wait(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise DemoFailed(f"timed out after {TIMEOUT:.0f}s waiting for {what}")


# ------------------------------------------------------------------------ printing


def transcript(slack: SlackEmulator) -> str:
    """The channel and its threads as plain text, mentions and dates resolved."""
    lines: list[str] = []
    for root in slack.messages(RELEASE_CHANNEL):
        lines.append(
            f"{_clock(root.ts)} {_plain(root.text)}" + (" (edited)" if root.edited else "")
        )
        for reply in slack.thread(RELEASE_CHANNEL, root.ts):
            parts = [_plain(reply.text), *(f"[chart {f.filename}]" for f in reply.files)]
            text = " ".join(part for part in parts if part).replace("\n", "\n" + " " * 14)
            lines.append(f"    {_clock(reply.ts)} {text}")
    return "\n".join(lines)


_ENTITY = re.compile(r"<([^<>]+)>")


def _plain(text: str) -> str:
    def entity(found: re.Match[str]) -> str:
        target, _, label = found.group(1).partition("|")
        if target.startswith("@"):
            return "@" + _name(target[1:])
        if target.startswith("!subteam^"):
            return "@" + GROUP_HANDLES.get(target.split("^", 1)[1], label or target)
        if target.startswith("#"):
            return "#" + CHANNEL_NAMES.get(target[1:], label or target[1:])
        return label or target

    plain = _ENTITY.sub(entity, str(text))
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _name(user: str) -> str:
    return PEOPLE[user][1] if user in PEOPLE else user


def _clock(ts: str) -> str:
    return time.strftime("%H:%M:%S", time.localtime(float(ts)))


def _narrator(out: TextIO) -> Say:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    return say
