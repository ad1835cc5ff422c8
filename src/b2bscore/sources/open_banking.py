"""Open banking adapter: STET PSD2 AISP (1.4 to 1.6) accounts, balances and transactions.

Banks speak STET with accents: ``accountId`` present or not, ``currency`` on the account or
inside ``accountId``, amounts as strings or JSON numbers, signed or not, dates or
date-times, ``remittanceInformation`` as a list or as ``{unstructured, structured}``,
balances embedded in the account or behind ``/balances``. The parser accepts all of them.
A malformed entry (transaction, balance or account) is dropped and counted; only a
malformed account list or page envelope fails the source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired, TypeVar
from urllib.parse import quote

import httpx
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError
from pydantic.types import Strict
from typing_extensions import TypedDict

from b2bscore.kit.settings import get_settings
from b2bscore.sources.clients import get_json
from b2bscore.sources.errors import (
    SourceAbsent,
    SourceError,
    SourceFormatError,
    SourceUnavailable,
    SourceUpstreamError,
    validation_reason,
)
from b2bscore.sources.stet_http import CALL_TIMEOUT, DEADLINE, StetClient, loads_exact
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import (
    REJECT_MARKERS,
    BankAccount,
    BankData,
    BankTransaction,
)

# 200 per page in the sandbox, 50 at some banks: 40 pages hold 2,000 transactions, well
# above the busiest account seen; the cap only stops a provider that links pages in a loop.
MAX_TRANSACTION_PAGES = 40
MAX_ACCOUNT_PAGES = 10
# ISO 20022 bank transaction codes of the credit that reverses an unpaid direct debit
# received by the account holder (domain PMNT, family RDDT).
_REJECT_FAMILIES = frozenset({"RDDT"})
_REJECT_SUBFAMILIES = frozenset({"UPDD", "RRTN"})
# The two labels spelled out: in the per-entry loop, a generator over the tuple costs more
# than the tests themselves (and a case-insensitive regex ten times more).
_REJECT_A, _REJECT_B = REJECT_MARKERS
_AFTER_DATE = ("", "T", " ")  # a date alone, or the time of a date-time
_T = TypeVar("_T")


# --- wire types (only the fields the adapter reads; the rest is ignored) --------------

# STET's amountType is a decimal string of at most 14 digits and 3 decimals, optionally
# signed; some banks send a JSON number instead (read as Decimal from its text by
# stet_http.loads_exact, or an int). A float, "12,00", "1E+2" or "NaN" is refused.
_AmountText = Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,14}(\.[0-9]{1,3})?$")]
_AmountNumber = Annotated[Decimal, Strict(), Field(allow_inf_nan=False, gt=-(10**14), lt=10**14)]
_AmountInt = Annotated[int, Strict(), Field(gt=-(10**14), lt=10**14)]
# Left to right: a string (most banks) is settled by the first member, without trying the
# others for a better match.
_AmountValue = Annotated[
    _AmountText | _AmountNumber | _AmountInt, Field(union_mode="left_to_right")
]
# A date or an ISO date-time. Only the calendar day is used: the first ten characters,
# the day in the offset the bank wrote, read (and checked) in the loop. Parsing whole
# date-times here would cost more than the rest of the entry.
_DateValue = str


class _Amount(TypedDict):
    amount: _AmountValue
    currency: NotRequired[str | None]


# Transaction pages are the bulk of a record (hundreds of entries per account): they are
# validated as typed dicts in one pydantic-core pass, and entry by entry only when that
# pass fails, to find and drop the malformed ones.
class _Transaction(TypedDict):
    transactionAmount: _Amount
    creditDebitIndicator: Literal["CRDT", "DBIT"]
    status: Literal["BOOK", "PDNG", "OTHR"]
    bookingDate: NotRequired[_DateValue | None]
    valueDate: NotRequired[_DateValue | None]
    transactionDate: NotRequired[_DateValue | None]
    # A list, a string or {unstructured, structured}: read in the loop (a union here would
    # build a failed attempt's error for every entry of one of the two dialects).
    remittanceInformation: NotRequired[Any]
    bankTransactionCode: NotRequired[Any]  # read leniently: a hint, not a requirement


class _Page(TypedDict):
    transactions: list[_Transaction]


class _PageEnvelope(TypedDict):
    transactions: list[Any]


class _Balance(TypedDict):
    balanceType: str
    balanceAmount: _Amount


class _BalancesEnvelope(TypedDict):
    balances: list[Any]


class _AccountIdentifier(TypedDict, total=False):
    iban: str | None
    currency: str | None


class _Account(TypedDict):
    resourceId: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    accountId: NotRequired[_AccountIdentifier | None]
    currency: NotRequired[str | None]
    cashAccountType: NotRequired[str | None]
    balances: NotRequired[list[Any] | None]  # embedded balances (STET 1.6 at some banks)


class _AccountsEnvelope(TypedDict):
    accounts: list[Any]


_PAGE = TypeAdapter(_Page)
_PAGE_ENVELOPE = TypeAdapter(_PageEnvelope)
_TRANSACTION = TypeAdapter(_Transaction)
_BALANCE = TypeAdapter(_Balance)
_BALANCES_ENVELOPE = TypeAdapter(_BalancesEnvelope)
_BALANCE_LIST = TypeAdapter(list[Any])
_ACCOUNT = TypeAdapter(_Account)
_ACCOUNTS_ENVELOPE = TypeAdapter(_AccountsEnvelope)


def _valid(adapter: TypeAdapter[_T], value: object, what: str) -> _T:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise SourceFormatError(validation_reason(what, error)) from error


# --- pure parser ----------------------------------------------------------------------


def valid_accounts(body: object) -> tuple[list[dict[str, Any]], int]:
    """The well-formed accounts of a GET /accounts body and how many were dropped."""
    listed = _valid(_ACCOUNTS_ENVELOPE, body, "accounts")["accounts"]
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in listed:
        try:
            _ACCOUNT.validate_python(entry)
        except ValidationError:
            continue
        if entry["resourceId"] not in seen:  # an account listed on two pages counts once
            seen.add(entry["resourceId"])
            kept.append(entry)
    return kept, len(listed) - len(kept)


def _page_entries(page: object, number: int) -> tuple[Sequence[_Transaction], int]:
    try:
        return _PAGE.validate_python(page)["transactions"], 0
    except ValidationError:
        pass
    entries = _valid(_PAGE_ENVELOPE, page, f"transactions page {number}")["transactions"]
    kept: list[_Transaction] = []
    for entry in entries:
        try:
            kept.append(_TRANSACTION.validate_python(entry))
        except ValidationError:
            continue
    return kept, len(entries) - len(kept)


def _decimal(value: str | Decimal | int) -> Decimal:
    # The wire types already bound the value (pattern, finite, under 10^14).
    return value if isinstance(value, Decimal) else Decimal(value)


def _remittance(info: Any) -> str:
    """The unstructured remittance lines as one text; TypeError when they are not text."""
    if info is None:
        return ""
    if isinstance(info, str):
        return info
    if isinstance(info, Mapping):
        info = info.get("unstructured")
        if info is None or isinstance(info, str):
            return info or ""
    if isinstance(info, list):
        return " ".join(info)
    raise TypeError("remittanceInformation is not text")


def _coded_reject(code: Any) -> bool:
    """The bank's code says this credit is an unpaid direct debit coming back."""
    return (
        code is not None
        and isinstance(code, Mapping)
        and code.get("domain") in (None, "PMNT")
        and code.get("family") in _REJECT_FAMILIES
        and code.get("subFamily") in _REJECT_SUBFAMILIES
    )


