"""Structured, single-line logs that never carry an IBAN or a bank account id."""

from __future__ import annotations

import logging
import re
import sys

# IBANs anywhere, and the account ids STET puts in URL paths: neither may reach a log,
# whatever library wrote the line.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")
_ACCOUNT_PATH = re.compile(r"(/accounts/)[^/\s?\"']+")


def redact(text: str) -> str:
    """text with IBANs shown as [iban] and account ids as [account]."""
    return _ACCOUNT_PATH.sub(r"\1[account]", _IBAN.sub("[iban]", text))


class RedactingFormatter(logging.Formatter):
    """A formatter whose output, traceback included, goes through redact()."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line, redacted."""
        return redact(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    """Log lines to stderr with time, level and logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per provider call would drown the service's own logs (and cost CPU).
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
