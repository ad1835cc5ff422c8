"""Structured, single-line logs that never carry an IBAN or a bank account id."""

from __future__ import annotations

import logging
import re
import sys
import time

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
    # One line per provider call would drown the service's own logs (and cost CPU), and
    # so would the job engine's three lines per periodic job, every few seconds.
    for chatty in ("httpx", "httpcore", "procrastinate"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class LogThrottle:
    """Logs the first failure of a kind at once, then at most one line per interval.

    During an outage every request meets the same failure; one line per request (with a
    traceback) drowns the log and costs CPU when it is needed most. The line that ends a
    quiet interval says how many were suppressed, so the count is never lost.
    """

    def __init__(self, interval_seconds: float = 10.0) -> None:
        self.interval_seconds = interval_seconds
        # kind -> (when the last line was written, failures suppressed since)
        self._kinds: dict[str, tuple[float, int]] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        kind: str,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log message for this kind unless one was written within the interval; True if so."""
        now = time.monotonic()
        last, suppressed = self._kinds.get(kind, (float("-inf"), 0))
        if now - last < self.interval_seconds:
            self._kinds[kind] = (last, suppressed + 1)
            return False
        self._kinds[kind] = (now, 0)
        if suppressed:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, suppressed, now - last)
        logger.log(level, message, *args, exc_info=exc_info)
        return True


# One throttle for the process: the same kind of failure seen by any module counts once.
throttle = LogThrottle()