def _transactions(pages: list[Any], as_of: date) -> tuple[list[BankTransaction], int, str | None]:
    """An account's kept transactions, how many entries were dropped, and their currency."""
    # The hot loop of a record (hundreds of entries): one pass, no call per entry beyond
    # what the entry's shape requires.
    kept: list[BankTransaction] = []
    append = kept.append
    dropped = 0
    currency: str | None = None
    for number, page in enumerate(pages, start=1):
        entries, bad = _page_entries(page, number)
        dropped += bad
        for tx in entries:
            status = tx["status"]
            text = tx.get("bookingDate") or tx.get("valueDate") or tx.get("transactionDate")
            if text is None:
                if status == "BOOK":
                    dropped += 1  # a booked entry without any date cannot be placed in time
                    continue
                booked = as_of  # a pending entry may carry no date yet
            else:
                try:
                    booked = date.fromisoformat(text[:10])
                except ValueError:
                    dropped += 1  # not a date
                    continue
                if text[10:11] not in _AFTER_DATE:
                    dropped += 1  # a date followed by something else than a time
                    continue
            info = tx.get("remittanceInformation")
            try:
                remittance = " ".join(info) if info.__class__ is list else _remittance(info)
            except TypeError:
                dropped += 1  # lines that are not strings
                continue
            money = tx["transactionAmount"]
            value = money["amount"]
            # Banks disagree on the sign of amount; the indicator is authoritative.
            magnitude = (value if isinstance(value, Decimal) else Decimal(value)).copy_abs()
            if tx["creditDebitIndicator"] == "CRDT":
                upper = remittance.upper()
                rejected = (
                    _REJECT_A in upper
                    or _REJECT_B in upper
                    or _coded_reject(tx.get("bankTransactionCode"))
                )
                append(BankTransaction(booked, magnitude, status, remittance, rejected))
            else:
                append(BankTransaction(booked, -magnitude, status, remittance))
            if currency is None:
                currency = money.get("currency")
    return kept, dropped, currency


