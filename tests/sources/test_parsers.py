"""Pure parsers on hand-written payloads: signs, pagination, BODACC, PCG mapping, strictness."""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import pytest

from b2bscore.features.registry import NAMES, registry_features
from b2bscore.sources import accounting, bodacc, open_banking, registry
from b2bscore.sources.errors import SourceFormatError
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import Announcement, RegistryData
from tests.sources import payloads

AS_OF = date(2026, 1, 31)
TOKENIZER = Tokenizer(b"k" * 32)


# --- tokens ----------------------------------------------------------------------------


def test_tokens_are_keyed_stable_and_short() -> None:
    a = Tokenizer(b"a" * 32)
    assert a.token("acc-1") == a.token("acc-1")
    assert a.token("acc-1") != Tokenizer(b"b" * 32).token("acc-1")
    assert a.token("acc-1").startswith("tok_")
    assert len(a.token("acc-1")) == len("tok_") + 24
    # The same IBAN printed with or without spaces is one account.
    assert a.iban_token("FR76 3000 6000 0112") == a.iban_token("fr7630006000 0112")
    assert "FR76" not in repr(a)
    assert "aaaa" not in repr(a)


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Tokenizer(b"short")


# --- open banking ----------------------------------------------------------------------


def test_bank_signs_come_from_the_indicator() -> None:
    data = open_banking.parse_raw(payloads.bank_raw(), TOKENIZER, AS_OF)
    main = data.accounts[0]
    assert [t.amount for t in main.transactions] == [
        Decimal("-12.00"),  # DBIT written negative
        Decimal("-12.00"),  # DBIT written positive
        Decimal("5.00"),  # CRDT written negative
        Decimal("7.25"),
    ]
    assert [t.status for t in main.transactions] == ["BOOK", "BOOK", "BOOK", "PDNG"]
    assert main.transactions[0].remittance == "PRLV SEPA EDF"
    assert main.transactions[0].booking_date == date(2026, 1, 30)


def test_bank_pages_concatenate_in_order_and_balances_prefer_clbd() -> None:
    data = open_banking.parse_raw(payloads.bank_raw(), TOKENIZER, AS_OF)
    assert data.as_of == AS_OF
    main, other = data.accounts
    assert len(main.transactions) == 4  # 2 pages of 2
    assert main.balance == Decimal("1500.50")  # CLBD although listed after XPCD
    assert other.balance == Decimal("-20.00")  # no CLBD: XPCD
    assert other.transactions == ()
    assert main.currency == "EUR"
    assert main.cash_account_type == "CACC"


def test_bank_identifiers_are_tokenized() -> None:
    data = open_banking.parse_raw(payloads.bank_raw(), TOKENIZER, AS_OF)
    main, other = data.accounts
    assert main.account_token == TOKENIZER.token("acc-1")
    assert main.iban_token == TOKENIZER.iban_token(payloads.IBAN_MAIN)
    assert other.iban_token is None
    text = repr(data)
    assert "acc-1" not in text
    assert "FR76" not in text
    assert "3000 6000" not in text


def test_bank_without_any_balance_type_used() -> None:
    raw = payloads.bank_raw()
    raw["balances"]["acc-2"] = payloads.balances(VALU="3.00")
    assert open_banking.parse_raw(raw, TOKENIZER, AS_OF).accounts[1].balance is None


def test_pending_without_date_takes_as_of_booked_without_date_fails() -> None:
    raw = payloads.bank_raw()
    pending = raw["transactions"]["acc-1"][1]["transactions"][1]
    del pending["bookingDate"], pending["valueDate"]
    parsed = open_banking.parse_raw(raw, TOKENIZER, AS_OF)
    assert parsed.accounts[0].transactions[3].booking_date == AS_OF
    booked = raw["transactions"]["acc-1"][0]["transactions"][0]
    del booked["bookingDate"], booked["valueDate"]
    with pytest.raises(SourceFormatError, match="bookingDate"):
        open_banking.parse_raw(raw, TOKENIZER, AS_OF)


def _break(raw: dict[str, Any], path: list[Any], value: object) -> dict[str, Any]:
    broken = copy.deepcopy(raw)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return broken


