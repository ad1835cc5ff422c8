"""The synthetic world: determinism, consistent books and flows, a sane true PD, scenarios."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from stdnum import iban as std_iban
from stdnum.fr import siren as std_siren

from b2bscore.sandbox.wire import PAGE_SIZE, render_company
from b2bscore.training import world
from b2bscore.training.world import SCENARIOS, company, default_label, sample_sirens, true_pd

AS_OF = date(2025, 6, 15)


def _fec_lines(text: str) -> list[dict[str, str]]:
    """Account, debit and credit of each line of a FEC text, read independently of the adapter."""
    header, *rows = text.splitlines()
    sep = "\t" if "\t" in header else "|"
    names = header.split(sep)
    out = []
    for row in rows:
        cells = dict(zip(names, row.split(sep), strict=True))
        out.append(
            {
                "account": cells["CompteNum"],
                "debit": cells["Debit"].strip().replace(",", "."),
                "credit": cells["Credit"].strip().replace(",", "."),
            }
        )
    return out


def _pcg(lines: list[dict[str, Any]]) -> dict[str, Decimal]:
    """The PCG mapping of docs/PROVIDERS.md, written independently of the adapter."""

    def bal(prefix: str) -> Decimal:
        return sum(
            (
                Decimal(ln["debit"]) - Decimal(ln["credit"])
                for ln in lines
                if ln["account"].startswith(prefix)
            ),
            Decimal(0),
        )

    def cr(prefix: str) -> Decimal:
        return -bal(prefix)

    ebitda = (
        cr("70")
        + cr("71")
        + cr("72")
        + cr("74")
        + cr("75")
        - sum((bal(p) for p in ("60", "61", "62", "63", "64", "65")), Decimal(0))
    )
    net_income = cr("7") - bal("6")
    cash = bal("51") - bal("519") + bal("53")
    receivables, inventory = bal("41"), bal("3")
    current_assets = inventory + receivables + cash
    fixed = sum((bal(p) for p in ("20", "21", "22", "23", "26", "27")), Decimal(0)) - (
        cr("28") + cr("29")
    )
    current_liabilities = cr("40") + cr("42") + cr("43") + cr("44") + cr("519")
    return {
        "revenue": cr("70"),
        "ebitda": ebitda,
        "ebit": ebitda - bal("681") + cr("781"),
        "net_income": net_income,
        "cash": cash,
        "receivables": receivables,
        "inventory": inventory,
        "current_assets": current_assets,
        "fixed_assets": fixed,
        "total_assets": fixed + current_assets,
        "current_liabilities": current_liabilities,
        "financial_debt": cr("16") + cr("519"),
        "total_liabilities": cr("15") + cr("16") + current_liabilities,
        "retained_earnings": cr("106") + cr("11"),
        "equity": cr("10") + cr("11") + cr("13") + cr("14") + net_income,
    }


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    n1 = int(label.sum())
    n0 = len(label) - n1
    return float((ranks[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.fixture(scope="module")
def sirens() -> list[str]:
    return sample_sirens(300, seed=11)


def test_same_siren_same_company_and_payloads() -> None:
    siren = sample_sirens(1, seed=3)[0]
    first = company(siren)
    payload = json.dumps(render_company(first, AS_OF), sort_keys=True)
    company.cache_clear()
    second = company(siren)
    assert second is not first
    assert second == first
    assert json.dumps(render_company(second, AS_OF), sort_keys=True) == payload
    assert default_label(siren, 5) == default_label(siren, 5)
    assert true_pd(siren) == first.true_pd


def test_sample_sirens_valid_distinct_deterministic() -> None:
    got = sample_sirens(2000, seed=42)
    assert got == sample_sirens(2000, seed=42)
    assert got != sample_sirens(2000, seed=43)
    assert len(set(got)) == 2000
    assert all(std_siren.is_valid(s) and len(s) == 9 for s in got)
    assert not set(got) & set(SCENARIOS.values())


def test_invalid_siren_is_refused() -> None:
    with pytest.raises(ValueError, match="SIREN"):
        company("123456789")


def test_fec_books_balanced_and_aggregates_recovered(sirens: list[str]) -> None:
    checked = 0
    for siren in sirens[:150]:
        c = company(siren)
        books = render_company(c, AS_OF)["accounting"]
        if books is None:
            assert not c.statements
            continue
        files = books["fec"]
        closings = [f["name"][12:20] for f in files]
        assert closings == sorted(closings, reverse=True)
        for fy, st in zip(files, c.statements, strict=True):
            assert fy["name"] == f"{siren}FEC{closings[files.index(fy)]}.txt"
            lines = _fec_lines(fy["text"])
            assert all(
                ln["debit"].count(".") == 1 and len(ln["debit"].split(".")[1]) == 2 for ln in lines
            )
            assert not any(ln["account"].startswith("12") for ln in lines)
            debit = sum(Decimal(ln["debit"]) for ln in lines)
            credit = sum(Decimal(ln["credit"]) for ln in lines)
            assert debit == credit
            agg = _pcg(lines)
            for name, value in agg.items():
                assert value == getattr(st, name), (siren, name)
            assert agg["equity"] == agg["total_assets"] - agg["total_liabilities"]
            checked += 1
    assert checked > 100


def test_bank_accounts_and_transactions(sirens: list[str]) -> None:
    signs = set()
    for siren in sirens[:60]:
        c = company(siren)
        assert 1 <= len(c.accounts) <= 3
        ob = render_company(c, AS_OF)["open_banking"]
        for acc in c.accounts:
            assert std_iban.is_valid(acc.iban)
            assert acc.iban.startswith("FR76")
            assert len(acc.iban) == 27
            days = [t.days_ago for t in acc.transactions]
            assert days == sorted(days)
            assert max(days, default=0) < world.HISTORY_DAYS
            if ob is None:
                continue
            pages = ob["transactions"][acc.resource_id]
            flat = [t for p in pages for t in p["transactions"]]
            assert len(flat) == len(acc.transactions)
            assert all(len(p["transactions"]) <= PAGE_SIZE for p in pages)
            assert "next" not in pages[-1]["_links"]
            assert len({t["entryReference"] for t in flat}) == len(flat)
            for t, raw in zip(acc.transactions, flat, strict=True):
                amount = Decimal(raw["transactionAmount"]["amount"])
                signed = abs(amount) if raw["creditDebitIndicator"] == "CRDT" else -abs(amount)
                assert signed == t.amount
                if raw["creditDebitIndicator"] == "DBIT":
                    signs.add(amount < 0)
    assert signs == {True, False}, "banks differ in how they sign debits"


def test_true_pd_distribution_and_oracle_auc() -> None:
    pds = np.array([true_pd(s) for s in sample_sirens(2000, seed=1)])
    assert 0.02 < pds.mean() < 0.08
    sample = sample_sirens(20_000, seed=2)
    score = np.array([true_pd(s) for s in sample])
    label = np.array([default_label(s, 9) for s in sample])
    assert 0.02 < label.mean() < 0.08
    assert 0.8 < _auc(score, label) < 0.92


def test_scenarios() -> None:
    assert all(std_siren.is_valid(s) for s in SCENARIOS.values())
    healthy = company(SCENARIOS["healthy"])
    assert healthy.true_pd < 0.01
    assert healthy.age_days > 20 * 365

    startup = company(SCENARIOS["thin_file_startup"])
    raw = render_company(startup, AS_OF)
    assert raw["accounting"] is None
    assert startup.legal_form == "5720"
    assert startup.age_days <= 100
    assert len(startup.accounts) == 1
    assert max(t.days_ago for t in startup.accounts[0].transactions) < 21

    strapped = company(SCENARIOS["cash_strapped"])
    assert 0.12 < strapped.true_pd < 0.3
    eod = strapped.accounts[0].end_of_day_balances_cents()
    assert sum(b < 0 for b in eod) > len(eod) // 2
    remits = [t.remittance for t in strapped.accounts[0].transactions]
    assert sum("REJET" in r for r in remits) >= 4

    collective = company(SCENARIOS["collective_proceedings"])
    bodacc = render_company(collective, AS_OF)["registry"]["bodacc"]
    coll = [r for r in bodacc["results"] if r["familleavis"] == "collective"]
    assert len(coll) == 1
    jugement = json.loads(coll[0]["jugement"])
    assert "redressement judiciaire" in jugement["nature"]
    assert date.fromisoformat(jugement["date"]) == date(2025, 5, 6)  # 40 days before AS_OF

    closed = company(SCENARIOS["closed_company"])
    sirene = render_company(closed, AS_OF)["registry"]["sirene"]["uniteLegale"]
    current = sirene["periodesUniteLegale"][0]
    assert current["dateFin"] is None
    assert current["etatAdministratifUniteLegale"] == "C"

    assert render_company(company(SCENARIOS["no_bank_consent"]), AS_OF)["open_banking"] is None
    for name in (
        "bank_timeout",
        "registry_error",
        "accounting_malformed",
        "bank_truncated",
        "no_bank_consent",
    ):
        c = company(SCENARIOS[name])
        assert c.fault == name
        assert c.true_pd < 0.05
        assert c.active
        assert c.proceedings is None
    assert company(SCENARIOS["healthy"]).fault is None


def test_render_is_relative_to_as_of() -> None:
    siren = sample_sirens(1, seed=5)[0]
    a = render_company(company(siren), date(2025, 6, 15))
    b = render_company(company(siren), date(2025, 6, 16))
    created_a = a["registry"]["sirene"]["uniteLegale"]["dateCreationUniteLegale"]
    created_b = b["registry"]["sirene"]["uniteLegale"]["dateCreationUniteLegale"]
    assert (date.fromisoformat(created_b) - date.fromisoformat(created_a)).days == 1
