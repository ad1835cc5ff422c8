"""Hand-written provider payloads in the documented wire formats (docs/PROVIDERS.md)."""

from __future__ import annotations

from typing import Any

import orjson

IBAN_MAIN = "FR76 3000 6000 0112 3456 7890 189"
IBAN_SAVINGS = "FR7630004000031234567890143"


def account(resource_id: str, iban: str | None, base: str = "/stet/v1") -> dict[str, Any]:
    """One STET account with HAL links."""
    acc: dict[str, Any] = {
        "resourceId": resource_id,
        "accountId": {"currency": "EUR"},
        "name": f"Compte {resource_id}",
        "cashAccountType": "CACC",
        "usage": "ORGA",
        "psuStatus": "Account Holder",
        "_links": {
            "balances": {"href": f"{base}/accounts/{resource_id}/balances"},
            "transactions": {"href": f"{base}/accounts/{resource_id}/transactions"},
        },
    }
    if iban is not None:
        acc["accountId"]["iban"] = iban
    return acc


def accounts(*accs: dict[str, Any]) -> dict[str, Any]:
    """GET /accounts body."""
    return {"accounts": list(accs), "_links": {"self": {"href": "/stet/v1/accounts"}}}


def balances(**by_type: str) -> dict[str, Any]:
    """GET /balances body, e.g. balances(CLBD="10.00", XPCD="12.00")."""
    return {
        "balances": [
            {
                "name": t,
                "balanceType": t,
                "balanceAmount": {"amount": amount, "currency": "EUR"},
                "referenceDate": "2026-01-31",
            }
            for t, amount in by_type.items()
        ],
        "_links": {},
    }


def tx(
    amount: str,
    indicator: str,
    day: str = "2026-01-30",
    status: str = "BOOK",
    remittance: list[str] | None = None,
) -> dict[str, Any]:
    """One STET transaction."""
    return {
        "resourceId": f"t-{amount}-{day}",
        "entryReference": "ref",
        "transactionAmount": {"amount": amount, "currency": "EUR"},
        "creditDebitIndicator": indicator,
        "status": status,
        "bookingDate": day,
        "valueDate": day,
        "remittanceInformation": remittance if remittance is not None else ["VIR SEPA"],
    }


def page(transactions: list[dict[str, Any]], next_href: str | None = None) -> dict[str, Any]:
    """One page of GET /transactions."""
    links: dict[str, Any] = {"self": {"href": "/stet/v1/accounts/x/transactions"}}
    if next_href is not None:
        links["next"] = {"href": next_href}
    return {"transactions": transactions, "_links": links}


def bank_raw() -> dict[str, Any]:
    """An open banking raw record: two accounts, the first paginated over two pages."""
    return {
        "accounts": accounts(account("acc-1", IBAN_MAIN), account("acc-2", None)),
        "balances": {
            "acc-1": balances(XPCD="999.00", CLBD="1500.50"),
            "acc-2": balances(XPCD="-20.00", OTHR="5.00"),
        },
        "transactions": {
            "acc-1": [
                page(
                    [
                        tx("-12.00", "DBIT", remittance=["PRLV SEPA", "EDF"]),
                        tx("12.00", "DBIT", day="2026-01-29"),
                    ],
                    next_href="/stet/v1/accounts/acc-1/transactions?page=2",
                ),
                page([tx("-5.00", "CRDT", day="2026-01-28"), tx("7.25", "CRDT", status="PDNG")]),
            ],
            "acc-2": [page([])],
        },
    }


def sirene(
    siren: str = "111111118", *, state: str = "A", creation: str | None = "2015-03-02"
) -> dict[str, Any]:
    """GET /siren/{siren} body, with a past period after the current one."""
    return {
        "header": {"statut": 200, "message": "OK"},
        "uniteLegale": {
            "siren": siren,
            "statutDiffusionUniteLegale": "O",
            "dateCreationUniteLegale": creation,
            "trancheEffectifsUniteLegale": "11",
            "anneeEffectifsUniteLegale": "2023",
            "categorieEntreprise": "PME",
            "periodesUniteLegale": [
                {
                    "dateFin": None,
                    "dateDebut": "2020-01-01",
                    "etatAdministratifUniteLegale": state,
                    "denominationUniteLegale": "ACME",
                    "categorieJuridiqueUniteLegale": "5710",
                    "activitePrincipaleUniteLegale": "62.01Z",
                    "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
                },
                {
                    "dateFin": "2019-12-31",
                    "dateDebut": "2015-03-02",
                    "etatAdministratifUniteLegale": "A",
                    "denominationUniteLegale": "ACME",
                    "categorieJuridiqueUniteLegale": "5499",
                    "activitePrincipaleUniteLegale": "47.11A",
                    "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
                },
            ],
        },
    }