def _balances(entries: Sequence[Any]) -> tuple[Decimal | None, str | None, int]:
    by_type: dict[str, Decimal] = {}
    currency: str | None = None
    dropped = 0
    for entry in entries:
        try:
            balance = _BALANCE.validate_python(entry)
        except ValidationError:
            dropped += 1
            continue
        amount = _decimal(balance["balanceAmount"]["amount"])
        by_type.setdefault(balance["balanceType"], amount)
        currency = currency or balance["balanceAmount"].get("currency")
    return by_type.get("CLBD", by_type.get("XPCD")), currency, dropped


def _account_balances(account: Mapping[str, Any], fetched: object) -> Sequence[Any]:
    embedded = account.get("balances")
    if embedded is not None:
        return list(embedded)
    if fetched is None:
        return ()  # a bank without /balances and nothing embedded: no balance, not an error
    return _valid(_BALANCES_ENVELOPE, fetched, "balances")["balances"]


def parse_raw(raw: Mapping[str, Any], tokenizer: Tokenizer, as_of: date) -> BankData:
    """The normalized bank data of an open banking raw record (see docs/PROVIDERS.md)."""
    accounts, dropped = valid_accounts(raw.get("accounts"))
    balances_by_id = raw.get("balances") or {}
    pages_by_id = raw.get("transactions")
    if not isinstance(balances_by_id, Mapping):
        raise SourceFormatError("balances: not an object of resourceId to balances")
    if not isinstance(pages_by_id, Mapping):
        raise SourceFormatError("transactions: not an object of resourceId to pages")
    parsed: list[BankAccount] = []
    for number, account in enumerate(accounts, start=1):
        rid = account["resourceId"]
        pages = pages_by_id.get(rid)
        if not isinstance(pages, list):
            raise SourceFormatError(f"transactions: no list of pages for account {number}")
        balance, balance_currency, bad_balances = _balances(
            _account_balances(account, balances_by_id.get(rid))
        )
        transactions, bad_entries, tx_currency = _transactions(pages, as_of)
        dropped += bad_balances + bad_entries
        identifier = account.get("accountId") or {}
        iban = identifier.get("iban")
        # STET 1.4 puts currency in accountId, some banks on the account itself; a bank
        # that names it nowhere still names it on its amounts.
        currency = (
            identifier.get("currency") or account.get("currency") or balance_currency or tx_currency
        )
        parsed.append(
            BankAccount(
                account_token=tokenizer.token(rid),
                iban_token=tokenizer.iban_token(iban) if iban else None,
                cash_account_type=account.get("cashAccountType") or "CACC",
                balance=balance,
                currency=currency or "",
                transactions=tuple(transactions),
            )
        )
    return BankData(as_of=as_of, accounts=tuple(parsed), dropped=dropped)


