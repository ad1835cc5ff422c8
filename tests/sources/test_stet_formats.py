"""Open banking as banks write it: real STET 1.4 and 1.6 payloads, both sandbox dialects,
and properties of the parser on arbitrary JSON."""

from __future__ import annotations

import contextlib
import json
import math
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2bscore.features.bank import NAMES, bank_features
from b2bscore.kit.settings import get_settings
from b2bscore.sandbox import stet, wire
from b2bscore.sources import open_banking
from b2bscore.sources.errors import SourceError, SourceFormatError
from b2bscore.sources.stet_http import loads_exact
from b2bscore.sources.tokens import Tokenizer
from b2bscore.training.world import SCENARIOS, company, sample_sirens

FIXTURES = Path(__file__).parent / "fixtures" / "open_banking"
# The shared captures beside the repository (../shared), where the checkout has them.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "providers" / "open_banking"
TOKENIZER = Tokenizer(b"k" * 32)
AS_OF = date(2026, 1, 31)
REJECTED = NAMES.index("bank_rejected_debits_90d")


def _fixture(name: str) -> Any:
    # The shared copy when this machine has it (it is the reference), else ours.
    shared = SHARED / name
    return json.loads((shared if shared.exists() else FIXTURES / name).read_text("utf-8"))


def _document(**parts: Any) -> bytes:
    return json.dumps(parts).encode()


# --- real payloads ------------------------------------------------------------------------


