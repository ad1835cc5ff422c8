"""FEC (Fichier des Écritures Comptables) reader: the French legal export of a company's books.

The format is fixed by article A47 A-1 of the Livre des procédures fiscales: one line per
accounting line, a header line naming the columns, tab or ``|`` separated, dates
``AAAAMMJJ``, amounts with a decimal comma. Real exporters differ in encoding (UTF-8 or
Latin-1, with or without BOM), line endings, zero-padding of amounts and accounts, the
optional currency columns and the extra columns of some tax regimes (DateRglt, ModeRglt,
NatOp, IdClient; or Montant and Sens instead of Debit and Credit). This module accepts all
of them and refuses, naming the line and column, what would make the figures wrong: a
missing column, an unreadable date or amount, an unbalanced entry.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

_ZERO = Decimal(0)
# The 16 columns every FEC carries, in the standard's order (the two currency columns,
# Montantdevise and Idevise, are optional: some regimes and exporters leave them out).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "JournalCode",
    "JournalLib",
    "EcritureNum",
    "EcritureDate",
    "CompteNum",
    "CompteLib",
    "CompAuxNum",
    "CompAuxLib",
    "PieceRef",
    "PieceDate",
    "EcritureLib",
    "Debit",
    "Credit",
    "EcritureLet",
    "DateLet",
    "ValidDate",
)
# Cash-basis regimes (BNC, BA) may write one signed amount: Montant with Sens D/C or +1/-1.
_AMOUNT_COLUMNS = ("Debit", "Credit")
_SIGNED_COLUMNS = ("Montant", "Sens")
MAX_LINES = 2_000_000
_FILE_NAME = re.compile(r"(?P<siren>\d{9})FEC(?P<closing>\d{8})", re.IGNORECASE)
_ACCOUNT = re.compile(r"[0-9][0-9A-Za-z]*")


class FecError(ValueError):
    """The file breaks the FEC standard; ``line`` (1-based) and ``column`` say where."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        where = []
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.line = line
        self.column = column
        self.message = message


@dataclass(frozen=True, slots=True)
class FecBooks:
    """The balances of one FEC file (one fiscal year), by general account number."""

    balances: dict[str, Decimal]  # canonical account (see canonical_account) -> debit - credit
    first_date: date
    last_date: date
    closing_date: date
    entries: int
    lines: int
    total_debit: Decimal
    total_credit: Decimal
    opening_lines: int  # lines of the AN (à nouveaux) journal

    @property
    def balanced(self) -> bool:
        """True when the file's debits equal its credits."""
        return self.total_debit == self.total_credit


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Latin-1 maps every byte: the historical exports of French accounting software.
        return raw.decode("latin-1")


def _canonical(name: str) -> str:
    return name.strip().strip('"').lower()


_CANONICAL_NAMES = {
    _canonical(n): n for n in (*REQUIRED_COLUMNS, "Montantdevise", "Idevise", *_SIGNED_COLUMNS)
}


def canonical_account(account: str) -> str:
    """One spelling per account whatever the padding: 401, 401000 and 40100000 are one."""
    # Trailing zeros carry no meaning in the PCG (4010 is 401's first sub-account, written
    # as 401 padded), so they are dropped and the number padded back to 8 characters.
    return account.rstrip("0").ljust(8, "0")


def parse_amount(text: str, *, line: int, column: str) -> Decimal:
    """A FEC amount: decimal comma or point, optional sign, zero padding, spaces."""
    cleaned = text.strip().replace(" ", "").replace("\u00a0", "")
    if not cleaned:
        return _ZERO
    if "," in cleaned and "." in cleaned:
        # Both marks: the last one is the decimal separator, the other groups thousands.
        thousands = "." if cleaned.rfind(",") > cleaned.rfind(".") else ","
        cleaned = cleaned.replace(thousands, "").replace(",", ".")
    elif "," in cleaned:
        cleaned = cleaned.replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise FecError("not a decimal amount", line=line, column=column) from None
    if not value.is_finite():
        raise FecError("not a decimal amount", line=line, column=column)
    return value


def parse_date(text: str, *, line: int, column: str) -> date:
    """A FEC date: AAAAMMJJ (the standard), also AAAA-MM-JJ as some exporters write."""
    cleaned = text.strip()
    try:
        if len(cleaned) == 8 and cleaned.isdigit():
            return date(int(cleaned[:4]), int(cleaned[4:6]), int(cleaned[6:]))
        if len(cleaned) == 10 and cleaned[4] == "-" and cleaned[7] == "-":
            return date.fromisoformat(cleaned)
    except ValueError:
        pass
    raise FecError("not a date AAAAMMJJ", line=line, column=column)


def closing_date_of(file_name: str | None) -> date | None:
    """The closing date in a file name ``{SIREN}FEC{AAAAMMJJ}.txt``, if it has one."""
    if not file_name:
        return None
    found = _FILE_NAME.search(file_name)
    if found is None:
        return None
    try:
        return parse_date(found.group("closing"), line=0, column="file name")
    except FecError:
        return None


