"""Normalized provider data: what adapters produce and feature builders consume.

Adapters turn each provider's wire format into these types; nothing downstream ever
sees a wire payload. Money is Decimal, dates are calendar dates (UTC).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np

from b2bscore.kit.packed import unpack_json


class SourceName(enum.StrEnum):
    """The three kinds of provider consulted for every decision."""

    OPEN_BANKING = "open_banking"
    ACCOUNTING = "accounting"
    REGISTRY = "registry"


class SourceStatus(enum.StrEnum):
    """Outcome of one source for one request."""

    OK = "ok"
    CACHED = "cached"
    TIMEOUT = "timeout"
    ERROR = "error"
    UNAVAILABLE = "unavailable"  # no consent, unknown company, or no provider configured


# --- open banking (STET PSD2 AISP) -------------------------------------------------

# Labels of the credit that reverses a rejected direct debit: REJET, IMPAYE, IMPAYÉ.
REJECT_MARKERS = ("REJET", "IMPAY")


class BankTransaction(NamedTuple):
    """One booked or pending transaction; amount is signed (credit > 0, debit < 0)."""

    # A named tuple rather than a frozen dataclass: records hold hundreds of these, and a
    # tuple is built in a third of the time (frozen dataclasses set each field through
    # object.__setattr__).

    booking_date: date
    amount: Decimal
    status: str  # BOOK, PDNG or OTHR
    remittance: str
    # A credit that reverses an unpaid direct debit, as the adapter recognised it from the
    # bank's transaction code (ISO 20022 PMNT/RDDT/UPDD) or from the label (REJECT_MARKERS).
    rejected_debit: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class TransactionColumns:
    """An account's transactions as read-only numpy columns, in ``transactions`` order."""

    booking_ordinal: np.ndarray  # int64, date.toordinal() of booking_date
    amount: np.ndarray  # float64, float() of the signed Decimal amount
    booked: np.ndarray  # bool, status == "BOOK"
    remittances: tuple[str, ...]
    rejected_debit: np.ndarray  # bool, BankTransaction.rejected_debit
    account: np.ndarray | None = None  # intp, index of each row's account (BankData only)
    _marked: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, transactions: tuple[BankTransaction, ...]) -> TransactionColumns:
        """Columns of a tuple of transactions."""
        # List comprehensions into np.array beat np.fromiter over generators here.
        ordinal = np.array([t.booking_date.toordinal() for t in transactions], dtype=np.int64)
        amount = np.array([float(t.amount) for t in transactions], dtype=np.float64)
        booked = np.array([t.status == "BOOK" for t in transactions], dtype=np.bool_)
        rejected = np.array([t.rejected_debit for t in transactions], dtype=np.bool_)
        for column in (ordinal, amount, booked, rejected):
            column.flags.writeable = False  # shared by every request that reuses the record
        return cls(ordinal, amount, booked, tuple([t.remittance for t in transactions]), rejected)

    def marked(self, markers: tuple[str, ...]) -> np.ndarray:
        """True where the remittance, upper-cased, contains any of ``markers`` (memoized)."""
        found = self._marked.get(markers)
        if found is None:
            found = contains_any(self.remittances, markers)
            found.flags.writeable = False
            self._marked[markers] = found
        return found


def contains_any(texts: tuple[str, ...] | list[str], markers: tuple[str, ...]) -> np.ndarray:
    """True where the text, upper-cased, contains any of markers (one pass over all texts)."""
    # One upper() over one joined string: most accounts contain no marker at all.
    blob = "\x00".join(texts).upper()
    if not any(m in blob for m in markers):
        return np.zeros(len(texts), dtype=np.bool_)
    parts = blob.split("\x00")
    if len(parts) != len(texts):  # a NUL inside some text: check one by one
        parts = [t.upper() for t in texts]
    return np.fromiter((any(m in p for m in markers) for p in parts), np.bool_, len(texts))


