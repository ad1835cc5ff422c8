"""The sandbox's STET dialects: the same world accounts as two kinds of bank write them.

- ``stet14`` (bank ``sandbox-stet14`` under ``/stet/v1``): the 1.4 style of sandbox/wire.py,
  balances behind ``/balances``, amounts as strings (signed or not, per account), dates.
- ``stet16`` (bank ``sandbox-stet16`` under ``/stet/v1.6``): balances embedded in each
  account and no ``/balances`` endpoint, amounts as JSON numbers negative for debits,
  ``bookingDate``/``valueDate`` as date-times, ``remittanceInformation`` as an object, a
  ``bankTransactionCode`` on every entry, and hrefs relative to the API root written with
  its version segment (``v1.6/accounts/...``).

Each company banks with one of them, drawn from its SIREN (sources.banks.sandbox_bank_of);
both carry the same facts, so the parsed record and the features do not depend on it.
In-process renderings hold amounts as Decimal, which is what the adapter's exact JSON
reader makes of the numbers the sandbox serves (see ``dumps``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson

from b2bscore.sandbox import wire
from b2bscore.sources.banks import sandbox_bank_of
from b2bscore.training.world import BankAccount, Company, Txn

Dialect = Literal["stet14", "stet16"]
PREFIXES: dict[Dialect, str] = {"stet14": wire.STET_PREFIX, "stet16": "/stet/v1.6"}
_ROOT_RELATIVE = "v1.6"  # how stet16 hrefs start: relative to /stet, version repeated


def dialect_of(siren: str) -> Dialect:
    """The dialect of the sandbox bank that holds this company's accounts."""
    return "stet16" if sandbox_bank_of(siren) == "sandbox-stet16" else "stet14"