def parse_fec(raw: bytes | str, *, closing_date: date | None = None) -> FecBooks:
    """The account balances of a FEC file, validated; FecError names the line and column."""
    text = _decode(raw) if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
    rows = text.splitlines()
    while rows and not rows[-1].strip():
        rows.pop()
    if not rows or not rows[0].strip():
        raise FecError("empty file: no header line", line=1)
    if len(rows) > MAX_LINES:
        raise FecError(f"more than {MAX_LINES} lines", line=MAX_LINES + 1)
    header = rows[0]
    separator = "\t" if "\t" in header else "|" if "|" in header else None
    if separator is None:
        raise FecError("header is neither tab nor '|' separated", line=1)
    names = [_CANONICAL_NAMES.get(_canonical(n), n.strip()) for n in header.split(separator)]
    index = {name: i for i, name in enumerate(names)}
    signed = all(c in index for c in _SIGNED_COLUMNS) and not all(
        c in index for c in _AMOUNT_COLUMNS
    )
    required = [c for c in REQUIRED_COLUMNS if not (signed and c in _AMOUNT_COLUMNS)]
    if signed:
        required.extend(_SIGNED_COLUMNS)
    for column in required:
        if column not in index:
            raise FecError("missing column", line=1, column=column)
    width = len(names)
    col_journal, col_num = index["JournalCode"], index["EcritureNum"]
    col_date, col_account = index["EcritureDate"], index["CompteNum"]
    col_label = index.get("EcritureLib")

    balances: dict[str, Decimal] = defaultdict(lambda: _ZERO)
    entry_sums: dict[tuple[str, str], list[Decimal]] = {}
    entry_first_line: dict[tuple[str, str], int] = {}
    total_debit = total_credit = _ZERO
    first: date | None = None
    last: date | None = None
    lines = opening = 0
    for number, row in enumerate(rows[1:], start=2):
        if not row.strip():
            continue
        cells = row.split(separator)
        if len(cells) > width and col_label is not None:
            # Exporters leave the separator inside EcritureLib, the free-text label; the
            # columns around it are fixed, so the extra cells belong to it.
            extra = len(cells) - width
            label = separator.join(cells[col_label : col_label + extra + 1])
            cells = [*cells[:col_label], label, *cells[col_label + extra + 1 :]]
        if len(cells) != width:
            raise FecError(f"{len(cells)} columns, the header has {width}", line=number)
        journal = cells[col_journal].strip()
        if not journal:
            raise FecError("empty", line=number, column="JournalCode")
        entry_number = cells[col_num].strip()
        if not entry_number:
            raise FecError("empty", line=number, column="EcritureNum")
        when = parse_date(cells[col_date], line=number, column="EcritureDate")
        account = cells[col_account].strip()
        if not _ACCOUNT.fullmatch(account) or not account.isascii():
            raise FecError("not a chart-of-accounts number", line=number, column="CompteNum")
        if signed:
            amount = parse_amount(cells[index["Montant"]], line=number, column="Montant")
            sense = cells[index["Sens"]].strip().upper()
            if sense in ("D", "+1", "1"):
                debit, credit = amount, _ZERO
            elif sense in ("C", "-1"):
                debit, credit = _ZERO, amount
            else:
                raise FecError("not D, C, +1 or -1", line=number, column="Sens")
        else:
            debit = parse_amount(cells[index["Debit"]], line=number, column="Debit")
            credit = parse_amount(cells[index["Credit"]], line=number, column="Credit")
        key = (journal, entry_number)
        sums = entry_sums.get(key)
        if sums is None:
            entry_sums[key] = [debit, credit]
            entry_first_line[key] = number
        else:
            sums[0] += debit
            sums[1] += credit
        balances[canonical_account(account)] += debit - credit
        total_debit += debit
        total_credit += credit
        first = when if first is None or when < first else first
        last = when if last is None or when > last else last
        lines += 1
        if journal.upper() in ("AN", "RAN"):
            opening += 1
    if first is None or last is None:
        raise FecError("no accounting line after the header", line=2)
    for key, (debit, credit) in entry_sums.items():
        if debit != credit:
            raise FecError(
                f"entry {key[0]} {key[1]} is unbalanced: debit {debit} != credit {credit}",
                line=entry_first_line[key],
                column="Debit",
            )
    if total_debit != total_credit:  # pragma: no cover - balanced entries sum to a balanced file
        raise FecError(f"file unbalanced: debit {total_debit} != credit {total_credit}")
    return FecBooks(
        balances=dict(balances),
        first_date=first,
        last_date=last,
        closing_date=closing_date or last,
        entries=len(entry_sums),
        lines=lines,
        total_debit=total_debit,
        total_credit=total_credit,
        opening_lines=opening,
    )