@dataclass(frozen=True, slots=True)
class BankAccount:
    """One payment account of the company, with its closing booked balance."""

    account_token: str  # keyed hash of the resourceId; never the raw id
    iban_token: str | None
    cash_account_type: str
    balance: Decimal | None
    currency: str
    transactions: tuple[BankTransaction, ...]
    # Parsed records are reused across requests (source cache), so the Decimal -> float
    # conversion is paid once per record, not once per decision. Not part of equality.
    _columns: TransactionColumns | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built with the record (at parse time, in the fan-out) rather than in the
        # decision core: the conversion costs ~0.3 µs per transaction.
        object.__setattr__(self, "_columns", TransactionColumns.of(self.transactions))

    def columns(self) -> TransactionColumns:
        """The transactions as numpy columns, built on first use and then reused."""
        cols = self._columns
        if cols is None:
            cols = TransactionColumns.of(self.transactions)
            object.__setattr__(self, "_columns", cols)
        return cols


@dataclass(frozen=True, slots=True)
class BankData:
    """Every consented account of the company."""

    as_of: date
    accounts: tuple[BankAccount, ...]
    consent_granted_on: date | None = None
    # False under a consent to balances only: no history was read, so every feature made
    # of transactions is missing, never zero.
    transactions_granted: bool = True
    # Entries (transactions, balances, accounts) the adapter dropped as malformed.
    dropped: int = field(default=0, compare=False)
    # The accounts' columns end to end (account order, then transaction order), so that
    # consolidated features cost the same numpy calls for one account or three.
    _columns: TransactionColumns | None = field(default=None, init=False, repr=False, compare=False)
    # Results of pure functions of this record (the bank features), keyed by the function:
    # a parsed record is reused by every decision served from the source cache, so what is
    # derived from it alone is computed once per record. Not part of equality.
    derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = [a.columns() for a in self.accounts]
        account = np.repeat(np.arange(len(parts), dtype=np.intp), [len(p.amount) for p in parts])
        if not parts:
            cols = TransactionColumns.of(())
        elif len(parts) == 1:
            one = parts[0]
            cols = TransactionColumns(
                one.booking_ordinal,
                one.amount,
                one.booked,
                one.remittances,
                one.rejected_debit,
                account=account,
            )
        else:
            cols = TransactionColumns(
                np.concatenate([p.booking_ordinal for p in parts]).astype(np.int64, copy=False),
                np.concatenate([p.amount for p in parts]).astype(np.float64, copy=False),
                np.concatenate([p.booked for p in parts]).astype(np.bool_, copy=False),
                tuple(r for p in parts for r in p.remittances),
                np.concatenate([p.rejected_debit for p in parts]).astype(np.bool_, copy=False),
                account=account,
            )
        if cols.account is None:
            cols = TransactionColumns(
                cols.booking_ordinal,
                cols.amount,
                cols.booked,
                cols.remittances,
                cols.rejected_debit,
                account=account,
            )
        for column in (cols.booking_ordinal, cols.amount, cols.booked, account):
            column.flags.writeable = False
        object.__setattr__(self, "_columns", cols)

    def columns(self) -> TransactionColumns:
        """Every account's transactions as numpy columns, with ``account`` set."""
        cols = self._columns
        if cols is None:  # pragma: no cover - __post_init__ always sets it
            raise RuntimeError("BankData built without its columns")
        return cols


# --- accounting (trial balance on the PCG) ----------------------------------------


@dataclass(frozen=True, slots=True)
class FinancialStatement:
    """Aggregates of one fiscal year's trial balance, mapped from PCG account prefixes."""

    fiscal_year: int
    closing_date: date
    revenue: Decimal
    ebitda: Decimal
    ebit: Decimal
    net_income: Decimal
    total_assets: Decimal
    current_assets: Decimal
    current_liabilities: Decimal
    total_liabilities: Decimal
    equity: Decimal
    retained_earnings: Decimal
    cash: Decimal
    financial_debt: Decimal
    inventory: Decimal
    receivables: Decimal


