"""Open banking adapter: STET PSD2 AISP accounts, balances and paginated transactions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from b2bscore.sources.clients import get_json, resolve_link
from b2bscore.sources.errors import (
    SourceAbsent,
    SourceError,
    SourceFormatError,
    SourceUnavailable,
    SourceUpstreamError,
    validate_wire,
    validation_reason,
)
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import BankAccount, BankData, BankTransaction

# 50 per page: 40 pages hold 2,000 transactions, well above the busiest account seen;
# the cap only stops a provider that links pages in a loop.
MAX_TRANSACTION_PAGES = 40
_T = TypeVar("_T")


# --- wire models (only the fields the adapter reads; the rest is ignored) ------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Href(_Wire):
    href: str


class _AccountLinks(_Wire):
    balances: _Href | None = None
    transactions: _Href | None = None


class _AccountId(_Wire):
    iban: str | None = None
    currency: str


class _Account(_Wire):
    resourceId: str  # noqa: N815 - STET field name
    accountId: _AccountId  # noqa: N815
    cashAccountType: str  # noqa: N815
    links: _AccountLinks | None = Field(default=None, alias="_links")


class _Accounts(_Wire):
    accounts: list[_Account]


# STET's amountType: a decimal string, optional minus, at most 14 digits and 3 decimals.
# A JSON number, "12,00", "+1", "1E+2" or "NaN" is refused, for balances and transactions
# alike, in pydantic-core rather than by a Python validator per entry.
_AmountText = Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,14}(\.[0-9]{1,3})?$")]


class _Amount(_Wire):
    amount: _AmountText
    currency: str


class _Balance(_Wire):
    balanceType: str  # noqa: N815
    balanceAmount: _Amount  # noqa: N815


class _Balances(_Wire):
    balances: list[_Balance]


# Transaction pages are the bulk of a record (hundreds of entries per account): they are
# validated as typed dicts in one pydantic-core pass, about 3x faster than building a
# model instance per entry.
class _TxAmount(TypedDict):
    amount: _AmountText
    currency: str


class _Transaction(TypedDict):
    transactionAmount: _TxAmount
    creditDebitIndicator: Literal["CRDT", "DBIT"]
    status: Literal["BOOK", "PDNG"]
    bookingDate: NotRequired[date | None]
    valueDate: NotRequired[date | None]
    remittanceInformation: NotRequired[list[str] | None]


class _PageHref(TypedDict):
    href: str


class _PageLinks(TypedDict, total=False):
    next: _PageHref | None


class _Page(TypedDict):
    transactions: list[_Transaction]
    _links: NotRequired[_PageLinks | None]


_PAGE = TypeAdapter(_Page)


# --- pure parser ----------------------------------------------------------------------


def validate_page(page: object) -> _Page:
    """One transaction page validated, or SourceFormatError with a short reason."""
    try:
        return _PAGE.validate_python(page)
    except ValidationError as error:
        raise SourceFormatError(validation_reason("transactions", error)) from error


def _transaction(tx: _Transaction, as_of: date) -> BankTransaction:
    # Banks disagree on the sign of amount; the indicator is authoritative.
    magnitude = abs(Decimal(tx["transactionAmount"]["amount"]))
    amount = magnitude if tx["creditDebitIndicator"] == "CRDT" else -magnitude
    booked = tx.get("bookingDate") or tx.get("valueDate")
    if booked is None:
        if tx["status"] == "BOOK":
            raise SourceFormatError("transactions: booked entry without bookingDate")
        booked = as_of  # a pending entry may carry no date yet
    return BankTransaction(
        booking_date=booked,
        amount=amount,
        status=tx["status"],
        remittance=" ".join(tx.get("remittanceInformation") or ()),
    )


def _balance(balances: _Balances) -> Decimal | None:
    by_type = {b.balanceType: Decimal(b.balanceAmount.amount) for b in balances.balances}
    return by_type.get("CLBD", by_type.get("XPCD"))


def parse_raw(raw: Mapping[str, Any], tokenizer: Tokenizer, as_of: date) -> BankData:
    """The normalized bank data of an open banking raw record (see docs/PROVIDERS.md)."""
    accounts = validate_wire(_Accounts, raw.get("accounts"), "accounts")
    balances_by_id = raw.get("balances")
    pages_by_id = raw.get("transactions")
    if not isinstance(balances_by_id, Mapping) or not isinstance(pages_by_id, Mapping):
        raise SourceFormatError("raw record: balances or transactions missing")
    parsed: list[BankAccount] = []
    for account in accounts.accounts:
        rid = account.resourceId
        if rid not in balances_by_id or rid not in pages_by_id:
            raise SourceFormatError("raw record: account without balances or transactions")
        balances = validate_wire(_Balances, balances_by_id[rid], "balances")
        pages = pages_by_id[rid]
        if not isinstance(pages, list):
            raise SourceFormatError("transactions: pages are not a list")
        transactions = [
            _transaction(tx, as_of) for page in pages for tx in validate_page(page)["transactions"]
        ]
        iban = account.accountId.iban
        parsed.append(
            BankAccount(
                account_token=tokenizer.token(rid),
                iban_token=tokenizer.iban_token(iban) if iban else None,
                cash_account_type=account.cashAccountType,
                balance=_balance(balances),
                currency=account.accountId.currency,
                transactions=tuple(transactions),
            )
        )
    return BankData(as_of=as_of, accounts=tuple(parsed))


# --- HTTP fetch -------------------------------------------------------------------------


async def _all(*aws: Awaitable[_T]) -> list[_T]:
    # TaskGroup rather than gather: one failure cancels the siblings instead of leaving
    # them running after the source has already been reported.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coro(aw)) for aw in aws]
    except* SourceError as errors:
        raise _first(errors) from None
    return [t.result() for t in tasks]


async def _as_coro(aw: Awaitable[_T]) -> _T:
    return await aw


def _first(group: BaseExceptionGroup[SourceError]) -> SourceError:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


async def _pages(
    client: httpx.AsyncClient, first: str, headers: Mapping[str, str], max_pages: int
) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    url: str | None = first
    while url is not None:
        if len(pages) >= max_pages:
            raise SourceFormatError(f"transactions: more than {max_pages} pages")
        what = f"transactions page {len(pages) + 1}"
        try:
            page = await get_json(client, url, what=what, headers=headers)
        except SourceError as error:
            if pages:
                # A later page failing means a truncated history, not a missing consent.
                raise SourceUpstreamError(error.reason) from error
            raise
        pages.append(page)
        links = page.get("_links")
        nxt = links.get("next") if isinstance(links, dict) else None
        href = nxt.get("href") if isinstance(nxt, dict) else None
        url = resolve_link(client, href) if isinstance(href, str) and href else None
    return pages


async def _account(
    client: httpx.AsyncClient,
    account: Mapping[str, Any],
    headers: Mapping[str, str],
    max_pages: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    links = account.get("_links") or {}
    default = f"accounts/{quote(account['resourceId'], safe='')}"
    balances_url = _link(client, links, "balances", f"{default}/balances")
    transactions_url = _link(client, links, "transactions", f"{default}/transactions")
    return await _pair(
        get_json(client, balances_url, what="balances", headers=headers),
        _pages(client, transactions_url, headers, max_pages),
    )


async def _pair(
    a: Awaitable[dict[str, Any]], b: Awaitable[list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        async with asyncio.TaskGroup() as group:
            ta = group.create_task(_as_coro(a))
            tb = group.create_task(_as_coro(b))
    except* SourceError as errors:
        raise _first(errors) from None
    return ta.result(), tb.result()


def _link(client: httpx.AsyncClient, links: Any, name: str, default: str) -> str:
    link = links.get(name) if isinstance(links, dict) else None
    href = link.get("href") if isinstance(link, dict) else None
    return resolve_link(client, href) if isinstance(href, str) and href else default


async def fetch_open_banking(
    client: httpx.AsyncClient, token: str, *, max_pages: int = MAX_TRANSACTION_PAGES
) -> dict[str, Any]:
    """The open banking raw record of the PSU behind token (accounts, balances, pages)."""
    headers = {"Authorization": f"Bearer {token}"}
    accounts = await get_json(client, "accounts", what="accounts", headers=headers)
    listed = accounts.get("accounts")
    if not isinstance(listed, list) or not all(
        isinstance(a, dict) and isinstance(a.get("resourceId"), str) and a["resourceId"]
        for a in listed
    ):
        raise SourceFormatError("accounts: missing resourceId")
    try:
        per_account = await _all(*(_account(client, a, headers, max_pages) for a in listed))
    except SourceAbsent as error:
        # One account's balances or history missing is not the company having no bank
        # data: report it, but do not let it be remembered as absence.
        raise SourceUnavailable(error.reason) from error
    return {
        "accounts": accounts,
        "balances": {a["resourceId"]: b for a, (b, _) in zip(listed, per_account, strict=True)},
        "transactions": {a["resourceId"]: p for a, (_, p) in zip(listed, per_account, strict=True)},
    }
