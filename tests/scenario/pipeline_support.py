"""What the pipeline API tests share: a sandbox whose config has API tokens, and ways to
call the API and to see that a refused request changed nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import requests
import yaml

from canary_sandbox.sandbox import SANDBOX_CONFIG, Sandbox

GHA_TOKEN = "gha-0123456789abcdef"
PAYMENTS_TOKEN = "pay-0123456789abcdef"
READER_TOKEN = "read-0123456789abcdef"
TOKEN_ENV = {
    "CANARY_TEST_TOKEN_GHA": GHA_TOKEN,
    "CANARY_TEST_TOKEN_PAY": PAYMENTS_TOKEN,
    "CANARY_TEST_TOKEN_READ": READER_TOKEN,
}
GHA = "ci:github-actions"

API = {
    "tokens": [
        {
            "name": "ci:github-actions",
            "token_env": "CANARY_TEST_TOKEN_GHA",
            "services": ["checkout"],
        },
        {"name": "ci:payments", "token_env": "CANARY_TEST_TOKEN_PAY", "services": ["payments"]},
        {
            "name": "dashboards",
            "token_env": "CANARY_TEST_TOKEN_READ",
            "services": ["*"],
            "verbs": ["read"],
        },
    ]
}


def pipeline_config(base: str = SANDBOX_CONFIG) -> str:
    """`base` with the tokens above, and a second service only so a token can be scoped to it."""
    config = yaml.safe_load(base)
    payments = {**config["services"]["checkout"], "deployment": "payments"}
    config["services"]["payments"] = payments
    config["api"] = API
    return str(yaml.safe_dump(config, sort_keys=False))


def api(
    sandbox: Sandbox,
    method: str,
    path: str,
    *,
    token: str | None = GHA_TOKEN,
    **kw: Any,
) -> requests.Response:
    assert sandbox.server is not None
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(
        method, f"{sandbox.server.url}{path}", headers=headers, timeout=10, **kw
    )


def world(sandbox: Sandbox) -> dict[str, Any]:
    """Everything a refused request must leave as it was: the rollouts and outbox tables,
    the idempotency keys, every Slack message, every Kubernetes write."""
    with closing(sqlite3.connect(f"file:{sandbox.db_path}?mode=ro", uri=True)) as db:
        tables = {
            name: db.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall()
            for name in ("rollouts", "outbox", "idempotency_keys")
        }
    return {
        **tables,
        "slack": [
            (c.method, c.args)
            for c in sandbox.slack.calls
            if c.method.startswith(("chat.", "files."))
        ],
        "kube": len(sandbox.kube.writes),
    }


def release_command(sandbox: Sandbox, *args: str) -> list[str]:
    assert sandbox.server is not None
    return [
        sys.executable,
        "-m",
        "bot.cli",
        "release",
        *args,
        "--api-url",
        sandbox.server.url,
        "--poll-interval",
        "0.1",
    ]


def release_env(token: str = GHA_TOKEN, **extra: str) -> dict[str, str]:
    """A CI job's environment: GitHub Actions' variables, the token, nothing of the bot's."""
    import os

    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "LANG")}
    return {
        **keep,
        "CANARY_API_TOKEN": token,
        "GITHUB_SHA": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_ACTOR": "alice",
        **extra,
    }


def start_release(
    sandbox: Sandbox, *args: str, env: dict[str, str], stdin: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        release_command(sandbox, *args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=stdin,
        text=True,
    )


def lines(text: str) -> Sequence[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