_DELETE = object()
_TX = ["transactions", "acc-1", 0, "transactions", 0]


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["accounts"], _DELETE, "accounts"),
        (["accounts", "accounts", 0, "resourceId"], _DELETE, "resourceId"),
        ([*_TX, "transactionAmount", "amount"], 12.0, "amount"),  # a JSON number
        ([*_TX, "transactionAmount", "amount"], "12,00", "amount"),
        ([*_TX, "transactionAmount", "amount"], "NaN", "amount"),
        ([*_TX, "transactionAmount", "amount"], "1E+2", "amount"),
        ([*_TX, "transactionAmount", "amount"], "+12.00", "amount"),
        (["balances", "acc-1", "balances", 0, "balanceAmount", "amount"], 3.0, "amount"),
        (["balances", "acc-1", "balances", 0, "balanceAmount", "amount"], "3,00", "amount"),
        ([*_TX, "creditDebitIndicator"], "CREDIT", "creditDebitIndicator"),
        ([*_TX, "status"], "DONE", "status"),
        ([*_TX, "bookingDate"], "30/01/2026", "bookingDate"),
        (["balances", "acc-1", "balances", 0, "balanceAmount"], _DELETE, "balanceAmount"),
        (["balances", "acc-2"], _DELETE, "account without balances"),
        (["transactions", "acc-2"], "page", "account without|not a list"),
        (["transactions"], _DELETE, "missing"),
    ],
)
def test_bank_shape_errors(path: list[Any], value: object, reason: str) -> None:
    with pytest.raises(SourceFormatError, match=reason) as caught:
        open_banking.parse_raw(_break(payloads.bank_raw(), path, value), TOKENIZER, AS_OF)
    # Reasons end up in logs and API answers: never an identifier or an input value.
    assert "acc-1" not in caught.value.reason
    assert "FR76" not in caught.value.reason


# --- registry ---------------------------------------------------------------------------


def test_registry_current_period_and_announcements() -> None:
    data = registry.parse_raw({"sirene": payloads.sirene(), "bodacc": payloads.bodacc()}, AS_OF)
    assert data.siren == "111111118"
    assert data.as_of == AS_OF
    assert data.created_on == date(2015, 3, 2)
    assert (data.legal_form, data.naf) == ("5710", "62.01Z")  # current period, not the old one
    assert (data.headcount_band, data.category, data.active) == ("11", "PME", True)
    assert data.announcements == (
        Announcement(
            "collective", payloads.REDRESSEMENT, date(2025, 6, 10), "opening", date(2025, 6, 1)
        ),
        Announcement("vente", None, date(2024, 2, 10)),
    )
    assert (data.proceedings_opened_on, data.ongoing_proceeding) == (date(2025, 6, 10), True)
    assert (data.dropped, data.note) == (0, None)


def test_registry_closed_company() -> None:
    data = registry.parse_raw({"sirene": payloads.sirene(state="C"), "bodacc": None}, AS_OF)
    assert data.active is False
    assert data.announcements == ()
    assert registry.bodacc_missing({"sirene": {}, "bodacc": None})


def test_malformed_jugement_keeps_the_announcement() -> None:
    raw = {"sirene": payloads.sirene(), "bodacc": payloads.bodacc(malformed_jugement=True)}
    data = registry.parse_raw(raw, AS_OF)
    assert data.announcements[0] == Announcement("collective", None, date(2025, 6, 10), "opening")
    assert len(data.announcements) == 2
    assert data.ongoing_proceeding is True


def test_jugement_without_nature_or_not_an_object() -> None:
    bodacc = payloads.bodacc()
    bodacc["results"][1]["jugement"] = '["a list"]'
    bodacc["results"][0]["jugement"] = '{"type": "initial"}'
    data = registry.parse_raw({"sirene": payloads.sirene(), "bodacc": bodacc}, AS_OF)
    assert [a.nature for a in data.announcements] == [None, None]


def _notice(
    day: str, nature: str | None, family: str = "collective", **extra: Any
) -> dict[str, Any]:
    jugement = None if nature is None else orjson.dumps({"nature": nature, "date": day}).decode()
    return {"familleavis": family, "dateparution": day, "jugement": jugement, **extra}


def _registry(*records: object) -> RegistryData:
    bodacc = {"total_count": len(records), "results": list(records)}
    return registry.parse_raw({"sirene": payloads.sirene(), "bodacc": bodacc}, AS_OF)


