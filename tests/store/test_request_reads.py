"""`/canary status` reads on the embedded store: a burst of requests that meets a write reads
the database once, the other requests of the burst wait for that read (rollout/stores/sqlite.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollout.model import Rollout
from rollout.stores import open_store
from rollout.stores.sqlite import SqliteStore
from rollout.stores.tx import Tx
from tests.builders import rollout

ASKING = 8


def test_a_burst_that_meets_a_write_reads_the_database_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(path=tmp_path / "canary.db", url=None)
    assert isinstance(store, SqliteStore)
    store.create(rollout(id="r-1", service="checkout"), actor="U01ALICE")  # a write
    reads: list[str] = []
    release = threading.Event()
    read = store._request_read

    @contextmanager
    def held_read() -> Iterator[Tx]:
        reads.append("read")
        assert release.wait(10)  # the first read is slow: the burst arrives meanwhile
        with read() as tx:
            yield tx

    monkeypatch.setattr(store, "_request_read", held_read)
    arrived = threading.Semaphore(0)
    answers: list[Rollout | None] = []

    def ask() -> None:
        arrived.release()
        answers.append(store.active_for("checkout"))

    burst = [threading.Thread(target=ask) for _ in range(ASKING)]
    for thread in burst:
        thread.start()
    for _ in burst:
        assert arrived.acquire(timeout=10)
    release.set()
    for thread in burst:
        thread.join(10)
    assert len(answers) == ASKING and answers[0] is not None
    assert all(answer is answers[0] for answer in answers)
    assert reads == ["read"]
    store.close()