def _number(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def _fragment(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())  # a JSON number, digits as written
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(doc: Any) -> bytes:
    """A rendering as JSON bytes, Decimals written as JSON numbers (never via a float)."""
    return orjson.dumps(doc, default=_fragment)


def parse_date_from(value: str | None) -> date | None:
    """The calendar day of a dateFrom parameter, sent as a date or an ISO date-time."""
    if value is None or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return date.fromisoformat(value)


# --- stet16 ----------------------------------------------------------------------------


def _balances16(account: BankAccount, as_of: date) -> list[dict[str, Any]]:
    stamp = f"{as_of.isoformat()}T06:00:00+01:00"

    def bal(name: str, kind: str, cents: int) -> dict[str, Any]:
        return {
            "name": name,
            "balanceType": kind,
            "balanceAmount": {"amount": _number(cents), "currency": "EUR"},
            "referenceDate": as_of.isoformat(),
            "lastChangeDateTime": stamp,
        }

    # The same balance types, in the same order, as the 1.4 rendering of this account.
    clbd = bal("Solde comptable", "CLBD", account.balance_cents)
    xpcd = bal("Solde prévisionnel", "XPCD", account.balance_cents + account.pending_cents)
    style = account.balance_style
    if style == 0:
        return [clbd, xpcd]
    if style == 1:
        return [
            bal("Solde en valeur", "VALU", account.balance_cents),
            bal("Solde autre", "OTHR", account.balance_cents + account.pending_cents),
            clbd,
        ]
    if style == 2:
        return [xpcd, clbd]
    return [xpcd]


def render_accounts16(company: Company, as_of: date) -> dict[str, Any]:
    """GET /accounts of the stet16 bank: currency on the account, balances embedded."""
    return {
        "accounts": [
            {
                "resourceId": acc.resource_id,
                "bicFi": "SANDFRPPXXX",
                "accountId": {"iban": acc.iban},
                "currency": "EUR",
                "name": f"{acc.name} {company.name}",
                "details": acc.bank_name,
                "cashAccountType": "CACC",
                "usage": "ORGA",
                "psuStatus": "Account Holder",
                "balances": _balances16(acc, as_of),
                "_links": {
                    "transactions": {
                        "href": f"{_ROOT_RELATIVE}/accounts/{acc.resource_id}/transactions"
                    }
                },
            }
            for acc in company.accounts
        ],
        "_links": {"self": {"href": f"{_ROOT_RELATIVE}/accounts"}},
    }


def _code(t: Txn) -> dict[str, str] | None:
    label, credit = t.remittance, t.amount_cents > 0
    if label.startswith("REJET") and credit:
        family, sub = "RDDT", "UPDD"  # the unpaid direct debit coming back
    elif label.startswith("PRLV"):
        family, sub = "RDDT", "ESDD"
    elif label.startswith("VIR"):
        family, sub = ("RCDT" if credit else "ICDT"), "ESCT"
    elif label.startswith("REMISE CB"):
        family, sub = "MCRD", "POSC"
    elif label.startswith("CARTE"):
        family, sub = "CCRD", "POSD"
    elif label.startswith("FRAIS"):
        return {"domain": "ACMT", "family": "MDOP", "subFamily": "CHRG"}
    else:
        return None
    return {"domain": "PMNT", "family": family, "subFamily": sub}


def _txn16(account: BankAccount, t: Txn, seq: int, as_of: date) -> dict[str, Any]:
    day = (as_of - timedelta(days=t.days_ago)).isoformat()
    # A time of day that varies, in the bank's own offset: the day is still the one written.
    minutes = (seq * 37) % (20 * 60)
    stamp = f"{day}T{minutes // 60 + 2:02d}:{minutes % 60:02d}:00+01:00"
    credit = t.amount_cents > 0
    entry: dict[str, Any] = {
        "resourceId": f"{account.resource_id[:12]}-{seq:05d}",
        "entryReference": f"{account.resource_id[12:].upper()}{seq:06d}",
        "transactionAmount": {"amount": _number(t.amount_cents), "currency": "EUR"},
        "creditDebitIndicator": "CRDT" if credit else "DBIT",
        "status": t.status,
        "bookingDate": stamp,
        "valueDate": stamp,
        "transactionDate": day,
        "remittanceInformation": {"unstructured": [t.remittance], "structured": []},
    }
    code = _code(t)
    if code is not None:
        entry["bankTransactionCode"] = code
    return entry


def transactions_href16(resource_id: str, page: int, date_from: date | None = None) -> str:
    """Root-relative link to one page of an account's transactions (stet16)."""
    query = f"dateFrom={date_from.isoformat()}T00:00:00Z&" if date_from else ""
    return f"{_ROOT_RELATIVE}/accounts/{resource_id}/transactions?{query}page={page}"


def render_transaction_pages16(
    account: BankAccount, as_of: date, date_from: date | None = None
) -> list[dict[str, Any]]:
    """Every page of an account's transactions (stet16), newest first, PAGE_SIZE per page."""
    n = len(account.transactions)
    items = [
        _txn16(account, t, n - i, as_of)
        for i, t in enumerate(account.transactions)
        if date_from is None or t.days_ago <= (as_of - date_from).days
    ]
    size = wire.PAGE_SIZE
    chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
    rid = account.resource_id
    pages = []
    for p, chunk in enumerate(chunks, start=1):
        links: dict[str, Any] = {"self": {"href": transactions_href16(rid, p, date_from)}}
        if p < len(chunks):
            links["next"] = {"href": transactions_href16(rid, p + 1, date_from)}
            links["last"] = {"href": transactions_href16(rid, len(chunks), date_from)}
        pages.append({"transactions": chunk, "_links": links})
    return pages


# --- either dialect ----------------------------------------------------------------------


def render_accounts(company: Company, as_of: date, dialect: Dialect) -> dict[str, Any]:
    """GET /accounts in a dialect."""
    if dialect == "stet16":
        return render_accounts16(company, as_of)
    return wire.render_accounts(company, as_of)


def render_transaction_pages(
    account: BankAccount, as_of: date, date_from: date | None, dialect: Dialect
) -> list[dict[str, Any]]:
    """Every page of an account's transactions in a dialect."""
    if dialect == "stet16":
        return render_transaction_pages16(account, as_of, date_from)
    return wire.render_transaction_pages(account, as_of, date_from)


def transactions_href(resource_id: str, page: int, date_from: date | None, dialect: Dialect) -> str:
    """The link to one page of an account's transactions in a dialect."""
    if dialect == "stet16":
        return transactions_href16(resource_id, page, date_from)
    return wire.transactions_href(resource_id, page, date_from)


def render_open_banking(company: Company, as_of: date) -> dict[str, Any] | None:
    """The open-banking raw record in the company's dialect; None without consent."""
    if not company.bank_consent:
        return None
    dialect = dialect_of(company.siren)
    if dialect == "stet14":
        return wire.render_open_banking(company, as_of)
    return {
        "accounts": render_accounts16(company, as_of),
        "balances": {},
        "transactions": {
            a.resource_id: render_transaction_pages16(a, as_of) for a in company.accounts
        },
    }
