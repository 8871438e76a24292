"""The bot token and signing secret never reach a log line, whoever logs and wherever it goes.

A filter on one handler or logger misses records that propagate past it and handlers added
later (a test's capture, a library's own handler), so the redaction sits in the log record
factory instead: every record created in the process, by our code or a library's, is checked
once, before any handler sees it. Only a record that holds a secret is changed: its message is
formatted and the secret replaced, and the same is done to its traceback text and stack.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
# Shorter values would blank out ordinary words; real tokens and secrets are far longer.
MIN_SECRET_LENGTH = 8

_secrets: frozenset[str] = frozenset()
_installed = False
_lock = threading.Lock()


class RedactingFilter(logging.Filter):
    """For a handler that must redact other values too; the process-wide redaction of the
    bot's own secrets is `install_redaction`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = _usable(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self._secrets)
        return True


def install_redaction(*secrets: str | None) -> None:
    """From now on, every log record made in this process has these values redacted.

    Safe to call again (several bots in one test process): the values add up.
    """
    global _secrets, _installed
    with _lock:
        _secrets = _secrets | _usable(s for s in secrets if s)
        if _installed:
            return
        _installed = True
        make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact_record(record, _secrets)
        return record

    logging.setLogRecordFactory(redacting_factory)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_record(record: logging.LogRecord, secrets: frozenset[str]) -> None:
    if not secrets:
        return
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: logging reports it, with them
        message = f"{record.msg} {record.args}"
    if _holds(message, secrets):
        record.msg, record.args = redact(message, secrets), None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        trace = logging.Formatter().formatException(record.exc_info)
        if _holds(trace, secrets):
            record.exc_text = redact(trace, secrets)
    for name in ("exc_text", "stack_info"):
        value = getattr(record, name, None)
        if isinstance(value, str) and _holds(value, secrets):
            setattr(record, name, redact(value, secrets))


def _holds(text: str, secrets: frozenset[str]) -> bool:
    return any(secret in text for secret in secrets)


def _usable(secrets: Iterable[str]) -> frozenset[str]:
    secrets = list(secrets)
    if any(len(s) < MIN_SECRET_LENGTH for s in secrets):
        # Said once per value's source, without the value: it cannot be kept out of logs.
        logging.getLogger(__name__).warning(
            "a configured secret is shorter than %d characters and is not redacted from "
            "logs; use a longer token or password",
            MIN_SECRET_LENGTH,
        )
    return frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
