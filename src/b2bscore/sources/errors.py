"""Errors an adapter raises; the fan-out turns each into a per-source status."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError

from b2bscore.sources.types import SourceStatus


class SourceError(Exception):
    """A source could not deliver; ``reason`` is short and never holds personal data."""

    status: ClassVar[SourceStatus] = SourceStatus.ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SourceUnavailable(SourceError):
    """No consent, unknown company, no books or no provider: a status, not a failure."""

    status: ClassVar[SourceStatus] = SourceStatus.UNAVAILABLE


class SourceAbsent(SourceUnavailable):
    """The provider answered that it holds nothing for this company (404, no consent).

    Unlike our own conditions (no provider configured, no consent token) or a refusal of
    our credentials, this is a fact about the company, worth remembering for a while.
    """


class SourceTimeout(SourceError):
    """The provider did not answer before the request's cut."""

    status: ClassVar[SourceStatus] = SourceStatus.TIMEOUT


class SourceFormatError(SourceError):
    """The provider answered with a payload that breaks its documented format."""

    status: ClassVar[SourceStatus] = SourceStatus.ERROR


class SourceUpstreamError(SourceError):
    """The provider failed: 5xx, unexpected status, connection or read error."""

    status: ClassVar[SourceStatus] = SourceStatus.ERROR

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        # Seconds the provider asked us to wait (429 Retry-After), when it said so.
        self.retry_after = retry_after


def _decimal_string(value: object) -> object:
    # Providers send money as decimal strings; a JSON number would already have gone
    # through a binary float in some encoder upstream.
    if not isinstance(value, str):
        raise ValueError("amount must be a decimal string")
    return value


DecimalStr = Annotated[Decimal, BeforeValidator(_decimal_string)]


def validation_reason(what: str, error: ValidationError) -> str:
    """A short reason from a pydantic error: location and type only, never the input."""
    first = error.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in first["loc"])
    more = error.error_count() - 1
    suffix = f" (+{more})" if more else ""
    return f"{what}: {loc or 'body'} {first['type']}{suffix}"[:160]


_M = TypeVar("_M", bound=BaseModel)


def validate_wire(model: type[_M], value: object, what: str) -> _M:
    """value validated as model, or SourceFormatError with a short reason."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise SourceFormatError(validation_reason(what, error)) from error