REDRESSEMENT = "Jugement d'ouverture d'une procédure de redressement judiciaire"


def bodacc(siren: str = "111111118", *, malformed_jugement: bool = False) -> dict[str, Any]:
    """BODACC records: one collective proceeding (jugement as a JSON string), one sale."""
    jugement = orjson.dumps(
        {
            "type": "initial",
            "famille": "Jugement d'ouverture",
            "nature": REDRESSEMENT,
            "date": "2025-06-01",
            "complementJugement": "Mandataire: ...",
        }
    ).decode()
    if malformed_jugement:
        jugement = jugement[:-7]
    spaced = f"{siren[:3]} {siren[3:6]} {siren[6:]}"
    return {
        "total_count": 2,
        "results": [
            {
                "id": "A202500011",
                "publicationavis": "A",
                "familleavis": "vente",
                "familleavis_lib": "Ventes et cessions",
                "dateparution": "2024-02-10",
                "registre": [siren, spaced],
                "commercant": "ACME",
                "ville": "Paris",
                "jugement": None,
            },
            {
                "id": "A202500012",
                "publicationavis": "A",
                "familleavis": "collective",
                "familleavis_lib": "Procédures collectives",
                "dateparution": "2025-06-10",
                "registre": [siren, spaced],
                "commercant": "ACME",
                "ville": "Paris",
                "jugement": jugement,
            },
        ],
    }


def line(account: str, debit: str = "0.00", credit: str = "0.00") -> dict[str, str]:
    """One trial balance line."""
    return {"account": account, "label": f"Compte {account}", "debit": debit, "credit": credit}


# Balanced (84,000.00 each side); the expected aggregates are worked out by hand in the tests.
SMALL_TRIAL_BALANCE: list[dict[str, str]] = [
    line("101000", credit="10000.00"),
    line("110000", credit="2000.00"),
    line("164000", credit="5000.00"),
    line("218000", debit="12000.00"),
    line("281800", credit="2000.00"),
    line("310000", debit="1000.00"),
    line("401000", credit="3000.00"),
    line("411000", debit="6000.00"),
    line("421000", credit="500.00"),
    line("512000", debit="7500.00"),
    line("519000", credit="1000.00"),
    line("530000", debit="500.00"),
    line("607000", debit="30000.00"),
    line("613000", debit="5000.00"),
    line("641000", debit="20000.00"),
    line("681100", debit="2000.00"),
    line("706000", credit="60000.00"),
    line("781000", credit="500.00"),
]


FEC_HEADER = (
    "JournalCode|JournalLib|EcritureNum|EcritureDate|CompteNum|CompteLib|CompAuxNum|"
    "CompAuxLib|PieceRef|PieceDate|EcritureLib|Debit|Credit|EcritureLet|DateLet|ValidDate|"
    "Montantdevise|Idevise"
)


def fec_text(lines: list[dict[str, str]], year: int = 2025) -> str:
    """A `|` separated FEC holding the trial balance lines as one OD entry of 31 December."""
    rows = [FEC_HEADER]
    day = f"{year}1231"
    for ln in lines:
        debit, credit = (ln[k].replace(".", ",") for k in ("debit", "credit"))
        rows.append(
            f"OD|Opérations diverses|OD{year}-1|{day}|{ln['account']}|{ln['label']}|||"
            f"OD{year}-1|{day}|Balance|{debit}|{credit}|||{day}||"
        )
    return "\r\n".join(rows) + "\r\n"


def fec_name(siren: str, year: int) -> str:
    """The standard file name of a fiscal year closing on 31 December."""
    return f"{siren}FEC{year}1231.txt"


def fec_raw(
    siren: str = "111111118", years: list[list[dict[str, str]]] | None = None
) -> dict[str, Any]:
    """The accounting raw record of FEC files, one per year, newest first (2025, 2024...)."""
    years = years if years is not None else [SMALL_TRIAL_BALANCE]
    return {
        "fec": [
            {
                "name": fec_name(siren, 2025 - i),
                "origin": "provider",
                "text": fec_text(lines, 2025 - i),
            }
            for i, lines in enumerate(years)
        ]
    }