def dropped_detail(data: BankData) -> str | None:
    """The source status detail of a record with dropped entries, None when none was."""
    if not data.dropped:
        return None
    return f"{data.dropped} malformed entr{'y' if data.dropped == 1 else 'ies'} dropped"


def feature_balance(data: BankData) -> Decimal | None:
    """The balance the bank features use: the sum over EUR accounts that report one."""
    balances = [a.balance for a in data.accounts if a.currency == "EUR" and a.balance is not None]
    return sum(balances, Decimal(0)) if balances else None


def normalised(data: BankData) -> dict[str, Any]:
    """The normalised record as a JSON-ready dict (what ``providers parse`` prints)."""
    balance = feature_balance(data)
    return {
        "as_of": data.as_of.isoformat(),
        "accounts": [
            {
                "account_token": a.account_token,
                "iban_token": a.iban_token,
                "cash_account_type": a.cash_account_type,
                "currency": a.currency,
                "balance": None if a.balance is None else str(a.balance),
                "transactions": len(a.transactions),
            }
            for a in data.accounts
        ],
        "transactions": [
            {
                "account": index,
                "booking_date": t.booking_date.isoformat(),
                "amount": str(t.amount),
                "status": t.status,
                "remittance": t.remittance,
                "rejected_debit": t.rejected_debit,
            }
            for index, a in enumerate(data.accounts)
            for t in a.transactions
        ],
        "dropped": data.dropped,
        "balance": None if balance is None else str(balance),
    }


def parse_document(raw: bytes) -> dict[str, Any]:
    """The normalised record of a raw-record document (docs/PROVIDERS.md), JSON-ready.

    Raises SourceFormatError naming the field at fault when the document is unusable.
    """
    try:
        document = loads_exact(raw)
    except ValueError as error:
        raise SourceFormatError("document: invalid json") from error
    if not isinstance(document, dict):
        raise SourceFormatError("document: not a json object")
    tokenizer = Tokenizer.from_settings(get_settings())
    return normalised(parse_raw(document, tokenizer, datetime.now(UTC).date()))


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