def test_a_malformed_record_is_dropped_and_counted_never_fatal() -> None:
    data = _registry(
        _notice("2025-01-10", None, family="vente"),
        {"familleavis": "collective", "jugement": None},  # no dateparution
        {"dateparution": "2024-01-01"},  # no family
        "not an object",
        _notice("2025-02-01", "Jugement d'ouverture de liquidation judiciaire"),
    )
    assert [a.family for a in data.announcements] == ["collective", "vente"]
    assert data.dropped == 3
    assert data.note is not None
    assert "3 malformed record(s) dropped" in data.note
    assert data.note.endswith("(dateparution: missing or not a date)")
    assert (data.siren, data.naf) == ("111111118", "62.01Z")  # Sirene data survives


def test_a_bad_bodacc_envelope_leaves_sirene_usable() -> None:
    answers: tuple[object, ...] = ({"results": "x"}, [], "garbage", {"total_count": 3})
    for answer in answers:
        data = registry.parse_raw({"sirene": payloads.sirene(), "bodacc": answer}, AS_OF)
        assert data.announcements == ()
        assert data.note == "bodacc: results missing: no announcements"
        assert data.siren == "111111118"


def test_jugement_as_an_object_and_the_dpc_family() -> None:
    record = _notice("2025-03-01", None)
    record["jugement"] = {"famille": "Jugement d'ouverture", "nature": payloads.REDRESSEMENT}
    data = _registry(record, _notice("2024-06-01", None, family="depot"))
    assert data.announcements[0].nature == payloads.REDRESSEMENT
    assert data.announcements[0].kind == "opening"
    assert data.announcements[1].family == "dpc"


def test_a_closed_procedure_is_not_ongoing_and_later_notices_do_not_reset_it() -> None:
    opening = _notice(
        "2023-01-10", "Jugement d'ouverture d'une procédure de redressement judiciaire"
    )
    plan = _notice("2023-09-01", "Jugement arrêtant le plan de redressement")
    creditors = _notice("2024-02-01", "Avis de dépôt de l'état des créances")
    data = _registry(creditors, plan, opening)
    assert (data.proceedings_opened_on, data.ongoing_proceeding) == (date(2023, 1, 10), True)
    closure = _notice("2025-05-01", "Jugement de clôture pour extinction du passif")
    data = _registry(creditors, closure, plan, opening)
    assert (data.proceedings_opened_on, data.ongoing_proceeding) == (date(2023, 1, 10), False)
    vector = registry_features(data)
    assert vector[NAMES.index("collective_proceedings")] == 0.0
    assert vector[NAMES.index("days_since_collective")] == (AS_OF - date(2023, 1, 10)).days
    # A new procedure after the closed one starts afresh.
    conversion = _notice(
        "2025-09-01", "Jugement prononçant la conversion en liquidation judiciaire"
    )
    reopened = _notice("2025-07-01", "Jugement d'ouverture d'une procédure de sauvegarde")
    data = _registry(creditors, closure, plan, opening, conversion, reopened)
    assert (data.proceedings_opened_on, data.ongoing_proceeding) == (date(2025, 7, 1), True)
    vector = registry_features(data)
    assert vector[NAMES.index("collective_proceedings")] == 1.0
    assert vector[NAMES.index("days_since_collective")] == (AS_OF - date(2025, 7, 1)).days


def test_lifecycle_steps() -> None:
    assert (
        bodacc.classify("collective", "Jugement de clôture pour insuffisance d'actif") == "closure"
    )
    assert bodacc.classify("collective", "Jugement de conversion en liquidation judiciaire") == (
        "conversion"
    )
    assert bodacc.classify("collective", "Jugement modifiant le plan de sauvegarde") == "plan"
    assert bodacc.classify("collective", None) == "opening"
    assert bodacc.classify("collective", "Autre jugement") == "other"
    assert bodacc.classify("vente", "Jugement d'ouverture") is None
    assert bodacc.classify("conciliation", None) == "opening"


