"""The pipeline API end to end: a CI token starts a rollout over HTTP, an approver approves it
in Slack (signed requests), and `canary-bot release --wait` (a real subprocess) follows it.

Refusals are checked against the whole world the bot could change (rollouts, outbox,
idempotency keys, Slack messages, Kubernetes writes): each must leave it exactly as it was.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from canary_sandbox.sandbox import BOB, SANDBOX_CONFIG, Sandbox
from rollout.model import Phase
from tests.reliability.support import card_of, open_approval, wait_for
from tests.scenario.pipeline_support import (
    GHA,
    GHA_TOKEN,
    PAYMENTS_TOKEN,
    READER_TOKEN,
    TOKEN_ENV,
    api,
    lines,
    pipeline_config,
    release_env,
    start_release,
    world,
)

START = {
    "service": "checkout",
    "image": "v2.3.5",
    "context": {
        "commit": "1a2b3c4d5e6f",
        "pipeline_url": "https://ci.example/acme/shop/runs/7",
        "triggered_by": "alice",
    },
}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=pipeline_config())
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def card_text(sandbox: Sandbox, rollout_id: str) -> str:
    card = card_of(sandbox, rollout_id)
    return json.dumps(card.blocks) if card is not None else ""


def error_of(answer: Any) -> dict[str, str]:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return dict(body["error"])


@pytest.mark.timeout(120)
def test_a_pipeline_starts_a_rollout_approved_in_slack_and_release_exits_0(
    sandbox: Sandbox,
) -> None:
    process = start_release(
        sandbox, "checkout", "v2.3.5", "--wait", "--timeout", "90s", env=release_env()
    )
    rollout = wait_for(
        lambda: sandbox.runtime and sandbox.runtime.store.active_for("checkout"),
        what="the rollout the release started",
    )
    assert rollout.started_by == GHA
    card = wait_for(lambda: card_text(sandbox, rollout.id), what="the rollout's card")
    assert GHA in card and "1a2b3c4d5e6f" in card  # the pipeline, and the commit it built
    assert "<https://github.example/acme/shop/actions/runs/4242|pipeline run>" in card
    assert "run by alice" in card

    thread = wait_for(
        lambda: (r := sandbox.runtime.store.get(rollout.id)) and r.thread_ts, what="the thread"
    )
    approval = wait_for(
        lambda: open_approval(sandbox, thread), what="the approval request", timeout=60
    )
    assert sandbox.driver.click(message=approval, action_id="approve", user=BOB).status == 200

    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, (out, err)
    printed = lines(out)
    assert printed[0].startswith(f"started {rollout.id}")
    for expected in (
        "step 1/3: canary at 25%",
        "step 2/3: canary at 50%",
        "step 3/3: canary at 75%",
        "approval asked in Slack",
        f"approved by {BOB}",
        "phase: promoting",
    ):
        assert expected in printed, (expected, printed)
    assert printed[-1] == "succeeded: checkout runs registry.example.com/shop/checkout:v2.3.5"
    finished = sandbox.runtime.store.get(rollout.id)
    assert finished is not None and finished.phase == Phase.SUCCEEDED
    starts = [
        row for row in sandbox.runtime.store.audit_rows(rollout.id) if row["action"] == "start"
    ]
    assert [row["actor"] for row in starts] == [GHA]


@pytest.mark.timeout(60)
def test_each_refusal_has_its_status_and_changes_nothing(sandbox: Sandbox) -> None:
    before = world(sandbox)
    refusals = [
        (api(sandbox, "POST", "/api/v1/rollouts", json=START, token="wrong"), 401, "unauthorized"),
        (api(sandbox, "POST", "/api/v1/rollouts", json=START, token=None), 401, "unauthorized"),
        (
            api(sandbox, "POST", "/api/v1/rollouts", json=START, token=PAYMENTS_TOKEN),
            403,
            "forbidden",
        ),
        (
            api(sandbox, "POST", "/api/v1/rollouts", json=START, token=READER_TOKEN),
            403,
            "forbidden",
        ),
        (
            api(sandbox, "POST", "/api/v1/rollouts", json={**START, "image": "latest"}),
            422,
            "start_refused",
        ),
        (
            api(sandbox, "POST", "/api/v1/rollouts", json={**START, "steps": [50, 25]}),
            422,
            "invalid_request",
        ),
        (
            api(sandbox, "POST", "/api/v1/rollouts", json={**START, "service": "nope"}),
            403,
            "forbidden",
        ),
        (
            api(
                sandbox,
                "POST",
                "/api/v1/rollouts",
                data="{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
        ),
        (
            api(
                sandbox,
                "POST",
                "/api/v1/rollouts",
                json=START,
                headers={"Idempotency-Key": "k" * 201},
            ),
            422,
            "invalid_request",
        ),
        (api(sandbox, "GET", "/api/v1/rollouts/checkout-1-x"), 404, "not_found"),
        (api(sandbox, "POST", "/api/v1/rollouts/checkout-1-x/rollback", json={}), 404, "not_found"),
    ]
    for answer, status, code in refusals:
        error = error_of(answer)
        assert (answer.status_code, error["code"]) == (status, code), error
        assert len(error["message"]) > 20  # says what to do, not just "no"
    assert "latest" in error_of(refusals[4][0])["message"]
    sandbox.drain()
    assert world(sandbox) == before


@pytest.mark.timeout(60)
def test_a_second_active_rollout_is_refused_with_409(sandbox: Sandbox) -> None:
    first = api(sandbox, "POST", "/api/v1/rollouts", json=START)
    assert first.status_code == 201, first.text
    rollout_id = first.json()["id"]
    sandbox.drain()
    wait_for(lambda: card_of(sandbox, rollout_id), what="the first rollout's card")
    before = world(sandbox)

    second = api(sandbox, "POST", "/api/v1/rollouts", json={**START, "image": "v2.3.6"})
    error = error_of(second)
    assert second.status_code == 409 and error["code"] == "active_rollout"
    assert f"/api/v1/rollouts/{rollout_id}/rollback" in error["message"]
    sandbox.drain()
    assert world(sandbox)["rollouts"] == before["rollouts"]
    assert world(sandbox)["idempotency_keys"] == before["idempotency_keys"] == []


@pytest.mark.timeout(60)
def test_a_replayed_idempotency_key_returns_the_same_rollout(sandbox: Sandbox) -> None:
    key = {"Idempotency-Key": "run-4242-attempt-1"}
    first = api(sandbox, "POST", "/api/v1/rollouts", json=START, headers=key)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    sandbox.drain()
    wait_for(lambda: card_of(sandbox, first.json()["id"]), what="the card")
    before = world(sandbox)

    again = api(sandbox, "POST", "/api/v1/rollouts", json=START, headers=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == f"/api/v1/rollouts/{first.json()['id']}"

    other = api(sandbox, "POST", "/api/v1/rollouts", json={**START, "image": "v2.3.6"}, headers=key)
    error = error_of(other)
    assert other.status_code == 422 and error["code"] == "idempotency_key_reused"
    assert "Idempotency-Key" in error["message"]
    sandbox.drain()
    after = world(sandbox)
    assert after["rollouts"] == before["rollouts"] or _same_ids(after, before)
    assert after["idempotency_keys"] == before["idempotency_keys"]
    assert len(after["idempotency_keys"]) == 1
    assert sandbox.runtime is not None
    assert len(sandbox.runtime.store.history("checkout")) == 1


def _same_ids(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """The one rollout may have moved on (its steps are ticking); no new one appeared."""
    return [row[0] for row in after["rollouts"]] == [row[0] for row in before["rollouts"]]


@pytest.mark.timeout(60)
def test_read_list_and_rollback_through_the_api(sandbox: Sandbox) -> None:
    started = api(sandbox, "POST", "/api/v1/rollouts", json=START).json()
    sandbox.drain()
    listed = api(
        sandbox, "GET", "/api/v1/rollouts", params={"service": "checkout"}, token=READER_TOKEN
    )
    assert [r["id"] for r in listed.json()["rollouts"]] == [started["id"]]
    none = api(sandbox, "GET", "/api/v1/rollouts", params={"phase": "succeeded"})
    assert none.json() == {"rollouts": []}
    refused = api(
        sandbox, "POST", f"/api/v1/rollouts/{started['id']}/rollback", json={}, token=READER_TOKEN
    )
    assert refused.status_code == 403

    rolled = api(
        sandbox,
        "POST",
        f"/api/v1/rollouts/{started['id']}/rollback",
        json={"reason": "smoke test failed"},
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["phase"] == "rolling_back"
    assert "smoke test failed" in rolled.json()["reason"]
    sandbox.drain()
    done = wait_for(
        lambda: (
            (r := api(sandbox, "GET", f"/api/v1/rollouts/{started['id']}").json())["done"] and r
        ),
        what="the rollback to finish",
    )
    assert done["phase"] == "rolled_back" and done["breach"] is None
    finished = api(
        sandbox, "GET", "/api/v1/rollouts", params={"phase": "rolled_back"}, token=READER_TOKEN
    )
    assert [r["id"] for r in finished.json()["rollouts"]] == [started["id"]]
    assert sandbox.runtime is not None
    rows = sandbox.runtime.store.audit_rows(started["id"])
    assert [row["actor"] for row in rows if row["action"] == "rollback"] == [GHA]


def test_the_openapi_document_is_served_and_valid(sandbox: Sandbox) -> None:
    answer = api(sandbox, "GET", "/api/v1/openapi.json", token=None)
    assert answer.status_code == 200
    document = answer.json()
    validate(document)
    assert set(document["paths"]) == {
        "/api/v1/rollouts",
        "/api/v1/rollouts/{rollout_id}",
        "/api/v1/rollouts/{rollout_id}/rollback",
    }
    start = document["paths"]["/api/v1/rollouts"]["post"]
    assert {"201", "401", "403", "409", "422"} <= set(start["responses"])
    assert [(p["name"], p["in"]) for p in start["parameters"]] == [("Idempotency-Key", "header")]
    schemas = document["components"]["schemas"]
    assert {"service", "image"} <= set(schemas["StartBody"]["required"])
    assert "breach" in schemas["RolloutOut"]["properties"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("answer", "status", "phase"), [("y\n", 2, "rolled_back"), ("", 3, None)])
def test_ctrl_c_asks_whether_to_roll_back(
    sandbox: Sandbox, answer: str, status: int, phase: str | None
) -> None:
    process = start_release(
        sandbox, "checkout", "v2.3.5", "--wait", env=release_env(), stdin=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None
    first = process.stdout.readline()  # printed once the start was accepted
    assert first.startswith("started checkout-"), first
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(input=answer, timeout=30)
    assert process.returncode == status, (out, err)
    assert "Roll back checkout-" in out
    assert sandbox.runtime is not None
    (rollout,) = sandbox.runtime.store.history("checkout")
    if phase is None:  # no answer (a CI job has no terminal): the rollout goes on
        assert "left running" in out and not rollout.phase.is_terminal
        return
    sandbox.drain()
    wait_for(
        lambda: (
            (r := sandbox.runtime and sandbox.runtime.store.get(rollout.id))
            and r.phase.value == phase
        ),
        what="the rollback",
    )
    rows = sandbox.runtime.store.audit_rows(rollout.id)
    assert [row["actor"] for row in rows if row["action"] == "rollback"] == [GHA]


@pytest.mark.timeout(60)
def test_the_same_start_sent_twice_at_once_starts_one_rollout(sandbox: Sandbox) -> None:
    key = {"Idempotency-Key": "run-99"}
    answers: list[Any] = []
    barrier = threading.Barrier(4)

    def post() -> None:
        barrier.wait()
        answers.append(api(sandbox, "POST", "/api/v1/rollouts", json=START, headers=key))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" not in a.headers for a in answers) == 1
    assert sandbox.runtime is not None
    assert len(sandbox.runtime.store.history("checkout")) == 1


def test_tokens_are_never_logged_and_bodies_keep_the_ports_limit(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    before = world(sandbox)
    with caplog.at_level(logging.DEBUG):
        api(sandbox, "GET", "/api/v1/rollouts")
        api(sandbox, "GET", "/api/v1/rollouts", token="wrong-token-value")
        api(sandbox, "POST", "/api/v1/rollouts", json=START, token=PAYMENTS_TOKEN)
        big = api(sandbox, "POST", "/api/v1/rollouts", data=b"x" * (300 * 1024))
    assert big.status_code == 413
    for secret in (GHA_TOKEN, PAYMENTS_TOKEN, "wrong-token-value"):
        assert secret not in caplog.text
    assert "ci:payments" in caplog.text  # refusals name the token, never its value
    assert world(sandbox) == before


@pytest.mark.timeout(60)
def test_release_exits_3_on_timeout_and_on_a_refused_start(sandbox: Sandbox) -> None:
    waiting = start_release(
        sandbox, "checkout", "v2.3.5", "--wait", "--timeout", "1s", env=release_env()
    )
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 3, (out, err)
    assert "timed out after 1s" in lines(out)[-1] and "goes on" in lines(out)[-1]
    assert sandbox.runtime is not None
    assert sandbox.runtime.store.active_for("checkout") is not None  # left running

    refused = start_release(sandbox, "checkout", "v2.3.6", "--wait", env=release_env())
    out, err = refused.communicate(timeout=30)
    assert refused.returncode == 3 and out == ""
    assert err.startswith("canary-bot release: 409 active_rollout: ")

    unauthorized = start_release(sandbox, "checkout", "v2.3.6", env=release_env(token="nope"))
    out, err = unauthorized.communicate(timeout=30)
    assert unauthorized.returncode == 3 and "401 unauthorized" in err


@pytest.mark.timeout(60)
def test_a_token_gets_only_the_overrides_deployers_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)
    config = SANDBOX_CONFIG.replace("deployers: [steps, interval]", "deployers: [interval]")
    with Sandbox(workdir=tmp_path / "sandbox", config_text=pipeline_config(config)) as box:
        box.start_bot()
        before = world(box)
        steps = api(box, "POST", "/api/v1/rollouts", json={**START, "steps": [10, 20]})
        error = error_of(steps)
        assert (steps.status_code, error["code"]) == (403, "override_not_allowed")
        assert "allow_overrides" in error["message"] and GHA in error["message"]
        floor = api(box, "POST", "/api/v1/rollouts", json={**START, "interval": "500ms"})
        assert floor.status_code == 422  # not a duration the bot accepts
        box.drain()
        assert world(box) == before
        allowed = api(box, "POST", "/api/v1/rollouts", json={**START, "interval": "5s"})
        assert allowed.status_code == 201, allowed.text
        assert box.runtime is not None
        (rollout,) = box.runtime.store.history("checkout")
        assert rollout.plan.step_interval.total_seconds() == 5
