"""`canary-bot audit export | verify`: a hash-chained archive of the audit table.

The rows are written by the store as the bot writes them (`SqliteStore.audit`, which the
engine calls for every command, click and cluster change), exported through the console
script's `main`, which finds the store through `--config` or `$CANARY_CONFIG` as `serve` does,
then edited the way someone covering their tracks would, and verified.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from rollout.audit_chain import GENESIS, row_hash
from rollout.store import SqliteStore

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose store holds ten audit rows: checkout's rollout r1, cart's r2, and two
    rows of no rollout."""
    path = tmp_path / "canary-bot.yaml"
    path.write_text(f"store:\n  path: {tmp_path / 'canary.db'}\n")
    store = SqliteStore(tmp_path / "canary.db")
    try:
        for rollout_id, service in (("r1", "checkout"), ("r2", "cart")):
            store._db.execute(  # the rollouts row only links the audit rows to a service
                "INSERT INTO rollouts (id, service, phase, active, created_at, updated_at, data) "
                "VALUES (?, ?, 'succeeded', 0, ?, ?, '{}')",
                [rollout_id, service, T0.isoformat(), T0.isoformat()],
            )
        for minute in range(10):
            rollout_id = (None, "r1", "r2")[minute % 3]
            store.audit(
                at=T0 + timedelta(minutes=minute),
                actor=("U01ALICE", "U02BOB", "ci:github-actions")[minute % 3],
                action=("start", "weight 25%", "refused: approve")[minute % 3],
                rollout_id=rollout_id,
                detail=None if minute % 2 else f'note «{minute}», with "quotes"\nand a line',
            )
    finally:
        store.close()
    return path


def export(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["audit", "export", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


def verify(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", str(path), *args])
    return code, capsys.readouterr().out


def lines_of(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def write_lines(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_an_intact_export_verifies(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = export(config, capsys)
    rows = lines_of(text)
    assert [row["id"] for row in rows] == list(range(1, 11))
    assert rows[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    assert rows[0]["detail"] == 'note «0», with "quotes"\nand a line'
    code, said = verify(write_lines(tmp_path / "audit.jsonl", rows), capsys)
    assert code == 0, said
    assert "intact, 10 rows (ids 1-10)" in said
    assert str(rows[-1]["hash"]) in said


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "U04MALLORY"),
        ("action", "approve"),
        ("detail", "added later"),
        ("at", "2026-11-30"),
    ],
)
def test_one_changed_field_is_named_by_its_row(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, value: object
) -> None:
    rows = lines_of(export(config, capsys))
    rows[3][field] = value  # row id 4
    code, said = verify(write_lines(tmp_path / "audit.jsonl", rows), capsys)
    assert code == 1
    assert "chain broken at row 4 (record 4 of the file)" in said
    assert "a field of this row was changed" in said


def test_a_changed_row_with_its_hash_recomputed_breaks_the_next_link(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = lines_of(export(config, capsys))
    rows[3]["actor"] = "U04MALLORY"
    rows[3]["hash"] = row_hash(rows[3], prev_hash=str(rows[3]["prev_hash"]))
    code, said = verify(write_lines(tmp_path / "audit.jsonl", rows), capsys)
    assert code == 1
    assert "row 5" in said and "prev_hash is not the hash of row 4" in said


def test_a_deleted_row_is_detected(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = lines_of(export(config, capsys))
    del rows[5]  # row id 6
    code, said = verify(write_lines(tmp_path / "audit.jsonl", rows), capsys)
    assert code == 1
    assert "chain broken at row 7" in said and "row 6 before it is missing" in said


def test_deleted_rows_renumbered_are_detected(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = lines_of(export(config, capsys))
    del rows[5]
    for row in rows[5:]:
        row["id"] = int(str(row["id"])) - 1
    code, said = verify(write_lines(tmp_path / "audit.jsonl", rows), capsys)
    assert code == 1
    assert "chain broken at row 6" in said


def test_reordered_rows_are_detected(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = lines_of(export(config, capsys))
    rows[2], rows[3] = rows[3], rows[2]
    code, said = verify(write_lines(tmp_path / "audit.jsonl", rows), capsys)
    assert code == 1
    assert "row 3" in said and "reordered" in said


def test_csv_export_verifies_and_detects_a_change(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = export(config, capsys, "--format", "csv")
    path = tmp_path / "audit.csv"
    path.write_text(text)
    assert verify(path, capsys)[0] == 0
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 10
    rows[7]["actor"] = "U04MALLORY"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    code, said = verify(path, capsys)
    assert code == 1 and "row 8" in said


def test_export_to_a_file_with_output(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    assert main(["audit", "export", "--config", str(config), "--output", str(target)]) == 0
    assert "wrote 10 audit rows" in capsys.readouterr().err
    assert verify(target, capsys)[0] == 0


def test_since_exports_the_tail_of_the_chain(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = lines_of(export(config, capsys, "--since", "2026-11-30T12:07:00Z"))
    assert [row["id"] for row in rows] == [8, 9, 10]
    assert verify(write_lines(tmp_path / "tail.jsonl", rows), capsys)[0] == 0


def test_a_service_export_verifies_as_partial(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = lines_of(export(config, capsys, "--service", "checkout"))
    assert [row["id"] for row in rows] == [2, 5, 8]
    path = write_lines(tmp_path / "checkout.jsonl", rows)
    assert verify(path, capsys, "--partial")[0] == 0
    code, said = verify(path, capsys)  # as a full export, the gaps are missing rows
    assert code == 1 and "missing" in said
    rows[1]["detail"] = "edited"
    code, said = verify(write_lines(path, rows), capsys, "--partial")
    assert code == 1 and "row 5" in said


def test_the_store_is_found_through_canary_config(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY_CONFIG", str(config))
    assert main(["audit", "export"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10
    monkeypatch.delenv("CANARY_CONFIG")
    assert main(["audit", "export"]) == 2
    assert "pass --config PATH or set CANARY_CONFIG" in capsys.readouterr().err


def test_bad_since_and_unreadable_files_are_usage_errors(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["audit", "export", "--config", str(config), "--since", "last week"]) == 2
    assert "--since: 'last week' is neither a time" in capsys.readouterr().err
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"id": 1}\nnot json\n')
    assert verify(garbage, capsys)[0] == 2


def test_a_store_from_before_the_chain_is_sealed_once_on_opening(tmp_path: Path) -> None:
    """Upgrading: the rows an older bot wrote get their chain, and the table stays locked."""
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.executescript(
        """
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
            rollout_id TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, before TEXT,
            after TEXT, detail TEXT);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        INSERT INTO audit (at, actor, action) VALUES ('2026-01-01T00:00:00+00:00', 'U1', 'a');
        INSERT INTO audit (at, actor, action) VALUES ('2026-01-02T00:00:00+00:00', 'U2', 'b');
        """
    )
    old.close()
    store = SqliteStore(db)
    try:
        store.audit(at=T0, actor="U3", action="c")
        rows = store.audit_export()
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store._db.execute("UPDATE audit SET actor = 'U9' WHERE id = 1")
    finally:
        store.close()
    assert [row["actor"] for row in rows] == ["U1", "U2", "U3"]
    assert rows[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    assert all(row["hash"] == row_hash(row, prev_hash=row["prev_hash"]) for row in rows)
