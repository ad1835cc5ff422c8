"""Accounting adapter: a company's FEC files mapped on the PCG to financial statements.

The raw record holds the FEC files as text (``{"fec": [{"name", "origin", "text"}, ...]}``),
one per fiscal year, from the lender's upload (``origin: upload``) or the accounting
provider (``origin: provider``). Each file is validated by the FEC reader and its balances
mapped on the French chart of accounts (docs/PROVIDERS.md has the table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from b2bscore.sources.clients import get_json, get_text
from b2bscore.sources.errors import SourceFormatError, validate_wire
from b2bscore.sources.fec import FecBooks, FecError, closing_date_of, parse_fec
from b2bscore.sources.types import AccountingData, FinancialStatement

_ZERO = Decimal(0)
# Three fiscal years are what the features look at (the latest and its growth over the one
# before); older files are not fetched.
MAX_YEARS = 3


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _FecFile(_Wire):
    name: str
    text: str
    origin: str = "provider"


class _Raw(_Wire):
    fec: list[_FecFile]


class _IndexFile(_Wire):
    name: str
    href: str


class _Index(_Wire):
    files: list[_IndexFile]


class Ledger:
    """Balances by account of one fiscal year, read by PCG prefix (prefixes of 1-4 digits)."""

    __slots__ = ("_credit", "_debit", "_net")

    def __init__(self, balances: Mapping[str, Decimal]) -> None:
        # One pass builds every prefix's sums, so each lookup below is a dict read.
        net: dict[str, Decimal] = {}
        debit: dict[str, Decimal] = {}
        credit: dict[str, Decimal] = {}
        for account, amount in balances.items():
            side = debit if amount > 0 else credit if amount < 0 else None
            for n in range(1, 5):
                prefix = account[:n]
                net[prefix] = net.get(prefix, _ZERO) + amount
                if side is not None:
                    side[prefix] = side.get(prefix, _ZERO) + amount
        self._net, self._debit, self._credit = net, debit, credit

    @staticmethod
    def _sum(
        table: Mapping[str, Decimal], prefixes: tuple[str, ...], exclude: tuple[str, ...]
    ) -> Decimal:
        total = sum((table.get(p, _ZERO) for p in prefixes), _ZERO)
        return total - sum((table.get(p, _ZERO) for p in exclude), _ZERO)

    def bal(self, *prefixes: str, exclude: tuple[str, ...] = ()) -> Decimal:
        """Sum of (debit - credit) over accounts starting with prefixes (exclude: inside them)."""
        return self._sum(self._net, prefixes, exclude)

    def cr(self, *prefixes: str, exclude: tuple[str, ...] = ()) -> Decimal:
        """Sum of (credit - debit) over accounts starting with any of prefixes, less exclude."""
        return -self.bal(*prefixes, exclude=exclude)

    def debit_side(self, *prefixes: str, exclude: tuple[str, ...] = ()) -> Decimal:
        """Sum of the debit balances (assets) among accounts starting with prefixes."""
        return self._sum(self._debit, prefixes, exclude)

    def credit_side(self, *prefixes: str, exclude: tuple[str, ...] = ()) -> Decimal:
        """Sum of the credit balances (liabilities), as positive amounts, among prefixes."""
        return -self._sum(self._credit, prefixes, exclude)


_THIRD_PARTIES = ("40", "41", "42", "43", "44", "45", "46", "47", "48")
_BANKS = ("51",)
_OVERDRAFT = ("519",)


def statement_of(balances: Mapping[str, Decimal], closing_date: date) -> FinancialStatement:
    """The financial statement of one fiscal year's balances (the table of docs/PROVIDERS.md)."""
    g = Ledger(balances)
    # Income statement. A pre-closing file still holds classes 6 and 7: its result is
    # theirs. A closed file has moved it to account 12.
    pl_result = g.cr("7") - g.bal("6")
    pre_closing = any(v for a, v in balances.items() if a[:1] in ("6", "7"))
    revenue = g.cr("70")
    ebitda = g.cr("70", "71", "72", "74", "75") - g.bal("60", "61", "62", "63", "64", "65")
    ebit = ebitda - g.bal("681") + g.cr("781")
    net_income = pl_result if pre_closing else g.cr("12")
    # Balance sheet. Third-party and bank accounts sit on the side their balance says
    # (a supplier paid in advance is an asset, an overdrawn bank account a debt); 39, 49
    # and 59 are provisions that reduce the asset they cover.
    fixed_assets = g.bal("2")
    inventory = g.bal("3")
    receivables = g.debit_side("41") + g.bal("491")
    other_receivables = g.debit_side(*_THIRD_PARTIES, exclude=("41",)) + g.bal(
        "49", exclude=("491",)
    )
    cash = g.bal("50", "52", "53", "54", "58", "59") + g.debit_side(*_BANKS, exclude=_OVERDRAFT)
    overdraft = g.cr(*_OVERDRAFT) + g.credit_side(*_BANKS, exclude=_OVERDRAFT)
    current_assets = inventory + receivables + other_receivables + cash
    current_liabilities = g.credit_side(*_THIRD_PARTIES) + overdraft
    financial_debt = g.cr("16", "17") + overdraft
    total_liabilities = g.cr("15", "16", "17", "18") + current_liabilities
    equity = g.cr("10", "11", "12", "13", "14") + pl_result
    return FinancialStatement(
        fiscal_year=closing_date.year,
        closing_date=closing_date,
        revenue=revenue,
        ebitda=ebitda,
        ebit=ebit,
        net_income=net_income,
        total_assets=fixed_assets + current_assets,
        current_assets=current_assets,
        current_liabilities=current_liabilities,
        total_liabilities=total_liabilities,
        equity=equity,
        retained_earnings=g.cr("106") + g.cr("11"),
        cash=cash,
        financial_debt=financial_debt,
        inventory=inventory,
        receivables=receivables,
    )


