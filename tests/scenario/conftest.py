"""A running bot in a sandbox (cluster + Slack emulators), driven over signed HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from canary_sandbox.sandbox import Sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(workdir=tmp_path / "sandbox")
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()
