"""Pure renderers from a world company to the provider wire formats of docs/PROVIDERS.md.

Training calls render_company in-process and feeds the result to the adapters' parse_raw,
so these functions are the single definition of what the sandbox and training both see.
Faults are not applied here: the sandbox app decides those per request.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from b2bscore.sandbox import fec
from b2bscore.training.world import BankAccount, Company, Txn

# Banks page transactions by 50 to 500; 200 keeps a busy SME account to a few round trips,
# which is what makes a live 90-day pull fit a 500 ms budget.
PAGE_SIZE = 200
STET_PREFIX = "/stet/v1"

_FAMILY_LABELS = {
    "collective": "Procédures collectives",
    "immatriculation": "Immatriculations",
    "modification": "Modifications diverses",
    "vente": "Ventes et cessions",
    "radiation": "Radiations",
    "dpc": "Dépôts des comptes",
}


def _money(cents: int) -> str:
    return str(Decimal(cents).scaleb(-2))


def last_closed_fiscal_year(as_of: date) -> int:
    """The newest fiscal year (calendar, closing 31 December) whose books are available."""
    # Books of year Y are typically closed and exported by the end of April of Y+1.
    return as_of.year - 1 if as_of >= date(as_of.year, 5, 1) else as_of.year - 2


def find_account(company: Company, resource_id: str) -> BankAccount | None:
    """The company's account with this resourceId, if any."""
    for acc in company.accounts:
        if acc.resource_id == resource_id:
            return acc
    return None


# --- STET ----------------------------------------------------------------------------


def render_accounts(company: Company, as_of: date) -> dict[str, Any]:
    """GET /accounts."""
    return {
        "accounts": [
            {
                "resourceId": acc.resource_id,
                "bicFi": None,
                "accountId": {"iban": acc.iban, "currency": "EUR"},
                "name": f"{acc.name} {company.name}",
                "details": acc.bank_name,
                "cashAccountType": "CACC",
                "usage": "ORGA",
                "psuStatus": "Account Holder",
                "_links": {
                    "balances": {"href": f"{STET_PREFIX}/accounts/{acc.resource_id}/balances"},
                    "transactions": {
                        "href": f"{STET_PREFIX}/accounts/{acc.resource_id}/transactions"
                    },
                },
            }
            for acc in company.accounts
        ],
        "_links": {"self": {"href": f"{STET_PREFIX}/accounts"}},
    }


def render_balances(account: BankAccount, as_of: date) -> dict[str, Any]:
    """GET /accounts/{resourceId}/balances; banks differ in which types they list."""
    ref = as_of.isoformat()

    def bal(name: str, kind: str, cents: int) -> dict[str, Any]:
        return {
            "name": name,
            "balanceType": kind,
            "balanceAmount": {"amount": _money(cents), "currency": "EUR"},
            "referenceDate": ref,
        }

    clbd = bal("Solde comptable", "CLBD", account.balance_cents)
    xpcd = bal("Solde prévisionnel", "XPCD", account.balance_cents + account.pending_cents)
    style = account.balance_style
    if style == 0:
        balances = [clbd, xpcd]
    elif style == 1:
        balances = [
            bal("Solde en valeur", "VALU", account.balance_cents),
            bal("Solde autre", "OTHR", account.balance_cents + account.pending_cents),
            clbd,
        ]
    elif style == 2:
        balances = [xpcd, clbd]
    else:  # this bank only publishes the expected balance
        balances = [xpcd]
    rid = account.resource_id
    return {
        "balances": balances,
        "_links": {
            "self": {"href": f"{STET_PREFIX}/accounts/{rid}/balances"},
            "transactions": {"href": f"{STET_PREFIX}/accounts/{rid}/transactions"},
        },
    }


def _txn(account: BankAccount, t: Txn, seq: int, as_of: date) -> dict[str, Any]:
    day = (as_of - timedelta(days=t.days_ago)).isoformat()
    credit = t.amount_cents > 0
    cents = abs(t.amount_cents)
    if not credit and account.negative_debits:
        cents = -cents
    return {
        "resourceId": f"{account.resource_id[:12]}-{seq:05d}",
        "entryReference": f"{account.resource_id[12:].upper()}{seq:06d}",
        "transactionAmount": {"amount": _money(cents), "currency": "EUR"},
        "creditDebitIndicator": "CRDT" if credit else "DBIT",
        "status": t.status,
        "bookingDate": day,
        "valueDate": day,
        "remittanceInformation": [t.remittance],
    }


def transactions_href(resource_id: str, page: int, date_from: date | None = None) -> str:
    """Relative link to one page of an account's transactions."""
    query = f"dateFrom={date_from.isoformat()}&" if date_from else ""
    return f"{STET_PREFIX}/accounts/{resource_id}/transactions?{query}page={page}"


def render_transaction_pages(
    account: BankAccount, as_of: date, date_from: date | None = None
) -> list[dict[str, Any]]:
    """Every page of GET /accounts/{resourceId}/transactions, newest first, PAGE_SIZE per page."""
    n = len(account.transactions)
    # Sequence numbers count from the oldest transaction so that ids never move
    # when newer transactions arrive or when dateFrom cuts the history.
    items = [
        _txn(account, t, n - i, as_of)
        for i, t in enumerate(account.transactions)
        if date_from is None or t.days_ago <= (as_of - date_from).days
    ]
    chunks = [items[i : i + PAGE_SIZE] for i in range(0, len(items), PAGE_SIZE)] or [[]]
    pages = []
    rid = account.resource_id
    for p, chunk in enumerate(chunks, start=1):
        links: dict[str, Any] = {"self": {"href": transactions_href(rid, p, date_from)}}
        if p < len(chunks):
            links["next"] = {"href": transactions_href(rid, p + 1, date_from)}
        pages.append({"transactions": chunk, "_links": links})
    return pages