async def _get(client: StetClient, url: str, what: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    return await get_json(
        client.http,
        url,
        what=what,
        headers=headers,
        loads=loads_exact,
        call_timeout=CALL_TIMEOUT.get(),
    )


def _href_of(client: StetClient, page: Mapping[str, Any], name: str) -> str | None:
    links = page.get("_links")
    link = links.get(name) if isinstance(links, Mapping) else None
    href = link.get("href") if isinstance(link, Mapping) else None
    return client.href(href) if isinstance(href, str) and href else None


def _page_key(url: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    parsed = httpx.URL(url)
    return parsed.host, parsed.path, tuple(sorted(parsed.params.multi_items()))


def _numbered(next_url: str, last_url: str | None, room: int) -> list[str]:
    """The URLs of pages next..last when the bank numbers its pages, else []."""
    # Only when next and last differ by nothing but an integer page number may the pages in
    # between be asked for at once; any other scheme (cursors, "page=last") is followed.
    if last_url is None:
        return []
    nxt, last = httpx.URL(next_url), httpx.URL(last_url)
    first_number, last_number = nxt.params.get("page", ""), last.params.get("page", "")
    if not (first_number.isdigit() and last_number.isdigit()):
        return []
    if _page_key(str(nxt.copy_remove_param("page"))) != _page_key(
        str(last.copy_remove_param("page"))
    ):
        return []
    first_page, last_page = int(first_number), int(last_number)
    if not first_page <= last_page < first_page + room:
        return []
    return [str(nxt.copy_set_param("page", str(n))) for n in range(first_page, last_page + 1)]


async def _page(client: StetClient, url: str, number: int, token: str) -> dict[str, Any]:
    what = f"transactions page {number}"
    try:
        page = await _get(client, url, what, token)
    except SourceError as error:
        if number > 1:
            # A later page failing means a truncated history, not a missing consent.
            raise SourceUpstreamError(error.reason) from error
        raise
    _valid(_PAGE_ENVELOPE, page, what)
    return page


async def _pages(client: StetClient, first: str, token: str, max_pages: int) -> list[Any]:
    """Every page of an account's transactions, following next links.

    When the first page says how many pages there are (numbered next and last links), the
    remaining pages are asked for at once, then kept only as far as each one's next link
    confirms the guess: the chain the bank wrote is what counts.
    """
    pages: list[Any] = []
    url: str | None = first
    seen: set[str] = set()
    while url is not None:
        if len(pages) >= max_pages or url in seen:
            raise SourceFormatError(f"transactions: more than {max_pages} pages or a loop")
        seen.add(url)
        page = await _page(client, url, len(pages) + 1, token)
        pages.append(page)
        url = _href_of(client, page, "next")
        if url is None or len(pages) > 1:
            continue
        guesses = _numbered(url, _href_of(client, page, "last"), max_pages - len(pages))
        if len(guesses) < 2:
            continue
        fetched = await _all(
            *(_page(client, u, len(pages) + i, token) for i, u in enumerate(guesses, start=1))
        )
        for guess, guessed_page in zip(guesses, fetched, strict=True):
            if url is None or _page_key(url) != _page_key(guess):
                break  # the bank's chain leaves the numbering: follow its links from here
            seen.add(guess)
            pages.append(guessed_page)
            url = _href_of(client, guessed_page, "next")
    return pages


def _link(client: StetClient, account: Mapping[str, Any], name: str) -> str:
    links = account.get("_links")
    link = links.get(name) if isinstance(links, Mapping) else None
    href = link.get("href") if isinstance(link, Mapping) else None
    if isinstance(href, str) and href:
        return client.href(href)
    return client.href(f"accounts/{quote(account['resourceId'], safe='')}/{name}")


def _history_window(
    client: StetClient, now: datetime, date_from: datetime | None = None
) -> dict[str, str]:
    # Midnight UTC, so that the URL (and any cache keyed on it) is stable for a day.
    start = (date_from or now - timedelta(days=client.history_days)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return {
        "dateFrom": start.isoformat().replace("+00:00", "Z"),
        "dateTo": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }


async def _account(
    client: StetClient,
    account: Mapping[str, Any],
    token: str,
    window: Mapping[str, str],
    max_pages: int,
    with_transactions: bool = True,
) -> tuple[Any, list[Any]]:
    quirks = client.bank.quirks
    if not with_transactions:
        # A consent to balances only: the history is neither asked for nor kept.
        if account.get("balances") is not None or not quirks.balances_endpoint:
            return None, []
        return await _get(client, _link(client, account, "balances"), "balances", token), []
    first = str(httpx.URL(_link(client, account, "transactions")).copy_merge_params(window))
    transactions = _pages(client, first, token, max_pages)
    if account.get("balances") is not None or not quirks.balances_endpoint:
        # Balances come inside the account (or nowhere): /balances may not even exist.
        return None, await transactions
    try:
        async with asyncio.TaskGroup() as group:
            balances = group.create_task(
                _get(client, _link(client, account, "balances"), "balances", token)
            )
            pages = group.create_task(transactions)
    except* SourceError as errors:
        raise _first(errors) from None
    return balances.result(), pages.result()


async def _accounts(client: StetClient, token: str) -> dict[str, Any]:
    url: str | None = client.href("accounts")
    first: dict[str, Any] | None = None
    listed: list[Any] = []
    seen: set[str] = set()
    while url is not None:
        if len(seen) >= MAX_ACCOUNT_PAGES or url in seen:
            raise SourceFormatError(f"accounts: more than {MAX_ACCOUNT_PAGES} pages or a loop")
        seen.add(url)
        body = await _get(client, url, f"accounts page {len(seen)}", token)
        listed.extend(_valid(_ACCOUNTS_ENVELOPE, body, "accounts")["accounts"])
        first = first or body
        url = _href_of(client, body, "next")
    assert first is not None
    # Every page's accounts in the first page's body: the raw record keeps one body.
    return {**first, "accounts": listed}


# STET's connectedPsu is a name: anything longer is not one.
MAX_IDENTITY_CHARS = 140


async def fetch_identity(client: StetClient, token: str) -> str | None:
    """The connected PSU's name (STET GET /end-user-identity); None when the bank has none.

    A bank without the endpoint (404, 501) or without a usable name gives None; a refused
    token raises as every STET call does.
    """
    try:
        body = await _get(client, client.href("end-user-identity"), "identity", token)
    except SourceAbsent:
        return None
    except SourceUpstreamError as error:
        if error.reason.endswith("http 501"):
            return None
        raise
    name = body.get("connectedPsu")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_IDENTITY_CHARS:
        return None
    return name.strip()


async def fetch_open_banking(
    client: StetClient,
    token: str,
    *,
    max_pages: int = MAX_TRANSACTION_PAGES,
    deadline: float | None = None,
    now: datetime | None = None,
    transactions: bool = True,
    date_from: datetime | None = None,
    call_timeout: float | None = None,
) -> dict[str, Any]:
    """The open banking raw record of the PSU behind token (accounts, balances, pages).

    deadline (time.monotonic()) bounds the waits a 429 asks for; the caller still enforces
    it by cancelling. transactions False reads balances only (a balances-only consent);
    date_from starts the history there (an incremental sync) instead of history_days ago.
    call_timeout bounds each call instead of the client's timeout (the decision budget):
    a background sync has no budget, and a bank may take seconds for a page.
    """
    if deadline is not None:
        DEADLINE.set(deadline)  # this task's context only; copied into its subtasks
    # Set for this call only: the caller's later calls keep their own timeout.
    timeout_token = CALL_TIMEOUT.set(call_timeout)
    try:
        return await _fetch(client, token, max_pages, now, transactions, date_from)
    finally:
        CALL_TIMEOUT.reset(timeout_token)


async def _fetch(
    client: StetClient,
    token: str,
    max_pages: int,
    now: datetime | None,
    transactions: bool,
    date_from: datetime | None,
) -> dict[str, Any]:
    window = _history_window(client, now or datetime.now(UTC), date_from)
    accounts_body = await _accounts(client, token)
    accounts, _ = valid_accounts(accounts_body)
    try:
        per_account = await _all(
            *(_account(client, a, token, window, max_pages, transactions) for a in accounts)
        )
    except SourceAbsent as error:
        # One account's balances or history missing is not the company having no bank
        # data: report it, but do not let it be remembered as absence.
        raise SourceUnavailable(error.reason) from error
    ids = [a["resourceId"] for a in accounts]
    return {
        "accounts": accounts_body,
        "balances": {rid: b for rid, (b, _) in zip(ids, per_account, strict=True) if b is not None},
        "transactions": {rid: p for rid, (_, p) in zip(ids, per_account, strict=True)},
    }
