"""Every model feature, in model order: name, family, unit, monotone direction, reason labels.

The catalog is the single source of truth shared by the builders, the training pipeline
(monotone constraints), the bundle check (fingerprint) and the reason codes. Features of
one family are correlated views of the same risk driver, so the explanation reports one
reason per family, labelled with the family's most contributing feature.

``monotone`` is the sign of the feature's effect on RISK (probability of default) and is
passed to LightGBM as a monotone constraint: +1 means "more of it can only raise the PD".

Labels are ``str.format`` templates rendered with ``value=<feature value>``; they state a
fact the applicant can act on, so the same text serves adverse and favourable reasons.
"""

from __future__ import annotations

import hashlib
import json
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

# Feature name prefixes -> where the data comes from, for the "data not available"
# label: the applicant can fix a missing bank connection or missing books, not a registry.
_BOOKS_FEATURES = frozenset({
    "working_capital_to_assets", "current_ratio", "cash_ratio",
    "retained_earnings_to_assets", "equity_to_liabilities", "ebit_to_assets",
    "ebitda_margin", "net_margin", "financial_debt_to_ebitda", "debt_ratio",
    "sales_to_assets", "revenue_growth", "annual_revenue", "request_to_revenue",
})  # fmt: skip
_MISSING_BY_SOURCE: dict[str, tuple[str, str]] = {
    "bank": (
        "données bancaires indisponibles (connectez votre compte professionnel)",
        "bank data not available (connect your business account)",
    ),
    "books": (
        "comptes annuels indisponibles (transmettez votre dernière balance ou votre FEC)",
        "financial statements not available (share your latest trial balance or FEC)",
    ),
    "registry": (
        "données du registre indisponibles",
        "company register data not available",
    ),
    "other": ("données indisponibles", "data not available"),
}


@lru_cache(maxsize=512)
def _compiled(template: str) -> tuple[tuple[str, str | None, str], ...]:
    # Parsed once per template: string.Formatter.vformat is pure Python and would cost
    # more per reason than the whole explanation.
    return tuple(
        (lit, field, spec or "") for lit, field, spec, _ in string.Formatter().parse(template)
    )


def _fill(template: str, values: Mapping[str, float], french: bool) -> str:
    """``template.format(**values)`` with the locale's number typography."""
    parts: list[str] = []
    for literal, field, spec in _compiled(template):
        parts.append(literal)
        if field is None:
            continue
        text = format(values[field], spec)
        if french:
            # 1,234.5 -> 1 234,5 and 12% -> 12 % (narrow no-break spaces, as French prints).
            text = text.replace(",", "\u202f").replace(".", ",").replace("%", "\u202f%")
        parts.append(text)
    return "".join(parts)