def render_open_banking(company: Company, as_of: date) -> dict[str, Any] | None:
    """The open-banking raw record, or None when the company gave no consent."""
    if not company.bank_consent:
        return None
    return {
        "accounts": render_accounts(company, as_of),
        "balances": {a.resource_id: render_balances(a, as_of) for a in company.accounts},
        "transactions": {
            a.resource_id: render_transaction_pages(a, as_of) for a in company.accounts
        },
    }


# --- registry --------------------------------------------------------------------------


def _spaced(siren: str) -> str:
    return f"{siren[:3]} {siren[3:6]} {siren[6:]}"


def render_sirene(company: Company, as_of: date) -> dict[str, Any]:
    """GET /siren/{siren} (INSEE Sirene 3.11)."""
    created = as_of - timedelta(days=company.age_days)
    period: dict[str, Any] = {
        "dateFin": None,
        "dateDebut": created.isoformat(),
        "etatAdministratifUniteLegale": "A",
        "changementEtatAdministratifUniteLegale": False,
        "denominationUniteLegale": company.name,
        "categorieJuridiqueUniteLegale": company.legal_form,
        "activitePrincipaleUniteLegale": company.naf,
        "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
        "caractereEmployeurUniteLegale": "O" if company.headcount > 0 else "N",
    }
    periods = [period]
    if company.closed_days_ago is not None:
        closed_on = as_of - timedelta(days=company.closed_days_ago)
        periods = [
            {
                **period,
                "dateDebut": closed_on.isoformat(),
                "etatAdministratifUniteLegale": "C",
                "changementEtatAdministratifUniteLegale": True,
            },
            {**period, "dateFin": (closed_on - timedelta(days=1)).isoformat()},
        ]
    band = company.headcount_band
    return {
        "header": {"statut": 200, "message": "OK"},
        "uniteLegale": {
            "siren": company.siren,
            "statutDiffusionUniteLegale": "O",
            "dateCreationUniteLegale": created.isoformat(),
            "trancheEffectifsUniteLegale": band,
            "anneeEffectifsUniteLegale": None if band == "NN" else str(as_of.year - 2),
            "categorieEntreprise": company.category,
            "anneeCategorieEntreprise": None if company.category is None else str(as_of.year - 2),
            "unitePurgeeUniteLegale": None,
            "dateDernierTraitementUniteLegale": f"{as_of.isoformat()}T02:00:00.000",
            "nombrePeriodesUniteLegale": len(periods),
            "periodesUniteLegale": periods,
        },
    }


def render_bodacc(company: Company, as_of: date) -> dict[str, Any]:
    """GET /catalog/datasets/annonces-commerciales/records?refine=registre:{siren}."""
    results = []
    for i, notice in enumerate(company.notices):
        published = as_of - timedelta(days=notice.days_ago)
        jugement = None
        if notice.proceedings is not None:
            judged = as_of - timedelta(days=notice.proceedings.days_ago)
            jugement = json.dumps(
                {
                    "type": "initial",
                    "famille": notice.proceedings.famille,
                    "nature": notice.proceedings.nature,
                    "date": judged.isoformat(),
                    "complementJugement": "Jugement prononçant l'ouverture de la procédure, "
                    "date de cessation des paiements le "
                    f"{(judged - timedelta(days=30)).isoformat()}",
                },
                ensure_ascii=False,
            )
        results.append(
            {
                "id": f"A{published.year}{company.siren}{i:03d}",
                "publicationavis": "A",
                "publicationavis_facette": "Bodacc A",
                "familleavis": notice.family,
                "familleavis_lib": _FAMILY_LABELS[notice.family],
                "dateparution": published.isoformat(),
                "registre": [company.siren, _spaced(company.siren)],
                "commercant": company.name,
                "ville": company.city,
                "tribunal": f"Tribunal de commerce de {company.city.title()}",
                "jugement": jugement,
                "details": notice.detail,
            }
        )
    return {"total_count": len(results), "results": results}


def render_registry(company: Company, as_of: date) -> dict[str, Any]:
    """The registry raw record: Sirene and BODACC."""
    return {"sirene": render_sirene(company, as_of), "bodacc": render_bodacc(company, as_of)}


# --- accounting ------------------------------------------------------------------------


def render_fec_files(company: Company, as_of: date) -> list[dict[str, Any]] | None:
    """The company's FEC files, newest first, as the accounting raw record lists them."""
    if not company.statements:
        return None
    last = last_closed_fiscal_year(as_of)
    files = []
    for st in company.statements:
        year = last - st.years_ago
        files.append(
            {
                "name": fec.file_name(company.siren, date(year, 12, 31)),
                "origin": "provider",
                "text": fec.render_fec(company, st, year),
            }
        )
    return files


def render_company(company: Company, as_of: date) -> dict[str, Any]:
    """The fault-free raw records of all three sources, exactly as the adapters store them."""
    books = render_fec_files(company, as_of)
    return {
        "open_banking": render_open_banking(company, as_of),
        "accounting": None if books is None else {"fec": books},
        "registry": render_registry(company, as_of),
    }