class TestRealPayloads:
    def test_stet14_spec_example_obp(self) -> None:
        doc = _document(
            accounts=_fixture("stet14_accounts_obp.json"),
            balances={"Alias1": _fixture("stet14_balances_obp.json")},
            transactions={"Alias1": [_fixture("stet14_transactions_obp.json")]},
        )
        record = open_banking.parse_document(doc)
        assert record["dropped"] == 0
        assert record["balance"] == "123.45"
        [account] = record["accounts"]
        assert account["currency"] == "EUR"  # on the account, not in accountId
        assert account["iban_token"] is None  # no accountId at all
        assert account["account_token"] == Tokenizer.from_settings(get_settings()).token("Alias1")
        [tx] = record["transactions"]
        assert tx["amount"] == "12.25"
        assert tx["booking_date"] == "2018-02-12"
        assert tx["status"] == "BOOK"
        assert tx["remittance"] == "SEPA CREDIT TRANSFER from PSD2Company"
        assert orjson.loads(orjson.dumps(record)) == record  # JSON-ready

    def test_stet163_bank_lydia(self) -> None:
        doc = _document(
            accounts=_fixture("lydia_stet163_accounts.json"),
            transactions={"35553": [_fixture("lydia_stet163_transactions.json")]},
        )
        # The published numbers stay numbers in the document, as the bank sends them.
        assert b"22054.54" in doc
        assert b'"amount": -1' in doc
        record = open_banking.parse_document(doc)
        assert record["dropped"] == 0
        assert record["balance"] == "22054.54"  # embedded XPCD, no /balances
        [tx] = record["transactions"]
        assert (tx["amount"], tx["booking_date"]) == ("-1", "2024-02-29")
        assert tx["remittance"] == "Instant transfer"
        assert tx["rejected_debit"] is False  # PMNT/RCDT/OTHR: a credit transfer

    def test_stet16_document_from_the_documented_facts(self) -> None:
        """Embedded balances, signed numbers, date-times, remittance object, OTHR, codes."""
        text = b"""{
          "accounts": {"accounts": [{
            "resourceId": "acc-16",
            "accountId": {"other": {"identification": "0001234", "schemeName": "BBAN"}},
            "currency": "EUR",
            "cashAccountType": "CACC",
            "balances": [
              {"balanceType": "XPCD", "balanceAmount": {"amount": 990.00, "currency": "EUR"}},
              {"balanceType": "CLBD", "balanceAmount": {"amount": 1000.10, "currency": "EUR"}}
            ]
          }]},
          "balances": {},
          "transactions": {"acc-16": [{"transactions": [
            {"transactionAmount": {"amount": -0.1, "currency": "EUR"},
             "creditDebitIndicator": "DBIT", "status": "BOOK",
             "bookingDate": "2026-01-30T23:30:00+01:00",
             "remittanceInformation": {"unstructured": ["PRLV SEPA EDF"], "structured": []},
             "bankTransactionCode": {"domain": "PMNT", "family": "RDDT", "subFamily": "ESDD"}},
            {"transactionAmount": {"amount": 0.2, "currency": "EUR"},
             "creditDebitIndicator": "DBIT", "status": "BOOK",
             "bookingDate": "2026-01-29T08:00:00Z", "valueDate": "2026-01-29"},
            {"transactionAmount": {"amount": 0.30, "currency": "EUR"},
             "creditDebitIndicator": "CRDT", "status": "BOOK",
             "bookingDate": "2026-01-30T10:00:00+01:00",
             "remittanceInformation": {"unstructured": ["RETOUR OPERATION 1234"]},
             "bankTransactionCode": {"domain": "PMNT", "family": "RDDT", "subFamily": "UPDD"}},
            {"transactionAmount": {"amount": "5.00", "currency": "EUR"},
             "creditDebitIndicator": "CRDT", "status": "OTHR",
             "remittanceInformation": ["INFORMATION"]},
            {"transactionAmount": {"amount": 7, "currency": "EUR"},
             "creditDebitIndicator": "CRDT", "status": "PDNG",
             "valueDate": "2026-02-02T00:00:00+01:00"},
            {"transactionAmount": {"amount": 12.5, "currency": "EUR"}, "status": "BOOK",
             "bookingDate": "2026-01-28"}
          ]}]}
        }"""
        record = open_banking.parse_document(text)
        assert record["dropped"] == 1  # the entry without creditDebitIndicator
        assert record["balance"] == "1000.10"  # CLBD, digits as the bank wrote them
        amounts = [Decimal(t["amount"]) for t in record["transactions"]]
        assert amounts == [Decimal("-0.1"), Decimal("-0.2"), Decimal("0.30"), 5, 7]
        assert sum(amounts[:3]) == 0  # exact: no binary float on the way
        assert [t["status"] for t in record["transactions"]] == [
            "BOOK", "BOOK", "BOOK", "OTHR", "PDNG",
        ]  # fmt: skip
        assert [t["booking_date"] for t in record["transactions"]][:3] == [
            "2026-01-30",  # the bank's own day, not UTC's
            "2026-01-29",
            "2026-01-30",
        ]
        assert record["transactions"][4]["booking_date"] == "2026-02-02"
        assert [t["rejected_debit"] for t in record["transactions"]] == [
            False, False, True, False, False,
        ]  # fmt: skip

        data = open_banking.parse_raw(loads_exact(text), TOKENIZER, AS_OF)
        # The code alone (no REJET / IMPAYE in the label) counts as a rejected debit.
        assert bank_features(data)[REJECTED] == 1.0

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"not json", "document: invalid json"),
            (b"[1, 2]", "document: not a json object"),
            (b"{}", "accounts"),
            (b'{"accounts": {"accounts": "x"}}', "accounts"),
            (b'{"accounts": {"accounts": [{"resourceId": "a"}]}}', "transactions"),
            (
                b'{"accounts": {"accounts": [{"resourceId": "a"}]}, "transactions": {"a": [{}]}}',
                "transactions page 1",
            ),
            (
                b'{"accounts": {"accounts": []}, "transactions": {}, "balances": [1]}',
                "balances",
            ),
        ],
    )
    def test_unusable_documents_name_the_field(self, raw: bytes, reason: str) -> None:
        with pytest.raises(SourceFormatError, match=reason):
            open_banking.parse_document(raw)


# --- the sandbox's two dialects -----------------------------------------------------------


def _stet16_record(siren: str, as_of: date) -> dict[str, Any]:
    c = company(siren)
    return {
        "accounts": stet.render_accounts16(c, as_of),
        "balances": {},
        "transactions": {
            a.resource_id: stet.render_transaction_pages16(a, as_of) for a in c.accounts
        },
    }


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