def test_sirene_hidden_fields_and_dated_answers() -> None:
    body = payloads.sirene()
    unit = body["uniteLegale"]
    unit["statutDiffusionUniteLegale"] = "P"
    unit["dateCreationUniteLegale"] = "[ND]"
    unit["trancheEffectifsUniteLegale"] = "[ND]"
    unit["periodesUniteLegale"][0]["categorieJuridiqueUniteLegale"] = "[ND]"
    data = registry.parse_raw({"sirene": body, "bodacc": None}, AS_OF)
    assert (data.created_on, data.headcount_band, data.legal_form) == (None, None, None)
    assert data.naf == "62.01Z"
    unit["dateCreationUniteLegale"] = "2015-13-45"  # garbled: unknown, not fatal
    assert registry.parse_raw({"sirene": body, "bodacc": None}, AS_OF).created_on is None
    # ?date=2018-01-01 answers only the period valid then, closed since.
    dated = payloads.sirene()
    dated["uniteLegale"]["periodesUniteLegale"] = dated["uniteLegale"]["periodesUniteLegale"][1:]
    data = registry.parse_raw({"sirene": dated, "bodacc": None}, AS_OF)
    assert (data.legal_form, data.naf, data.active) == ("5499", "47.11A", True)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["sirene"], None, "sirene"),
        (["sirene", "uniteLegale"], _DELETE, "uniteLegale"),
        (["sirene", "uniteLegale", "periodesUniteLegale"], [], "no period"),
        (
            ["sirene", "uniteLegale", "periodesUniteLegale", 0, "etatAdministratifUniteLegale"],
            "X",
            "etatAdministratif",
        ),
    ],
)
def test_registry_shape_errors(path: list[Any], value: object, reason: str) -> None:
    raw = {"sirene": payloads.sirene(), "bodacc": payloads.bodacc()}
    with pytest.raises(SourceFormatError, match=reason):
        registry.parse_raw(_break(raw, path, value), AS_OF)


# --- accounting ---------------------------------------------------------------------------


def test_pcg_mapping_on_a_small_balanced_trial_balance() -> None:
    data = accounting.parse_raw(payloads.fec_raw(), AS_OF)
    (s,) = data.statements
    d = Decimal
    assert (s.fiscal_year, s.closing_date) == (2025, date(2025, 12, 31))
    assert s.revenue == d("60000.00")
    assert s.ebitda == d("5000.00")  # 60,000 - (30,000 + 5,000 + 20,000)
    assert s.ebit == d("3500.00")  # - 2,000 depreciation + 500 reversal
    assert s.net_income == d("3500.00")  # 60,500 - 57,000
    assert s.cash == d("8000.00")  # 512 + 530, the 519 overdraft is a debt
    assert (s.receivables, s.inventory) == (d("6000.00"), d("1000.00"))
    assert s.current_assets == d("15000.00")
    assert s.total_assets == d("25000.00")  # fixed 12,000 - 2,000 + current
    assert s.current_liabilities == d("4500.00")  # 401 + 421 + 519
    assert s.financial_debt == d("6000.00")  # 164 + 519
    assert s.total_liabilities == d("9500.00")
    assert s.retained_earnings == d("2000.00")
    assert s.equity == d("15500.00")
    assert s.equity == s.total_assets - s.total_liabilities
    assert all(isinstance(v, Decimal) for v in (s.revenue, s.cash, s.equity))


def test_statements_newest_first() -> None:
    older = [dict(line) for line in payloads.SMALL_TRIAL_BALANCE]
    raw = payloads.fec_raw(years=[older, payloads.SMALL_TRIAL_BALANCE])
    raw["fec"].reverse()  # provider sent oldest first
    data = accounting.parse_raw(raw, AS_OF)
    assert [s.fiscal_year for s in data.statements] == [2025, 2024]


def test_an_unbalanced_entry_is_refused_even_by_a_cent() -> None:
    lines = [*payloads.SMALL_TRIAL_BALANCE, payloads.line("471000", debit="0.01")]
    with pytest.raises(SourceFormatError, match=r"line 2, column Debit: entry OD OD2025-1"):
        accounting.parse_raw(payloads.fec_raw(years=[lines]), AS_OF)


def test_no_file_is_a_format_error() -> None:
    with pytest.raises(SourceFormatError, match="no file"):
        accounting.parse_raw(payloads.fec_raw(years=[]), AS_OF)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["fec"], _DELETE, "fec"),
        (["fec", 0, "text"], _DELETE, "text"),
        (["fec", 0, "text"], "", "line 1: empty file"),
        (["fec", 0, "text"], "JournalCode;JournalLib\n", "line 1: header"),
        (["fec", 0, "text"], payloads.FEC_HEADER.replace("|Debit", ""), "column Debit: missing"),
        (
            ["fec", 0, "text"],
            payloads.FEC_HEADER + "\nOD|x",
            "line 2: 2 columns, the header has 18",
        ),
    ],
)
def test_accounting_shape_errors(path: list[Any], value: object, reason: str) -> None:
    raw = payloads.fec_raw()
    with pytest.raises(SourceFormatError, match=reason):
        accounting.parse_raw(_break(raw, path, value), AS_OF)