@dataclass(frozen=True, slots=True)
class AccountingData:
    """Fiscal years available, newest first."""

    as_of: date
    statements: tuple[FinancialStatement, ...]
    origin: str | None = None  # "upload" (the lender's FEC) or "provider"


# --- registry (INSEE Sirene + BODACC) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Announcement:
    """One BODACC legal announcement."""

    family: str  # familleavis: collective, dpc, vente, immatriculation, modification ...
    nature: str | None  # jugement.nature for collective proceedings
    published_on: date
    kind: str | None = None  # proceedings step: opening, plan, conversion, closure, other
    judged_on: date | None = None  # jugement.date


@dataclass(frozen=True, slots=True)
class RegistryData:
    """The company's legal record and announcements."""

    as_of: date
    siren: str
    created_on: date | None
    legal_form: str | None  # categorieJuridiqueUniteLegale, e.g. 5710 (SAS)
    naf: str | None  # activitePrincipaleUniteLegale, e.g. 62.01Z
    headcount_band: str | None  # trancheEffectifsUniteLegale, e.g. 11
    category: str | None  # PME, ETI, GE
    active: bool
    announcements: tuple[Announcement, ...] = ()
    # The latest collective procedure: when its first notice was published, and whether
    # it is still running (no closing judgment yet). None: not worked out (built by hand).
    proceedings_opened_on: date | None = None
    ongoing_proceeding: bool | None = None
    dropped: int = 0  # BODACC records dropped as malformed
    note: str | None = None  # what the registry lacks (BODACC down, records dropped)


# --- fan-out result ----------------------------------------------------------------


@dataclass(slots=True)
class SourceResult:
    """What one source gave for one request: status, timing, data and raw payloads."""

    name: SourceName
    status: SourceStatus
    latency_ms: float
    as_of: date | None = None
    detail: str | None = None
    data: BankData | AccountingData | RegistryData | None = None
    # The raw wire payloads as received, packed once (kit.packed) for the audit record;
    # b"" when the source sent nothing.
    packed_raw: bytes = b""
    # Served under a lender's consent (its snapshot, or its bank asked with its token):
    # the consent id, the data's age and scopes.
    snapshot: Mapping[str, Any] | None = None
    # Data older than its freshness limit, used because nothing fresher came in time.
    stale: bool = False

    @property
    def raw(self) -> dict[str, Any]:
        """The raw wire payloads, unpacked ({} when the source sent nothing)."""
        raw: dict[str, Any] = unpack_json(self.packed_raw) if self.packed_raw else {}
        return raw

    @property
    def usable(self) -> bool:
        """True when the source delivered data the features can use."""
        return self.status in (SourceStatus.OK, SourceStatus.CACHED) and self.data is not None


@dataclass(slots=True)
class SourceBundle:
    """All three sources of one request."""

    open_banking: SourceResult
    accounting: SourceResult
    registry: SourceResult

    def all(self) -> tuple[SourceResult, SourceResult, SourceResult]:
        """The three results in a stable order."""
        return (self.open_banking, self.accounting, self.registry)

    @property
    def bank(self) -> BankData | None:
        """Bank data when the source is usable."""
        d = self.open_banking.data
        return d if self.open_banking.usable and isinstance(d, BankData) else None

    @property
    def books(self) -> AccountingData | None:
        """Accounting data when the source is usable."""
        d = self.accounting.data
        return d if self.accounting.usable and isinstance(d, AccountingData) else None

    @property
    def record(self) -> RegistryData | None:
        """Registry data when the source is usable."""
        d = self.registry.data
        return d if self.registry.usable and isinstance(d, RegistryData) else None

    @property
    def degraded(self) -> bool:
        """True when any source is missing or stale."""
        return not all(r.usable and not r.stale for r in self.all())
