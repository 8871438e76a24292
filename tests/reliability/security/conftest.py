"""Who may talk to the bot, what it accepts, and what it never says: the bot these tests talk to
(two services, `checkout` in production and `web` in staging), and what they look at.

- Requests must carry Slack's signature over the exact body, made within five minutes either
  way of now; anything else is a 401 and changes nothing (test_signed_requests.py).
- A body over 256 KB is a 413 (with or without a Content-Length) and changes nothing (same).
- Every command that changes a rollout, and every button, checks the channel and the person
  (deployer, approver, the starter who may not approve alone); each refusal is an ephemeral
  explanation and an audit row `refused: <action>` naming who tried (test_authorisation.py).
- Production services release only pinned images: a version tag or a digest
  (test_image_policy.py).
- The bot token and the signing secret appear in no log line (caplog at DEBUG, and a served
  bot's own stderr at DEBUG) and nowhere in what the bot sends Slack or the cluster
  (test_secrets_kept.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import Sandbox, stable_deployment
from tests.reliability.support import sandbox_config


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """The bot, up, with `checkout` (production) and `web` (staging) and no rollout yet."""
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=sandbox_config(
            services=["checkout", "web"], steps=[25, 50], step_interval="1h", staging=["web"]
        ),
    )
    box.start()
    box.kube.seed(stable_deployment(name="web", image="registry.example.com/shop/web:v1.0.0"))
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def store_of(sandbox: Sandbox) -> Any:
    assert sandbox.runtime is not None
    return sandbox.runtime.store


def refusals(sandbox: Sandbox) -> list[tuple[str, str]]:
    return [
        (row["actor"], row["action"])
        for row in store_of(sandbox).audit_rows()
        if row["action"].startswith("refused:") and row["detail"]
    ]


def nothing_happened(sandbox: Sandbox) -> None:
    sandbox.drain()  # the bot acts after its answer: look once that work is done
    assert store_of(sandbox).history("checkout") == []
    assert sandbox.kube.writes_snapshot() == []
    assert sandbox.slack.calls_to("chat.postMessage") == []