def _source_of(name: str) -> str:
    if name.startswith("bank_") or name == "request_to_monthly_inflows":
        return "bank"
    if name in _BOOKS_FEATURES:
        return "books"
    if name in {"company_age_years", "legal_form_group", "headcount_band",
                "sector_risk_group", "registry_active", "collective_proceedings"}:  # fmt: skip
        return "registry"
    return "other"


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature and how to explain it."""

    name: str
    family: str
    unit: str
    description: str
    monotone: int
    reason_code: str
    label_fr: str
    label_en: str
    # Exact values (flags, ordinals) that read better as words than as numbers.
    value_labels: tuple[tuple[float, str, str], ...] = ()
    # What a missing value means when it is not missing data (e.g. no event at all).
    missing_labels: tuple[str, str] | None = None

    def render(self, value: float | None) -> tuple[str, str]:
        """French and English labels rendered with ``value`` (family label when missing)."""
        if value is None or math.isnan(value):
            if self.missing_labels is not None:
                return self.missing_labels
            fam = FAMILY_LABELS[self.family]
            fr, en = _MISSING_BY_SOURCE[_source_of(self.name)]
            return f"{fam[0]} : {fr}", f"{fam[1]}: {en}"
        for exact, fr, en in self.value_labels:
            if value == exact:
                return fr, en
        # ``amount`` undoes log1p for the features that are logarithms of an amount.
        values = {"value": value}
        if self.unit == "ln(EUR)":
            values["amount"] = math.expm1(min(value, 700.0))
        return _fill(self.label_fr, values, french=True), _fill(self.label_en, values, french=False)


# Family -> (reason code, label FR, label EN). The family label is used when the
# representative feature has no value (source missing).
FAMILY_LABELS: dict[str, tuple[str, str]] = {
    "liquidity": ("Liquidité et trésorerie", "Liquidity and cash position"),
    "cash_flow": ("Flux de trésorerie", "Cash flows"),
    "payment_incidents": ("Incidents de paiement", "Payment incidents"),
    "profitability": ("Rentabilité", "Profitability"),
    "leverage": ("Endettement", "Indebtedness"),
    "solvency": ("Solvabilité et fonds propres", "Solvency and equity"),
    "activity": ("Activité et chiffre d'affaires", "Business activity and revenue"),
    "company_age": ("Ancienneté de l'entreprise", "Company age"),
    "company_profile": (
        "Profil de l'entreprise (forme juridique, effectif)",
        "Company profile (legal form, headcount)",
    ),
    "sector": ("Secteur d'activité", "Business sector"),
    "legal_events": ("Événements juridiques", "Legal events"),
    "request_size": ("Montant demandé", "Requested amount"),
    "data_coverage": ("Données disponibles", "Available data"),
}

FAMILY_CODES: dict[str, str] = {
    "liquidity": "LIQUIDITY",
    "cash_flow": "CASH_FLOW",
    "payment_incidents": "PAYMENT_INCIDENTS",
    "profitability": "PROFITABILITY",
    "leverage": "LEVERAGE",
    "solvency": "SOLVENCY",
    "activity": "ACTIVITY",
    "company_age": "COMPANY_AGE",
    "company_profile": "COMPANY_PROFILE",
    "sector": "SECTOR",
    "legal_events": "LEGAL_EVENTS",
    "request_size": "REQUEST_SIZE",
    "data_coverage": "DATA_COVERAGE",
}


def _f(
    name: str,
    family: str,
    unit: str,
    monotone: int,
    description: str,
    label_fr: str,
    label_en: str,
    value_labels: Sequence[tuple[float, str, str]] = (),
    missing_labels: tuple[str, str] | None = None,
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        family=family,
        unit=unit,
        description=description,
        monotone=monotone,
        reason_code=FAMILY_CODES[family],
        label_fr=label_fr,
        label_en=label_en,
        value_labels=tuple(value_labels),
        missing_labels=missing_labels,
    )


_LEGAL_FORMS: Mapping[int, tuple[str, str]] = {
    0: ("entrepreneur individuel", "sole trader"),
    1: ("SARL / EURL", "SARL / EURL (limited liability company)"),
    2: ("SAS / SASU", "SAS / SASU (simplified joint-stock company)"),
    3: ("SA", "SA (public limited company)"),
    4: ("autre forme juridique", "other legal form"),
}
_HEADCOUNTS: Mapping[int, str] = {
    0: "0", 1: "1-2", 2: "3-5", 3: "6-9", 4: "10-19", 5: "20-49", 6: "50-99", 7: "100-199",
    8: "200-249", 9: "250-499", 10: "500-999", 11: "1,000-1,999", 12: "2,000-4,999",
    13: "5,000-9,999", 14: "10,000+",
}  # fmt: skip


FEATURES: tuple[FeatureSpec, ...] = (
    # --- bank: cash flow over the last 90 days --------------------------------------
    _f(
        "bank_inflows_90d",
        "cash_flow",
        "EUR",
        -1,
        "Sum of booked credits over the 90 days up to the bank as_of (rejected-debit "
        "refunds excluded).",
        "Encaissements de {value:,.0f} € sur les 90 derniers jours",
        "Inflows of EUR {value:,.0f} over the last 90 days",
    ),
    _f(
        "bank_outflows_90d",
        "cash_flow",
        "EUR",
        0,
        "Sum of booked debits (absolute) over the last 90 days.",
        "Décaissements de {value:,.0f} € sur les 90 derniers jours",
        "Outflows of EUR {value:,.0f} over the last 90 days",
    ),
    _f(
        "bank_net_flow_ratio_90d",
        "cash_flow",
        "ratio",
        -1,
        "(inflows - outflows) / inflows over the last 90 days.",
        "Flux net de {value:.0%} des encaissements sur 90 jours",
        "Net cash flow of {value:.0%} of inflows over 90 days",
    ),
    _f(
        "bank_net_flow_trend",
        "cash_flow",
        "share of weekly inflows per week",
        -1,
        "Least-squares slope of the weekly net flow over the last 13 weeks, divided by "
        "the mean weekly inflows.",
        "Tendance du flux net hebdomadaire : {value:+.1%} des encaissements par semaine",
        "Weekly net cash flow trend: {value:+.1%} of inflows per week",
    ),
    # --- bank: liquidity -----------------------------------------------------------
    _f(
        "bank_negative_balance_days",
        "liquidity",
        "days",
        1,
        "Days among the last 90 whose end-of-day consolidated balance, reconstructed "
        "backwards from the closing balance, is negative.",
        "Trésorerie négative sur {value:.0f} des 90 derniers jours",
        "Negative balance on {value:.0f} of the last 90 days",
    ),
    _f(
        "bank_balance_volatility",
        "liquidity",
        "ratio",
        1,
        "Coefficient of variation (std / |mean|) of the daily consolidated balance over "
        "90 days, capped at 10.",
        "Variabilité du solde bancaire : coefficient de variation de {value:.1f}",
        "Bank balance variability: coefficient of variation of {value:.1f}",
    ),
    _f(
        "bank_cash_cover_months",
        "liquidity",
        "months",
        -1,
        "Closing consolidated balance / average monthly outflows.",
        "Trésorerie couvrant {value:.1f} mois de dépenses",
        "Cash covering {value:.1f} months of spending",
    ),
    # --- bank: incidents and history -----------------------------------------------
    _f(
        "bank_rejected_debits_90d",
        "payment_incidents",
        "count",
        1,
        "Rejected direct debits (credit whose remittance says REJET or IMPAYE) over "
        "the last 90 days.",
        "{value:.0f} prélèvement(s) rejeté(s) sur les 90 derniers jours",
        "{value:.0f} rejected direct debit(s) over the last 90 days",
    ),
    _f(
        "bank_history_months",
        "data_coverage",
        "months",
        -1,
        "Months between the oldest booked transaction and the bank as_of.",
        "{value:.1f} mois d'historique bancaire disponible",
        "{value:.1f} months of bank history available",
    ),
    # --- accounting: Altman family and ratios ---------------------------------------
    _f(
        "working_capital_to_assets",
        "liquidity",
        "ratio",
        -1,
        "(current assets - current liabilities) / total assets (Altman X1).",
        "Fonds de roulement de {value:.0%} du total du bilan",
        "Working capital of {value:.0%} of total assets",
    ),
    _f(
        "current_ratio",
        "liquidity",
        "ratio",
        -1,
        "Current assets / current liabilities, capped at 20.",
        "Ratio de liquidité générale de {value:.2f}",
        "Current ratio of {value:.2f}",
    ),
    _f(
        "cash_ratio",
        "liquidity",
        "ratio",
        -1,
        "Cash / current liabilities, capped at 20.",
        "Trésorerie égale à {value:.0%} des dettes à court terme",
        "Cash equal to {value:.0%} of short-term liabilities",
    ),
    _f(
        "retained_earnings_to_assets",
        "solvency",
        "ratio",
        -1,
        "Retained earnings / total assets (Altman X2).",
        "Réserves et report à nouveau de {value:.0%} du total du bilan",
        "Retained earnings of {value:.0%} of total assets",
    ),
    _f(
        "equity_to_liabilities",
        "solvency",
        "ratio",
        -1,
        "Equity / total liabilities (Altman X4, book value), capped at 20.",
        "Fonds propres égaux à {value:.0%} des dettes",
        "Equity equal to {value:.0%} of liabilities",
    ),
    _f(
        "ebit_to_assets",
        "profitability",
        "ratio",
        -1,
        "EBIT / total assets (Altman X3).",
        "Résultat d'exploitation de {value:.1%} du total du bilan",
        "Operating profit of {value:.1%} of total assets",
    ),
    _f(
        "ebitda_margin",
        "profitability",
        "ratio",
        -1,
        "EBITDA / revenue.",
        "Marge d'EBE de {value:.1%}",
        "EBITDA margin of {value:.1%}",
    ),
    _f(
        "net_margin",
        "profitability",
        "ratio",
        -1,
        "Net income / revenue.",
        "Marge nette de {value:.1%}",
        "Net margin of {value:.1%}",
    ),
    _f(
        "financial_debt_to_ebitda",
        "leverage",
        "years of EBITDA",
        1,
        "Financial debt / EBITDA; 0 without debt, 50 (cap) when EBITDA <= 0 with debt.",
        "Dette financière de {value:.1f} années d'EBE",
        "Financial debt of {value:.1f} years of EBITDA",
    ),
    _f(
        "debt_ratio",
        "leverage",
        "ratio",
        1,
        "Total liabilities / total assets.",
        "Dettes représentant {value:.0%} du total du bilan",
        "Liabilities at {value:.0%} of total assets",
    ),
    _f(
        "sales_to_assets",
        "activity",
        "ratio",
        -1,
        "Revenue / total assets (Altman X5), capped at 20.",
        "Chiffre d'affaires de {value:.1f} fois le total du bilan",
        "Revenue of {value:.1f} times total assets",
    ),
    _f(
        "revenue_growth",
        "activity",
        "ratio",
        -1,
        "Revenue of the latest fiscal year / previous year - 1, clipped to [-1, 5].",
        "Évolution du chiffre d'affaires de {value:+.0%} sur un an",
        "Revenue change of {value:+.0%} year on year",
    ),
    _f(
        "annual_revenue",
        "activity",
        "EUR",
        -1,
        "Revenue of the latest fiscal year.",
        "Chiffre d'affaires annuel de {value:,.0f} €",
        "Annual revenue of EUR {value:,.0f}",
    ),
    # --- registry -----------------------------------------------------------------
    _f(
        "company_age_years",
        "company_age",
        "years",
        -1,
        "Years between the creation date and the registry as_of.",
        "Entreprise créée il y a {value:.1f} an(s)",
        "Company created {value:.1f} year(s) ago",
    ),
    _f(
        "legal_form_group",
        "company_profile",
        "ordinal",
        0,
        "Legal form group from categorieJuridique: 0 sole trader, 1 SARL/EURL, 2 SAS/SASU, "
        "3 SA, 4 other.",
        "Forme juridique (groupe {value:.0f})",
        "Legal form (group {value:.0f})",
        [
            (float(k), f"Forme juridique : {fr}", f"Legal form: {en}")
            for k, (fr, en) in _LEGAL_FORMS.items()
        ],
    ),
    _f(
        "headcount_band",
        "company_profile",
        "ordinal",
        -1,
        "INSEE headcount band as an ordinal (0 = no employee ... 14 = 10,000+).",
        "Tranche d'effectif {value:.0f} (échelle INSEE)",
        "Headcount band {value:.0f} (INSEE scale)",
        [
            (
                float(k),
                f"Effectif de {band.replace(',', chr(0x202F))} salarié(s)",
                f"{band} employee(s)",
            )
            for k, band in _HEADCOUNTS.items()
        ],
    ),
    _f(
        "sector_risk_group",
        "sector",
        "ordinal",
        1,
        "Sector risk group from the NAF division: 0 lowest ... 4 highest historical failure rate.",
        "Secteur d'activité de niveau de risque {value:.0f} sur 4 (0 = le plus faible)",
        "Business sector risk level {value:.0f} of 4 (0 = lowest)",
    ),
    _f(
        "registry_active",
        "legal_events",
        "flag",
        -1,
        "1 when the legal unit is active (etatAdministratif A), 0 when closed.",
        "Statut au répertoire Sirene (1 = active, 0 = cessée) : {value:.0f}",
        "Sirene status (1 = active, 0 = closed): {value:.0f}",
        [
            (
                1.0,
                "Entreprise active au répertoire Sirene",
                "Company active in the Sirene register",
            ),
            (
                0.0,
                "Entreprise cessée au répertoire Sirene",
                "Company closed in the Sirene register",
            ),
        ],
    ),
    _f(
        "collective_proceedings",
        "legal_events",
        "flag",
        1,
        "1 when a collective procedure opened in the last 5 years is still running (BODACC: "
        "no closing judgment published); 0 when none or closed.",
        "Procédure collective en cours au BODACC (1 = oui, 0 = non) : {value:.0f}",
        "Collective proceedings ongoing in BODACC (1 = yes, 0 = no): {value:.0f}",
        [
            (
                1.0,
                "Procédure collective en cours, ouverte depuis moins de 5 ans",
                "Collective proceedings ongoing, opened within the last 5 years",
            ),
            (
                0.0,
                "Aucune procédure collective en cours",
                "No ongoing collective proceedings",
            ),
        ],
    ),
    _f(
        "days_since_collective",
        "legal_events",
        "days",
        -1,
        "Days since the opening notice of the latest collective procedure, ongoing or closed; "
        "its later notices (plan, closure) do not reset it (missing when none).",
        "Dernière procédure collective ouverte il y a {value:.0f} jours",
        "Latest collective proceedings opened {value:.0f} days ago",
        missing_labels=(
            "Aucune procédure collective publiée au BODACC",
            "No collective proceedings published in BODACC",
        ),
    ),
    # --- request ------------------------------------------------------------------
    _f(
        "request_to_revenue",
        "request_size",
        "ratio",
        1,
        "Requested amount / annual revenue, capped at 50.",
        "Montant demandé égal à {value:.0%} du chiffre d'affaires annuel",
        "Requested amount equal to {value:.0%} of annual revenue",
    ),
    _f(
        "request_to_monthly_inflows",
        "request_size",
        "months of inflows",
        1,
        "Requested amount / average monthly inflows over 90 days, capped at 500.",
        "Montant demandé égal à {value:.1f} mois d'encaissements",
        "Requested amount equal to {value:.1f} months of inflows",
    ),
    _f(
        "log_requested_amount",
        "request_size",
        "ln(EUR)",
        0,
        "Natural logarithm of 1 + the requested amount.",
        "Montant demandé de {amount:,.0f} €",
        "Requested amount of EUR {amount:,.0f}",
    ),
    # --- data coverage ------------------------------------------------------------
    _f(
        "has_bank",
        "data_coverage",
        "flag",
        0,
        "1 when bank data was available for this decision.",
        "Compte bancaire connecté (1 = oui, 0 = non) : {value:.0f}",
        "Bank account connected (1 = yes, 0 = no): {value:.0f}",
        [
            (1.0, "Compte bancaire professionnel connecté", "Business bank account connected"),
            (
                0.0,
                "Aucun compte bancaire connecté : connectez votre compte professionnel",
                "No bank account connected: connect your business account",
            ),
        ],
    ),
    _f(
        "has_books",
        "data_coverage",
        "flag",
        0,
        "1 when accounting data was available for this decision.",
        "Comptes annuels disponibles (1 = oui, 0 = non) : {value:.0f}",
        "Financial statements available (1 = yes, 0 = no): {value:.0f}",
        [
            (1.0, "Comptes annuels disponibles", "Financial statements available"),
            (
                0.0,
                "Comptes annuels indisponibles : transmettez votre dernière balance ou votre FEC",
                "No financial statements: share your latest trial balance or FEC",
            ),
        ],
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
SPECS_BY_NAME: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}
MONOTONE_CONSTRAINTS: tuple[int, ...] = tuple(f.monotone for f in FEATURES)


def catalog_fingerprint() -> str:
    """sha256 of the canonical JSON of feature names, families and monotone directions."""
    doc = [[f.name, f.family, f.monotone] for f in FEATURES]
    canonical = json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
