"""The embedded store: one SQLite file through sqlite-utils, for a single replica.

One connection shared by the bot's threads behind a lock (SQLite serialises writers anyway);
every write is a BEGIN IMMEDIATE transaction, which also makes audit appenders and the fencing
check take turns (rollout/stores/sql.py). APScheduler's job store lives in the same file.
A `serve` on this store holds an exclusive lock on a file beside it (rollout/stores/lock.py),
taken by the command, not here, so tools can still open the file to read it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from rollout.audit_chain import GENESIS, row_hash
from rollout.model import Rollout
from rollout.stores.migrations import Migration, migrate
from rollout.stores.sql import IDEMPOTENCY_KEYS as _IDEMPOTENCY_KEYS
from rollout.stores.sql import SqlStore
from rollout.stores.tx import Tx

_NO_UPDATE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""


class SqliteTx:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self._db = db

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self._db.query(sql, list(params)))

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._db.execute(sql, list(params)).rowcount)


class SqliteStore(SqlStore):
    SENT_AGG = "json_group_object(o.key, o.ts)"
    STALE_PAGE = (
        "json_extract(entry, '$.kind') = 'page' "
        "AND json_extract(entry, '$.event.fields.traffic_on_stable') = 1"
    )
    GREATEST = "MAX"
    INTEGRITY_ERRORS = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=30000")
        self._db = sqlite_utils.Database(connection)
        self._lock = threading.RLock()
        # Request-path reads (see `_request_read`): one connection per thread that asks.
        self._readers = threading.local()
        self._reader_dbs: list[sqlite_utils.Database] = []
        # What `active_for` found per service, and the file's count of writes then.
        self._writes = _writes_to(self.path)
        self._active_kept: tuple[int, dict[str, Rollout | None]] = (-1, {})
        # One database read per service and write: the others asking meanwhile wait for it.
        self._active_reading = threading.Lock()
        with self._begin() as tx:
            self.schema_version = migrate(tx, MIGRATIONS, where=str(self.path))

    @contextmanager
    def _begin(self) -> Iterator[Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            finally:
                self._writes.bump()  # once committed, what `active_for` kept may be old

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        with self._lock:
            yield SqliteTx(self._db)

    @contextmanager
    def _request_read(self) -> Iterator[Tx]:
        """This thread's own connection, for the reads a Slack request makes before its
        acknowledgement. Through the one shared connection, fifty requests at once queued on
        its lock behind each other and behind every tick's and sender's writes (bench/ack.py:
        most of a request's time went there); under WAL a reader on its own connection never
        waits for the writer, and SQLite runs the query without holding the GIL."""
        db: sqlite_utils.Database | None = getattr(self._readers, "db", None)
        if db is None:
            connection = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            connection.execute("PRAGMA busy_timeout=30000")
            db = sqlite_utils.Database(connection)
            self._readers.db = db
            with self._lock:
                self._reader_dbs.append(db)
        yield SqliteTx(db)

    def active_for(self, service: str) -> Rollout | None:
        """The service's active rollout, read from the database only when something was
        written since it was last read.

        Every write to this file goes through `_begin` of a store in this process (`serve`
        holds the file's lock; tools only read), so the file's count of committed write
        transactions, shared by every store object on it, says when a read may be out of
        date. `/canary status` then costs no SQLite call at all while nothing changed: the
        read itself was cheap, but SQLite releases the GIL around each step of a query, and
        with fifty acknowledgements in flight every release handed the interpreter to another
        thread and back, about 18 context switches a request (bench/ack.py). A read that
        races a write keeps the count it saw before reading, so the next read after the
        write goes to the database again."""
        kept_at, kept = self._active_kept
        if kept_at == self._writes.value and service in kept:
            return kept[service]
        # After a write, the first of a burst reads; the other requests of the burst wait
        # for it here rather than each reading too: SQLite releases the GIL at every step of
        # a read, so the fifty reads of a burst that met a write (bench/ack.py found up to a
        # dozen a round during a rollout) handed the interpreter around hundreds of times.
        with self._active_reading:
            writes = self._writes.value
            kept_at, kept = self._active_kept
            if kept_at != writes:
                # Only what was read since the last write is kept: the names asked about come
                # from whoever types `/canary status <name>`, so they must not pile up.
                kept = {}
                self._active_kept = (writes, kept)
            elif service in kept:
                return kept[service]
            found = super().active_for(service)
            kept[service] = found
            return found

    @property
    def scheduler_url(self) -> str:
        return f"sqlite:///{self.path}"

    def close(self) -> None:
        with self._lock:
            for reader in self._reader_dbs:
                reader.conn.close()
            self._db.conn.close()


class _WriteCount:
    """Committed write transactions to one file, by any store object of this process."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_WRITE_COUNTS: dict[Path, _WriteCount] = {}
_WRITE_COUNTS_LOCK = threading.Lock()


def _writes_to(path: Path) -> _WriteCount:
    with _WRITE_COUNTS_LOCK:
        return _WRITE_COUNTS.setdefault(path.resolve(), _WriteCount())


def _chain_audit_rows(tx: Tx) -> None:
    """A file from before the hash chain: add its columns and seal the rows it has, once.

    The only UPDATE the audit table ever sees, with its trigger lifted for the length of this
    one transaction and put back before it commits.
    """
    columns = {row["name"] for row in tx.rows("PRAGMA table_info(audit)")}
    if "hash" in columns:
        return
    tx.run("ALTER TABLE audit ADD COLUMN prev_hash TEXT")
    tx.run("ALTER TABLE audit ADD COLUMN hash TEXT")
    tx.run("DROP TRIGGER audit_no_update")
    prev = GENESIS
    for row in tx.rows("SELECT * FROM audit ORDER BY id"):
        sealed = row_hash(row, prev_hash=prev)
        tx.run("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", [prev, sealed, row["id"]])
        prev = sealed
    tx.run(_NO_UPDATE_TRIGGER)


MIGRATIONS = (
    Migration(
        1,
        "the schema before versions: rollouts, audit (hash chain), outbox, deliveries, samples",
        (
            """CREATE TABLE IF NOT EXISTS rollouts (
                id TEXT PRIMARY KEY, service TEXT NOT NULL, phase TEXT NOT NULL,
                active INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                data TEXT NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS rollouts_service ON rollouts (service, active)",
            """CREATE UNIQUE INDEX IF NOT EXISTS one_active_rollout_per_service
                ON rollouts (service) WHERE active = 1""",
            """CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, rollout_id TEXT,
                actor TEXT NOT NULL, action TEXT NOT NULL, before TEXT, after TEXT,
                detail TEXT, prev_hash TEXT, hash TEXT)""",
            "CREATE INDEX IF NOT EXISTS audit_rollout ON audit (rollout_id)",
            _NO_UPDATE_TRIGGER,
            """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
            """CREATE TABLE IF NOT EXISTS outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL,
                key TEXT NOT NULL, entry TEXT NOT NULL, state TEXT NOT NULL,
                unsure INTEGER NOT NULL DEFAULT 0, ts TEXT, UNIQUE (rollout_id, key))""",
            "CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, rollout_id, seq)",
            "CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, at TEXT NOT NULL)",
            """CREATE TABLE IF NOT EXISTS measurements (
                id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL,
                at TEXT NOT NULL, data TEXT NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS measurements_rollout ON measurements (rollout_id, at)",
        ),
        then=_chain_audit_rows,
    ),
    Migration(
        2,
        "optimistic concurrency (rollouts.version) and fencing (leadership, audit.epoch)",
        (
            "ALTER TABLE rollouts ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE audit ADD COLUMN epoch INTEGER",
            """CREATE TABLE leadership (
                id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL,
                holder TEXT, since TEXT)""",
            "INSERT INTO leadership (id, epoch) VALUES (1, 0)",
        ),
    ),
    Migration(3, "pipeline API idempotency keys", (_IDEMPOTENCY_KEYS,)),
)
