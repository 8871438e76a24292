"""The whole bot on PostgreSQL: `CANARY_STORE_URL` set, a rollout driven over signed HTTP from
start to promotion, the analysis beat's job in the same database, and `canary-bot audit export`
reading the chain back from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.cli import main
from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox
from rollout.audit_chain import first_break
from rollout.model import Phase
from rollout.stores import STORE_URL_ENV
from rollout.stores.postgres import PostgresStore
from tests.scenario.test_rollout_flow import approval_message, only_rollout, wait_until


@pytest.fixture
def sandbox(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    monkeypatch.setenv(STORE_URL_ENV, postgres_url)
    box = Sandbox(workdir=tmp_path / "sandbox")
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


@pytest.mark.timeout(120)
def test_a_rollout_runs_start_to_promotion_on_postgres(
    sandbox: Sandbox, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sandbox.runtime is not None and isinstance(sandbox.runtime.store, PostgresStore)
    reply = sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    approval = wait_until(lambda: approval_message(sandbox), timeout=60, what="the approval")
    sandbox.driver.click(message=approval, action_id="approve", user=CAROL)
    wait_until(lambda: only_rollout(sandbox).phase == Phase.SUCCEEDED, what="promotion")
    assert not (sandbox.workdir / "canary.db").exists()  # nothing went to the SQLite file
    with psycopg.connect(postgres_url) as connection:
        jobs = connection.execute(b"SELECT id FROM apscheduler_jobs").fetchall()
    assert jobs == [("canary-bot-analysis-beat",)]

    assert main(["audit", "export", "--config", str(sandbox.config_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    actions = [(row["actor"], row["action"]) for row in rows]
    assert (BOB, "start") in actions and (CAROL, "approve") in actions
    assert ("canary-bot", "promoted") in actions
    assert first_break(rows) is None
