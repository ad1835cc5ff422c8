"""Logs never carry IBANs or bank account ids."""

from __future__ import annotations

import logging
import time

import pytest

from b2bscore.kit.logging import LogThrottle, RedactingFormatter, redact


def test_ibans_and_account_paths_are_redacted() -> None:
    line = (
        "GET http://bank/stet/v1/accounts/4a8328a43ad1d31f148c/transactions?page=2 "
        "for FR7630003215410983053966807 and FR76 3000 3215 4109 8305 3966 807"
    )
    redacted = redact(line)
    assert "4a8328a43ad1d31f148c" not in redacted
    assert "FR76" not in redacted
    assert "/accounts/[account]/transactions?page=2" in redacted
    assert redacted.count("[iban]") == 2


def test_ordinary_text_is_left_alone() -> None:
    assert redact("scored 111111118 in 12.5 ms: approve") == "scored 111111118 in 12.5 ms: approve"


def test_the_formatter_redacts_messages_and_arguments() -> None:
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "failed for %s", ("FR7630003215410983053966807",), None
    )
    assert "FR76" not in RedactingFormatter("%(message)s").format(record)


def test_repeated_failures_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = LogThrottle(interval_seconds=0.2)
    logger = logging.getLogger("b2bscore.test.throttle")
    caplog.set_level(logging.WARNING, logger=logger.name)
    written = [
        throttle.log(logger, logging.WARNING, "db", "store down: %s", "x") for _ in range(50)
    ]
    assert written == [True] + [False] * 49
    # Another kind of failure is not held back by the first.
    assert throttle.log(logger, logging.WARNING, "redis", "redis down")
    time.sleep(0.25)
    assert throttle.log(logger, logging.WARNING, "db", "store down: %s", "y")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "store down: x",
        "redis down",
        messages[2],
    ]
    assert messages[2].startswith("store down: y (and 49 more like it in the last ")
