"""`bot.logging_setup`: a secret never survives into a log line, however it was logged."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest

from bot.config_loader import load_config_text
from bot.logging_setup import REDACTED, RedactingFilter, install_redaction
from bot.parts import url_passwords
from bot.registry import registry_settings


@pytest.fixture
def secret() -> str:
    return f"xoxb-{secrets.token_hex(12)}"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"redaction-test-{secrets.token_hex(4)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def log_every_way(logger: logging.Logger, secret: str) -> None:
    logger.info("as an argument: %s", secret)
    logger.info(f"in the message: {secret}")
    logger.info("in a mapping: %(token)s", {"token": secret})
    logger.info("too few arguments for the format %s %s", secret)
    try:
        raise PermissionError(f"invalid_auth for {secret}")
    except PermissionError:
        logger.exception("with a traceback")
    logger.info("with the stack", stack_info=True, extra={"unrelated": secret})


def test_install_redaction_covers_records_from_any_logger(
    secret: str, captured: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = captured
    install_redaction(secret, None, "short")
    log_every_way(logger, secret)
    output = stream.getvalue()
    assert secret not in output
    assert output.count(REDACTED) >= 5
    logger.info("a short word stays: short")  # too short to be a secret: never redacted
    assert "a short word stays: short" in stream.getvalue()


def test_a_filter_redacts_for_one_handler(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    other = f"signing-{secrets.token_hex(12)}"
    logger.handlers[0].addFilter(RedactingFilter([other]))
    logger.warning("secret %s in %s", other, "args")
    assert other not in stream.getvalue()
    assert f"secret {REDACTED} in args" in stream.getvalue()


def test_a_registry_logins_password_is_redacted_once_its_settings_are_read(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    password = f"ghp_{secrets.token_hex(12)}"
    config = load_config_text(
        "registry:\n  logins: [{registry: ghcr.io, username: ci-bot, password_env: GHCR_PULL}]\n",
        source="config.yaml",
    )
    registry_settings(config, {"GHCR_PULL": password})
    logger, stream = captured
    logger.warning("401 from ghcr.io for ci-bot:%s", password)
    assert password not in stream.getvalue()


def test_the_database_password_is_redacted_wherever_a_driver_quotes_the_url(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    password = f"pg-{secrets.token_hex(12)}"
    url = f"postgresql+psycopg://canary:{password.replace('-', '%2D')}@db.internal:5432/canary"
    install_redaction(*url_passwords(url))
    logger, stream = captured
    logger.error("connection failed: %s (password %s)", url, password)
    assert password not in stream.getvalue()
    assert password.replace("-", "%2D") not in stream.getvalue()  # nor as the URL writes it
    assert url_passwords("sqlite:///canary.db") == ()
    assert url_passwords(None) == ()


def test_a_secret_too_short_to_redact_is_warned_about_without_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.logging_setup"):
        install_redaction("canary1")
    assert "shorter than 8 characters and is not redacted" in caplog.text
    assert "canary1" not in caplog.text