class TestDialects:
    def test_both_dialects_occur(self) -> None:
        dialects = {stet.dialect_of(s) for s in sample_sirens(40, seed=5)}
        assert dialects == {"stet14", "stet16"}
        assert stet.dialect_of(SCENARIOS["bank_timeout"]) != stet.dialect_of(
            SCENARIOS["bank_truncated"]
        )

    def test_same_company_same_bank_data_and_features_in_either_dialect(self) -> None:
        sirens = [*sample_sirens(30, seed=5), *SCENARIOS.values()]
        compared = 0
        for siren in sirens:
            c = company(siren)
            if not c.bank_consent:
                continue
            as_of = AS_OF
            old = open_banking.parse_raw(wire.render_open_banking(c, as_of) or {}, TOKENIZER, as_of)
            raw16 = _stet16_record(siren, as_of)
            new = open_banking.parse_raw(raw16, TOKENIZER, as_of)
            # Over the wire the numbers are JSON text read back exactly.
            wired = open_banking.parse_raw(loads_exact(stet.dumps(raw16)), TOKENIZER, as_of)
            assert old == new == wired, siren
            assert new.dropped == 0
            assert _same(bank_features(old), bank_features(new)), siren
            compared += 1
        assert compared > 20

    def test_stet16_rendering_has_the_documented_shape(self) -> None:
        siren = SCENARIOS["healthy"]
        raw = _stet16_record(siren, AS_OF)
        account = raw["accounts"]["accounts"][0]
        assert "balances" in account
        assert account["currency"] == "EUR"
        assert "currency" not in account["accountId"]
        tx = raw["transactions"][account["resourceId"]][0]["transactions"][0]
        assert isinstance(tx["transactionAmount"]["amount"], Decimal)
        assert "T" in tx["bookingDate"]
        assert set(tx["remittanceInformation"]) == {"unstructured", "structured"}
        text = stet.dumps(raw)
        assert b'"amount":"' not in text  # amounts are JSON numbers


# --- properties: arbitrary JSON never escapes as anything but a source error ---------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.text(max_size=12)
    | st.sampled_from(["BOOK", "PDNG", "OTHR", "CRDT", "DBIT", "2026-01-30", "12.00", "-1"])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = [
    "resourceId", "accounts", "balances", "transactions", "transactionAmount", "amount",
    "creditDebitIndicator", "status", "bookingDate", "valueDate", "remittanceInformation",
    "bankTransactionCode", "balanceAmount", "balanceType", "accountId", "currency", "_links",
]  # fmt: skip
_stet_like = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)
    ),
    max_leaves=30,
)
_valid_tx = st.fixed_dictionaries(
    {
        "transactionAmount": st.fixed_dictionaries(
            {"amount": st.sampled_from(["1.00", "-2.5", 3, Decimal("4.25")])}
        ),
        "creditDebitIndicator": st.sampled_from(["CRDT", "DBIT"]),
        "status": st.sampled_from(["BOOK", "PDNG", "OTHR"]),
        "bookingDate": st.sampled_from(["2026-01-30", "2026-01-30T10:00:00+01:00"]),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), _stet_like, max_size=4))
def test_parse_raw_on_arbitrary_json_raises_only_source_errors(raw: dict[str, Any]) -> None:
    with contextlib.suppress(SourceError):
        open_banking.parse_raw(raw, TOKENIZER, AS_OF)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(_valid_tx | _json, max_size=8), balances=st.lists(_json, max_size=3))
def test_well_formed_envelopes_never_fail_and_count_what_they_drop(
    entries: list[Any], balances: list[Any]
) -> None:
    raw = {
        "accounts": {"accounts": [{"resourceId": "a", "balances": balances}, "junk"]},
        "transactions": {"a": [{"transactions": entries}]},
    }
    data = open_banking.parse_raw(raw, TOKENIZER, AS_OF)
    kept = len(data.accounts[0].transactions)
    # Every entry is kept or counted (the junk account too); bad balances count as well.
    assert len(entries) + 1 <= kept + data.dropped <= len(entries) + 1 + len(balances)
    assert kept >= sum(1 for e in entries if _is_valid(e))


def _is_valid(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and set(entry) == {"transactionAmount", "creditDebitIndicator", "status", "bookingDate"}
        and isinstance(entry["transactionAmount"], dict)
        and set(entry["transactionAmount"]) == {"amount"}
        and entry["transactionAmount"]["amount"] in ("1.00", "-2.5", 3, Decimal("4.25"))
        and entry["creditDebitIndicator"] in ("CRDT", "DBIT")
        and entry["status"] in ("BOOK", "PDNG", "OTHR")
        and entry["bookingDate"] in ("2026-01-30", "2026-01-30T10:00:00+01:00")
    )


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=200) | _json.map(lambda v: json.dumps(v, default=str).encode()))
def test_parse_document_on_arbitrary_bytes(raw: bytes) -> None:
    try:
        record = open_banking.parse_document(raw)
    except SourceFormatError as error:
        reason = error.reason
        assert reason.split(":")[0] in ("document", "accounts", "balances", "transactions")
        return
    assert set(record) >= {"accounts", "transactions", "dropped", "balance"}
