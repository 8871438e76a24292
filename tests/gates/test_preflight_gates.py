"""Pre-flight `webhook` and `command` gates, through the signed Slack path: each passes, fails
with its message, or times out; a failure ends the start with nothing created."""

from __future__ import annotations

import json
import sys

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from rollout.model import Phase
from tests.gates.conftest import (
    Hook,
    MakeSandbox,
    canary_exists,
    gate_config,
    only_rollout,
    settle,
    wait_for_reply,
    wait_until,
)


def start(box: Sandbox) -> None:
    reply = box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    settle(box)  # the start's work after the acknowledgement, and its gates


def assert_refused_with_nothing_created(box: Sandbox, *, gate: str, message: str) -> None:
    rollout = only_rollout(box)
    assert rollout.phase == Phase.ROLLED_BACK
    assert f"gate {gate} failed" in (rollout.reason or "") and message in (rollout.reason or "")
    assert not canary_exists(box)
    assert box.kube.writes == []  # nothing changed in the cluster
    assert message in wait_for_reply(box, f"Gate *{gate}* failed")
    assert box.runtime is not None
    audit = box.runtime.store.audit_rows(rollout.id)
    assert any(row["action"] == "gate failed" and message in row["detail"] for row in audit)


@pytest.mark.timeout(60)
def test_webhook_gate_passes_on_2xx_and_gets_the_rollout(
    hook: Hook, make_sandbox: MakeSandbox
) -> None:
    box = make_sandbox(gate_config(preflight=[{"webhook": {"url": hook.url}}], step_interval="1h"))
    start(box)
    wait_until(lambda: canary_exists(box), what="the canary")
    assert hook.received[0]["service"] == "checkout"
    assert hook.received[0]["canary_image"].endswith("checkout:v2.3.5")
    assert "HTTP 200" in wait_for_reply(box, "Gate *webhook* passed")


@pytest.mark.timeout(60)
def test_webhook_gate_refusal_carries_the_body_message(
    hook: Hook, make_sandbox: MakeSandbox
) -> None:
    hook.status = 422
    hook.body = json.dumps({"message": "change freeze until Monday " + "x" * 500}).encode()
    box = make_sandbox(gate_config(preflight=[{"webhook": {"url": hook.url}}]))
    start(box)
    assert_refused_with_nothing_created(box, gate="webhook", message="change freeze until Monday")
    assert "x" * 400 not in (only_rollout(box).reason or "")  # the message is truncated


@pytest.mark.timeout(60)
def test_webhook_gate_times_out(hook: Hook, make_sandbox: MakeSandbox) -> None:
    hook.hang = True
    config = gate_config(preflight=[{"webhook": {"url": hook.url, "timeout": "1s"}}])
    box = make_sandbox(config)
    start(box)
    assert_refused_with_nothing_created(box, gate="webhook", message="did not answer within 1s")


@pytest.mark.timeout(60)
def test_command_gate_passes_with_placeholders_filled(make_sandbox: MakeSandbox) -> None:
    argv = [sys.executable, "-c", "import sys; print('verified', sys.argv[1])", "{{ image }}"]
    box = make_sandbox(gate_config(preflight=[{"command": {"argv": argv}}], step_interval="1h"))
    start(box)
    wait_until(lambda: canary_exists(box), what="the canary")
    assert "verified registry.example.com/shop/checkout:v2.3.5" in wait_for_reply(
        box, "Gate *command* passed"
    )


@pytest.mark.timeout(60)
def test_command_gate_gets_none_of_the_bots_secrets_unless_named(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gate's output is posted in the thread: a tool that prints its environment must not
    # carry the bot's secrets (API tokens, registry and database passwords) there.
    monkeypatch.setenv("CANARY_API_TOKEN_GHA", "secret-of-a-pipeline")
    monkeypatch.setenv("REGISTRY_PASSWORD", "secret-of-the-registry")
    monkeypatch.setenv("COSIGN_PASSWORD", "asked-for")
    show = "import os; print(sorted(k for k in os.environ if k.isupper() and 'PATH' != k))"
    gate = {"command": {"argv": [sys.executable, "-c", show], "env": ["COSIGN_PASSWORD"]}}
    box = make_sandbox(gate_config(preflight=[gate], step_interval="1h"))
    start(box)
    reply = wait_for_reply(box, "Gate *command* passed")
    assert "COSIGN_PASSWORD" in reply
    assert "CANARY_API_TOKEN_GHA" not in reply and "REGISTRY_PASSWORD" not in reply


@pytest.mark.timeout(60)
def test_command_gate_failure_shows_the_last_lines(make_sandbox: MakeSandbox) -> None:
    script = "echo scanning; echo 'CVE-2024-0001 critical' >&2; exit 3"
    box = make_sandbox(gate_config(preflight=[{"command": {"argv": ["sh", "-c", script]}}]))
    start(box)
    assert_refused_with_nothing_created(box, gate="command", message="CVE-2024-0001 critical")
    assert "exited with 3" in (only_rollout(box).reason or "")


@pytest.mark.timeout(60)
def test_command_gate_times_out(make_sandbox: MakeSandbox) -> None:
    gate = {"command": {"argv": ["sleep", "30"], "timeout": "1s"}}
    box = make_sandbox(gate_config(preflight=[gate]))
    start(box)
    assert_refused_with_nothing_created(box, gate="command", message="did not finish within 1s")


@pytest.mark.timeout(60)
def test_gates_run_in_order_and_stop_at_the_first_failure(
    hook: Hook, make_sandbox: MakeSandbox
) -> None:
    failing = {"command": {"argv": ["sh", "-c", "echo no; exit 1"]}}
    box = make_sandbox(gate_config(preflight=[failing, {"webhook": {"url": hook.url}}]))
    start(box)
    assert_refused_with_nothing_created(box, gate="command", message="exited with 1")
    assert hook.received == []  # the webhook after the failed gate never ran