def statement_of_books(books: FecBooks) -> FinancialStatement:
    """The financial statement of one parsed FEC file."""
    return statement_of(books.balances, books.closing_date)


def read_fec(text: str | bytes, name: str | None = None) -> FecBooks:
    """One FEC file parsed, its closing date from its name when the name follows the standard."""
    return parse_fec(text, closing_date=closing_date_of(name))


def statements_of_files(files: Iterable[tuple[str, str]]) -> tuple[FinancialStatement, ...]:
    """Statements of (name, text) FEC files, newest first, one per closing date."""
    by_closing: dict[date, FinancialStatement] = {}
    for name, text in files:
        try:
            books = read_fec(text, name)
        except FecError as error:
            raise SourceFormatError(f"fec {name[:60]}: {error}"[:160]) from error
        statement = statement_of_books(books)
        # Files come newest upload first: an older copy of the same year does not win.
        by_closing.setdefault(statement.closing_date, statement)
    return tuple(sorted(by_closing.values(), key=lambda s: s.closing_date, reverse=True))


def parse_raw(raw: Mapping[str, Any], as_of: date) -> AccountingData:
    """The normalized accounting data of an accounting raw record (see docs/PROVIDERS.md)."""
    record = validate_wire(_Raw, raw, "fec")
    if not record.fec:
        raise SourceFormatError("fec: no file")
    statements = statements_of_files((f.name, f.text) for f in record.fec)
    origin = "upload" if any(f.origin == "upload" for f in record.fec) else "provider"
    return AccountingData(as_of=as_of, statements=statements[:MAX_YEARS], origin=origin)


async def fetch_accounting(client: httpx.AsyncClient, siren: str) -> dict[str, Any]:
    """The accounting raw record: the provider's newest FEC files for siren, fetched together."""
    index = validate_wire(
        _Index,
        await get_json(client, f"companies/{siren}/fec", what="fec index"),
        "fec index",
    )
    if not index.files:
        raise SourceFormatError("fec index: no file")
    wanted = index.files[:MAX_YEARS]
    texts = await asyncio.gather(*(get_text(client, f.href, what="fec") for f in wanted))
    return {
        "fec": [
            {"name": f.name, "origin": "provider", "text": text}
            for f, text in zip(wanted, texts, strict=True)
        ]
    }
