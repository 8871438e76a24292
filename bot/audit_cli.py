"""`canary-bot audit export | verify`: the audit log as an archive an auditor can check.

`export` writes the audit table (optionally from a time on, or for one service) with each row's
`prev_hash` and `hash`, as JSON Lines or CSV, to stdout or `--output`. `verify FILE` reads such
a file back and names the first row where the hash chain breaks (exit 1), or says it is intact
(exit 0) and prints the last hash: keep that hash somewhere else (a ticket, a commit), because
whoever can rewrite the whole file can also recompute every hash after the rows they changed.
The store is found the way `serve` finds its config (`--config`, else `$CANARY_CONFIG`), and
`$CANARY_STORE_URL` overrides its `store.url` the same way: SQLite or PostgreSQL alike.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bot.config_loader import load_config
from rollout.audit_chain import EXPORT_FIELDS, first_break
from rollout.durations import parse_duration
from rollout.stores import open_store, store_url

EXIT_INTACT, EXIT_BROKEN, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="export the audit log, or verify an export")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    export = commands.add_parser("export", help="write the audit table with its hash chain")
    export.add_argument("--config", help="config file (default: $CANARY_CONFIG)")
    export.add_argument(
        "--since",
        help="rows at or after this time: 2026-11-30, 2026-11-30T12:00:00Z, or a duration "
        "back from now like 24h",
    )
    export.add_argument("--service", help="only the rows of this service's rollouts")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", help="write here instead of stdout")
    verify = commands.add_parser("verify", help="check an export's hash chain")
    verify.add_argument("file")
    verify.add_argument(
        "--partial",
        action="store_true",
        help="the file is an export of one service (--service): rows of other services are "
        "expected to be missing; each row is still checked",
    )


def run(
    args: argparse.Namespace,
    *,
    out: TextIO,
    err: TextIO,
    find_config: Callable[[str | None], str],
) -> int:
    """`find_config` is how `serve` finds its config (`--config`, else `$CANARY_CONFIG`)."""
    if args.audit_command == "verify":
        return verify(Path(args.file), partial=args.partial, out=out, err=err)
    try:
        since = parse_since(args.since, now=datetime.now(UTC)) if args.since else None
    except ValueError as error:
        print(f"canary-bot: --since: {error}", file=err)
        return EXIT_USAGE
    config = load_config(find_config(args.config))
    store = open_store(path=config.store.path, url=store_url(config.store.url, os.environ))
    try:
        rows = store.audit_export(since=since, service=args.service)
    finally:
        store.close()
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as target:
            write_rows(rows, fmt=args.format, out=target)
        print(f"wrote {len(rows)} audit rows to {args.output}", file=err)
    else:
        write_rows(rows, fmt=args.format, out=out)
    return EXIT_INTACT


def parse_since(text: str, *, now: datetime) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or a duration back from now."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a time like 2026-11-30 or 2026-11-30T12:00:00Z nor a "
            "duration like 24h"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def write_rows(rows: Iterable[Mapping[str, Any]], *, fmt: str, out: TextIO) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({name: row[name] for name in EXPORT_FIELDS}) + "\n")
        return
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: row[name] for name in EXPORT_FIELDS})


def read_rows(text: str) -> Iterator[dict[str, Any]]:
    """The rows of a JSON Lines or CSV export (told apart by the first character)."""
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ValueError(f"line {number} is not JSON") from None
                if not isinstance(row, dict):
                    raise ValueError(f"line {number} is not a JSON object")
                yield row
        return
    yield from csv.DictReader(io.StringIO(text, newline=""))


def verify(path: Path, *, partial: bool, out: TextIO, err: TextIO) -> int:
    try:
        rows = list(read_rows(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        print(f"canary-bot: cannot read {path}: {error}", file=err)
        return EXIT_USAGE
    broken = first_break(rows, partial=partial)
    if broken is not None:
        print(f"{path}: chain broken at {broken}", file=out)
        return EXIT_BROKEN
    if not rows:
        print(f"{path}: no rows", file=out)
        return EXIT_INTACT
    print(
        f"{path}: intact, {len(rows)} rows (ids {rows[0]['id']}-{rows[-1]['id']}); "
        f"last hash {rows[-1]['hash']}",
        file=out,
    )
    return EXIT_INTACT
