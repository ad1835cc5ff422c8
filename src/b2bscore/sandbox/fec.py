"""A world company's books rendered as FEC files, in the dialects real exporters write.

One file per fiscal year, named ``{SIREN}FEC{AAAAMMJJ}.txt`` after its closing date. The
pre-closing trial balance of the world is written as a handful of balanced entries, one per
journal (AN opening, purchases, sales, bank, miscellaneous), each balanced through the
internal-transfer account 580000, whose lines cancel out over the year. The dialect (separator,
encoding, BOM, line ending, account padding, columns, amount padding) is chosen per company,
so that training and tests read the variety real files have through the one FEC reader.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from b2bscore.sources.fec import REQUIRED_COLUMNS
from b2bscore.training.world import Company, Statement, TrialLine

_ZERO = Decimal(0)
# The parser's own list: the sandbox writes exactly the columns the standard names.
BASE_COLUMNS = REQUIRED_COLUMNS
CURRENCY_COLUMNS = ("Montantdevise", "Idevise")
REGIME_COLUMNS = ("DateRglt", "ModeRglt", "NatOp", "IdClient")
_TRANSFER = ("580000", "Virements internes")

# (journal code, label, account prefixes it carries), in writing order; AN first.
_JOURNALS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("AN", "A nouveaux", ("1", "2", "3")),
    ("HA", "Achats", ("6", "401")),
    ("VT", "Ventes", ("7", "411")),
    ("BQ", "Banque", ("5",)),
    ("OD", "Opérations diverses", ("4",)),
)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one exporter writes its FEC files."""

    separator: str  # "\t" or "|"
    encoding: str  # "utf-8" or "latin-1"
    bom: bool
    newline: str
    account_width: int  # accounts right-padded with zeros to this width (6 or 8)
    columns: tuple[str, ...]
    padded_amounts: bool  # Odoo style: " 000000000001437,12"


def dialect_of(siren: str) -> Dialect:
    """The FEC dialect of a company's accounting software (deterministic per SIREN)."""
    h = hashlib.blake2b(f"fec-dialect:{siren}".encode(), digest_size=8).digest()
    columns: tuple[str, ...] = BASE_COLUMNS + CURRENCY_COLUMNS
    if h[4] % 4 == 1:
        columns = BASE_COLUMNS
    elif h[4] % 4 == 2:
        columns = BASE_COLUMNS + CURRENCY_COLUMNS + REGIME_COLUMNS
    return Dialect(
        separator="|" if h[0] % 2 else "\t",
        encoding="latin-1" if h[1] % 3 == 0 else "utf-8",
        bom=h[2] % 4 == 0,
        newline="\r\n" if h[3] % 2 else "\n",
        account_width=8 if h[5] % 3 == 0 else 6,
        columns=columns,
        padded_amounts=h[6] % 4 == 0,
    )


def file_name(siren: str, closing: date) -> str:
    """The standard's file name: {SIREN}FEC{AAAAMMJJ}.txt."""
    return f"{siren}FEC{closing:%Y%m%d}.txt"


def _amount(value: Decimal, padded: bool) -> str:
    text = f"{value.quantize(Decimal('0.01')):f}".replace(".", ",")
    if padded:
        sign = "-" if value < 0 else " "
        return sign + text.lstrip("-").rjust(18, "0")
    return text


def _journal_of(account: str) -> int:
    for i, (_, _, prefixes) in enumerate(_JOURNALS):
        if account.startswith(prefixes):
            return i
    return len(_JOURNALS) - 1


def render_fec(company: Company, statement: Statement, fiscal_year: int) -> str:
    """One fiscal year's FEC text (before encoding), in the company's dialect."""
    d = dialect_of(company.siren)
    opening, closing = date(fiscal_year, 1, 1), date(fiscal_year, 12, 31)
    by_journal: list[list[TrialLine]] = [[] for _ in _JOURNALS]
    for line in statement.lines:
        by_journal[_journal_of(line.account)].append(line)
    rows = [d.separator.join(d.columns)]
    for j, ((code, label, _), lines) in enumerate(zip(_JOURNALS, by_journal, strict=True)):
        if not lines:
            continue
        day = opening if code == "AN" else closing
        number = f"{code}{fiscal_year}-{j + 1:04d}"
        net = sum((ln.debit - ln.credit for ln in lines), _ZERO)
        written: list[tuple[str, str, Decimal, Decimal]] = []
        for ln in lines:
            # A trial-balance line with both turnovers becomes two accounting lines.
            if ln.debit:
                written.append((ln.account, ln.label, ln.debit, _ZERO))
            if ln.credit:
                written.append((ln.account, ln.label, _ZERO, ln.credit))
            if not ln.debit and not ln.credit:
                written.append((ln.account, ln.label, _ZERO, _ZERO))
        if net:
            written.append((*_TRANSFER, max(-net, _ZERO), max(net, _ZERO)))
        for account, account_label, debit, credit in written:
            values = {
                "JournalCode": code,
                "JournalLib": label,
                "EcritureNum": number,
                "EcritureDate": f"{day:%Y%m%d}",
                "CompteNum": account.ljust(d.account_width, "0"),
                "CompteLib": account_label,
                "CompAuxNum": "",
                "CompAuxLib": "",
                "PieceRef": number,
                "PieceDate": f"{day:%Y%m%d}",
                "EcritureLib": f"{label} {fiscal_year}",
                "Debit": _amount(debit, d.padded_amounts),
                "Credit": _amount(credit, d.padded_amounts),
                "EcritureLet": "",
                "DateLet": "",
                "ValidDate": f"{closing:%Y%m%d}",
                "Montantdevise": "",
                "Idevise": "",
                "DateRglt": "",
                "ModeRglt": "",
                "NatOp": "",
                "IdClient": "",
            }
            rows.append(d.separator.join(values[c] for c in d.columns))
    return d.newline.join(rows) + d.newline


def encode_fec(company: Company, text: str) -> bytes:
    """The FEC text as the company's software writes it to disk (encoding and BOM)."""
    d = dialect_of(company.siren)
    body = text.encode(d.encoding, errors="replace")
    return (b"\xef\xbb\xbf" + body) if d.bom and d.encoding == "utf-8" else body
