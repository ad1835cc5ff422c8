"""The FEC reader on the dialects real exporters write, and the PCG mapping on real books."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from b2bscore.sources import accounting
from b2bscore.sources.fec import FecError, closing_date_of, parse_fec

HEADER18 = (
    "JournalCode|JournalLib|EcritureNum|EcritureDate|CompteNum|CompteLib|CompAuxNum|CompAuxLib|"
    "PieceRef|PieceDate|EcritureLib|Debit|Credit|EcritureLet|DateLet|ValidDate|Montantdevise|Idevise"
)


def _row(journal: str, num: str, day: str, account: str, debit: str, credit: str) -> str:
    return f"{journal}|J|{num}|{day}|{account}|Lib é|||P|{day}|x|{debit}|{credit}|||{day}||"


# Opening entries (AN) carry last year's balance sheet, result included in 120; then a
# year of activity, pre-closing (classes 6 and 7 still open).
BOOKS = [
    _row("AN", "1", "20250101", "1013000", "0,00", "10 000,00"),
    _row("AN", "1", "20250101", "120000", "0,00", "2000,00"),
    _row("AN", "1", "20250101", "2183", "8000,00", "0,00"),
    _row("AN", "1", "20250101", "28183", "0,00", "1000,00"),
    _row("AN", "1", "20250101", "512000", "5000,00", "0,00"),
    _row("VT", "2", "20250301", "41100000", "12000,00", "0,00"),
    _row("VT", "2", "20250301", "70600000", "0,00", "10000,00"),
    _row("VT", "2", "20250301", "44571000", "0,00", "2000,00"),
    _row("HA", "3", "20250401", "60700000", "4000,00", "0,00"),
    _row("HA", "3", "20250401", "44566000", "800,00", "0,00"),
    _row("HA", "3", "20250401", "40100000", "0,00", "4800,00"),
    _row("BQ", "4", "20250501", "512000", "0,00", "9000,00"),
    _row("BQ", "4", "20250501", "455000", "0,00", "1000,00"),  # shareholder current account
    _row("BQ", "4", "20250501", "401000", "10000,00", "0,00"),  # supplier paid in advance
    _row("OD", "5", "20251231", "39700000", "0,00", "500,00"),  # stock provision (contra)
    _row("OD", "5", "20251231", "37000000", "1500,00", "0,00"),
    _row("OD", "5", "20251231", "603700", "0,00", "1000,00"),
    _row("OD", "6", "20251231", "491000", "0,00", "200,00"),
    _row("OD", "6", "20251231", "681700", "200,00", "0,00"),
    _row("OD", "7", "20251231", "503000", "300,00", "0,00"),  # marketable securities
    _row("OD", "7", "20251231", "164000", "0,00", "300,00"),
]


def _text(rows: list[str] = BOOKS, header: str = HEADER18, sep: str = "|") -> str:
    return "\r\n".join([header, *rows]).replace("|", sep) + "\r\n"


def test_real_books_balance_assets_against_liabilities_and_equity() -> None:
    books = parse_fec(_text().encode(), closing_date=date(2025, 12, 31))
    assert books.balanced
    assert (books.entries, books.lines, books.opening_lines) == (7, 21, 5)
    s = accounting.statement_of_books(books)
    d = Decimal
    assert s.revenue == d("10000.00")
    # 10,000 - (4,000 purchases - 1,000 stock variation) - 200 provision
    assert s.net_income == d("6800.00")
    assert s.inventory == d("1000.00")  # 1,500 less the 500 provision
    assert s.receivables == d("11800.00")  # 12,000 less the 200 provision
    assert s.cash == d("300.00")  # 503 securities; the bank is overdrawn
    assert s.financial_debt == d("4300.00")  # 164 300 + the overdrawn bank account 4,000
    # Current liabilities: 455 1,000 + 44571 2,000 + overdraft 4,000 (401 is an asset now)
    assert s.current_liabilities == d("7000.00")
    assert s.equity == d("18800.00")  # capital 10,000 + last year's 2,000 in 12 + 6,800
    assert s.total_assets == s.total_liabilities + s.equity
    assert s.total_assets == d("26100.00")


@pytest.mark.parametrize(
    ("encode", "sep"),
    [
        (lambda t: t.encode("utf-8"), "|"),
        (lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"), "\t"),
        (lambda t: t.encode("latin-1"), "\t"),
        (lambda t: t.encode("latin-1"), "|"),
    ],
)
def test_encodings_boms_and_separators(encode: object, sep: str) -> None:
    raw = encode(_text(sep=sep))  # type: ignore[operator]
    assert parse_fec(raw).balances["70600000"] == Decimal("-10000.00")
    assert parse_fec(raw).balances["40100000"] == Decimal("5200.00")  # 401000 and 40100000


def test_without_currency_columns_with_regime_columns_and_montant_sens() -> None:
    short = HEADER18.rsplit("|", 2)[0]
    rows = [r.rsplit("|", 2)[0] for r in BOOKS]
    assert parse_fec(_text(rows, short)).balanced
    wide = HEADER18 + "|DateRglt|ModeRglt|NatOp|IdClient"
    assert parse_fec(_text([r + "||||" for r in BOOKS], wide)).balanced
    signed_header = HEADER18.replace("Debit|Credit", "Montant|Sens")
    signed = []
    for r in BOOKS:
        cells = r.split("|")
        debit, credit = cells[11], cells[12]
        cells[11:13] = [debit, "D"] if debit != "0,00" else [credit, "C"]
        signed.append("|".join(cells))
    books = parse_fec(_text(signed, signed_header))
    assert books.balances["70600000"] == Decimal("-10000.00")


def test_a_separator_inside_the_label_and_thousands_separators() -> None:
    rows = [
        "OD|J|1|20250101|512|Banque|||P|20250101|Virement | loyer | mars|1,437.12|0,00|||"
        "20250101||",
        "OD|J|1|20250101|101|Capital|||P|20250101|x|0,00|1 437,12|||20250101||",
    ]
    books = parse_fec(_text(rows))
    assert books.balances["51200000"] == Decimal("1437.12")
    assert books.balanced


def test_padded_signed_amounts_and_lowercase_headers() -> None:
    rows = [_row("OD", "1", "20250101", "512", " 000000000001437,12", "0,00"),
            _row("OD", "1", "20250101", "101", "0,00", "1.437,12")]  # fmt: skip
    books = parse_fec(_text(rows, HEADER18.lower()))
    assert books.balances == {"51200000": Decimal("1437.12"), "10100000": Decimal("-1437.12")}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: "", "line 1: empty file"),
        (lambda t: t.replace("|", ";"), "line 1: header is neither"),
        (lambda t: t.replace("|CompteNum|", "|Compte|"), "line 1, column CompteNum: missing"),
        (lambda t: t.replace("|20250301|", "|20250231|", 1), "line 7, column EcritureDate"),
        (lambda t: t.replace("|10000,00|", "|10k|", 1), "line 8, column Credit"),
        (lambda t: t.replace("|41100000|", "|4110 0000|", 1), "line 7, column CompteNum"),
        (lambda t: t.replace("|12000,00|", "|12000,01|", 1), "line 7, column Debit: entry VT 2"),
        (lambda t: t.replace("AN|J|1|", "AN|J||", 1), "line 2, column EcritureNum"),
        (lambda t: t + "OD|J|9|20250101\r\n", "line 23: 4 columns, the header has 18"),
        (lambda t: t.split("\r\n")[0], "line 2: no accounting line"),
    ],
)
def test_errors_name_line_and_column(mutate: object, message: str) -> None:
    with pytest.raises(FecError, match=message):
        parse_fec(mutate(_text()))  # type: ignore[operator]


def test_closing_date_from_the_standard_file_name() -> None:
    assert closing_date_of("552100554FEC20251231.txt") == date(2025, 12, 31)
    assert closing_date_of("export.txt") is None
    assert closing_date_of("552100554FEC20251331.txt") is None
    books = accounting.read_fec(_text(), "552100554FEC20250930.txt")
    assert books.closing_date == date(2025, 9, 30)
    assert accounting.read_fec(_text()).closing_date == date(2025, 12, 31)  # last entry


def test_a_closed_file_reads_its_result_from_account_12() -> None:
    rows = [
        _row("OD", "1", "20251231", "512", "5000,00", "0,00"),
        _row("OD", "1", "20251231", "101", "0,00", "3000,00"),
        _row("OD", "1", "20251231", "120", "0,00", "2000,00"),
    ]
    s = accounting.statement_of_books(parse_fec(_text(rows)))
    assert (s.net_income, s.equity, s.total_assets) == (
        Decimal("2000.00"),
        Decimal("5000.00"),
        Decimal("5000.00"),
    )
