"""Accounting adapter: PCG trial balances mapped to financial statement aggregates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, field_validator

from b2bscore.sources.clients import get_json
from b2bscore.sources.errors import DecimalStr, SourceFormatError, validate_wire
from b2bscore.sources.types import AccountingData, FinancialStatement

# Rounding in exported books is tolerated up to this much; beyond it the export is broken.
BALANCE_TOLERANCE = Decimal("1.00")
_ZERO = Decimal(0)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Line(_Wire):
    account: str
    debit: DecimalStr
    credit: DecimalStr

    @field_validator("account")
    @classmethod
    def _pcg_account(cls, value: str) -> str:
        if not value.isdigit() or not value.isascii():
            raise ValueError("PCG account numbers are digits")
        return value


class _FiscalYear(_Wire):
    fiscal_year: int
    closing_date: date
    lines: list[_Line]


class _TrialBalances(_Wire):
    currency: str
    fiscal_years: list[_FiscalYear]


class _Ledger:
    """Balances by account prefix of one trial balance."""

    __slots__ = ("_lines",)

    def __init__(self, lines: Sequence[_Line]) -> None:
        self._lines = [(line.account, line.debit - line.credit) for line in lines]

    def bal(self, *prefixes: str) -> Decimal:
        """Sum of (debit - credit) over accounts starting with any of prefixes."""
        return sum(
            (amount for account, amount in self._lines if account.startswith(prefixes)), _ZERO
        )

    def cr(self, *prefixes: str) -> Decimal:
        """Sum of (credit - debit) over accounts starting with any of prefixes."""
        return -self.bal(*prefixes)


def _statement(year: _FiscalYear) -> FinancialStatement:
    debits = sum((line.debit for line in year.lines), _ZERO)
    credits = sum((line.credit for line in year.lines), _ZERO)
    if abs(debits - credits) > BALANCE_TOLERANCE:
        raise SourceFormatError("unbalanced")
    g = _Ledger(year.lines)
    # The mapping table of docs/PROVIDERS.md, line for line.
    revenue = g.cr("70")
    ebitda = g.cr("70", "71", "72", "74", "75") - g.bal("60", "61", "62", "63", "64", "65")
    ebit = ebitda - g.bal("681") + g.cr("781")
    net_income = g.cr("7") - g.bal("6")
    cash = g.bal("51") - g.bal("519") + g.bal("53")
    receivables = g.bal("41")
    inventory = g.bal("3")
    current_assets = inventory + receivables + cash
    fixed_assets = g.bal("20", "21", "22", "23", "26", "27") - g.cr("28", "29")
    current_liabilities = g.cr("40", "42", "43", "44", "519")
    financial_debt = g.cr("16") + g.cr("519")
    return FinancialStatement(
        fiscal_year=year.fiscal_year,
        closing_date=year.closing_date,
        revenue=revenue,
        ebitda=ebitda,
        ebit=ebit,
        net_income=net_income,
        total_assets=fixed_assets + current_assets,
        current_assets=current_assets,
        current_liabilities=current_liabilities,
        total_liabilities=g.cr("15") + g.cr("16") + current_liabilities,
        equity=g.cr("10", "11", "13", "14") + net_income,
        retained_earnings=g.cr("106") + g.cr("11"),
        cash=cash,
        financial_debt=financial_debt,
        inventory=inventory,
        receivables=receivables,
    )


def parse_raw(raw: Mapping[str, Any], as_of: date) -> AccountingData:
    """The normalized accounting data of an accounting raw record (see docs/PROVIDERS.md)."""
    books = validate_wire(_TrialBalances, raw.get("trial_balances"), "trial_balances")
    if books.currency != "EUR":
        raise SourceFormatError("trial_balances: currency is not EUR")
    statements = sorted(
        (_statement(year) for year in books.fiscal_years),
        key=lambda s: s.closing_date,
        reverse=True,
    )
    return AccountingData(as_of=as_of, statements=tuple(statements))


async def fetch_accounting(client: httpx.AsyncClient, siren: str) -> dict[str, Any]:
    """The accounting raw record: every trial balance the provider holds for siren."""
    body = await get_json(client, f"companies/{siren}/trial-balances", what="trial_balances")
    return {"trial_balances": body}
