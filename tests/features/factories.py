"""Hand-made normalized provider data for feature, model and policy tests."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from b2bscore.features.types import CreditRequest, Product
from b2bscore.sources.types import (
    AccountingData,
    Announcement,
    BankAccount,
    BankData,
    BankTransaction,
    FinancialStatement,
    RegistryData,
)

AS_OF = date(2026, 11, 2)


def tx(
    days_ago: int, amount: str, remittance: str = "VIR", status: str = "BOOK"
) -> BankTransaction:
    """A transaction booked ``days_ago`` days before AS_OF."""
    return BankTransaction(
        booking_date=AS_OF - timedelta(days=days_ago),
        amount=Decimal(amount),
        status=status,
        remittance=remittance,
    )


def account(
    balance: str | None, transactions: list[BankTransaction], currency: str = "EUR"
) -> BankAccount:
    """One account with a closing balance at AS_OF."""
    return BankAccount(
        account_token="acc",
        iban_token=None,
        cash_account_type="CACC",
        balance=None if balance is None else Decimal(balance),
        currency=currency,
        transactions=tuple(transactions),
    )


def bank(*accounts: BankAccount) -> BankData:
    """Bank data as of AS_OF."""
    return BankData(as_of=AS_OF, accounts=tuple(accounts))


def healthy_bank(days: int = 180) -> BankData:
    """Weekly 10k inflows and 8k outflows over ``days`` days, always in credit."""
    txs = []
    for d in range(0, days, 7):
        txs.append(tx(d, "10000.00", "VIR CLIENT"))
        txs.append(tx(d + 1, "-8000.00", "PRLV FOURNISSEUR"))
    return bank(account("50000.00", txs))


def statement(
    year: int = 2025,
    revenue: str = "1000000",
    ebitda: str = "120000",
    financial_debt: str = "200000",
    total_assets: str = "800000",
    total_liabilities: str = "500000",
) -> FinancialStatement:
    """One fiscal year with consistent aggregates."""
    ta = Decimal(total_assets)
    tl = Decimal(total_liabilities)
    return FinancialStatement(
        fiscal_year=year,
        closing_date=date(year, 12, 31),
        revenue=Decimal(revenue),
        ebitda=Decimal(ebitda),
        ebit=Decimal(ebitda) - Decimal("20000"),
        net_income=Decimal("60000"),
        total_assets=ta,
        current_assets=Decimal("400000"),
        current_liabilities=Decimal("250000"),
        total_liabilities=tl,
        equity=ta - tl,
        retained_earnings=Decimal("150000"),
        cash=Decimal("100000"),
        financial_debt=Decimal(financial_debt),
        inventory=Decimal("50000"),
        receivables=Decimal("250000"),
    )


def books(*statements: FinancialStatement) -> AccountingData:
    """Accounting data as of AS_OF (newest first)."""
    return AccountingData(as_of=AS_OF, statements=tuple(statements))


def record(
    created_on: date | None = date(2015, 3, 1),
    active: bool = True,
    announcements: tuple[Announcement, ...] = (),
    naf: str | None = "62.01Z",
    legal_form: str | None = "5710",
    headcount_band: str | None = "11",
) -> RegistryData:
    """A registry record as of AS_OF."""
    return RegistryData(
        as_of=AS_OF,
        siren="552100554",
        created_on=created_on,
        legal_form=legal_form,
        naf=naf,
        headcount_band=headcount_band,
        category="PME",
        active=active,
        announcements=announcements,
    )


def collective(days_ago: int) -> Announcement:
    """A collective-proceedings announcement published ``days_ago`` days before AS_OF."""
    return Announcement(
        family="collective",
        nature="Jugement d'ouverture d'une procédure de redressement judiciaire",
        published_on=AS_OF - timedelta(days=days_ago),
    )


def request(amount: str = "20000", product: Product = Product.CREDIT_LINE) -> CreditRequest:
    """A credit request for the test company."""
    return CreditRequest(siren="552100554", requested_amount=Decimal(amount), product=product)
