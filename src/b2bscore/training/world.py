"""The deterministic synthetic world: any checksum-valid SIREN -> one company and its true PD.

Every random draw comes from numpy PCG64 generators seeded by sha256 of the SIREN (never
Python's hash(), which is salted per process), so the same SIREN gives the same company on
every machine. Nothing depends on today's date: times are kept as "days before as_of" and
only the wire renderer (b2bscore.sandbox.wire) turns them into calendar dates.
The generative process and its parameters are documented in docs/WORLD.md.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.fr import siren as std_siren

WORLD_VERSION = "world-v1"
HISTORY_DAYS = 120
TAU = 2.0 * math.pi

# --- scenario SIRENs (like the test card numbers of payment APIs) ------------------

SCENARIOS: dict[str, str] = {
    "healthy": "111111118",
    "thin_file_startup": "222222226",
    "cash_strapped": "333333334",
    "collective_proceedings": "444444442",
    "closed_company": "555555556",
    "bank_timeout": "666666664",
    "registry_error": "777777772",
    "accounting_malformed": "888888880",
    "bank_truncated": "999999998",
    "no_bank_consent": "123456782",
}
_SCENARIO_BY_SIREN = {v: k for k, v in SCENARIOS.items()}

# Scenario -> fault the sandbox applies; the world stays the single source of truth.
_FAULTS: dict[str, str] = {
    "bank_timeout": "bank_timeout",
    "registry_error": "registry_error",
    "accounting_malformed": "accounting_malformed",
    "bank_truncated": "bank_truncated",
    "no_bank_consent": "no_bank_consent",
}

# --- sectors -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sector:
    """A NAF sector with its risk effect and the shape of its accounts."""

    naf: str
    label: str
    weight: float
    risk: float  # additive effect on the PD logit
    margin: float  # typical EBITDA margin
    purchases: float  # share of revenue bought from suppliers (accounts 60)
    personnel: float  # share of revenue spent on staff (accounts 64)
    external: float  # share of revenue of external charges (accounts 61/62)
    capital_intensity: float  # gross fixed assets / revenue
    inventory_days: float
    receivable_days: float
    payable_days: float
    season: float  # seasonal amplitude of receipts
    card_receipts: bool  # customers pay at the till: daily card settlements
    revenue_per_head: float  # EUR of revenue per employee
    revenue_account: str
    revenue_label: str
    size_shift: float


SECTORS: tuple[Sector, ...] = (
    Sector(
        "62.01Z",
        "Programmation informatique",
        0.13,
        -0.30,
        0.12,
        0.05,
        0.55,
        0.20,
        0.08,
        0,
        65,
        40,
        0.05,
        False,
        110_000,
        "706000",
        "Prestations de services",
        0.0,
    ),
    Sector(
        "47.11F",
        "Hypermarchés",
        0.09,
        0.10,
        0.05,
        0.72,
        0.12,
        0.08,
        0.25,
        35,
        3,
        45,
        0.15,
        True,
        250_000,
        "707000",
        "Ventes de marchandises",
        0.6,
    ),
    Sector(
        "41.20A",
        "Construction de maisons individuelles",
        0.13,
        0.45,
        0.07,
        0.45,
        0.28,
        0.17,
        0.20,
        20,
        70,
        60,
        0.25,
        False,
        160_000,
        "704000",
        "Travaux",
        0.2,
    ),
    Sector(
        "56.10A",
        "Restauration traditionnelle",
        0.15,
        0.55,
        0.08,
        0.33,
        0.38,
        0.19,
        0.35,
        6,
        2,
        30,
        0.30,
        True,
        60_000,
        "707000",
        "Ventes de marchandises",
        -0.6,
    ),
    Sector(
        "46.90Z",
        "Commerce de gros non spécialisé",
        0.12,
        0.05,
        0.05,
        0.75,
        0.10,
        0.08,
        0.10,
        45,
        55,
        55,
        0.10,
        False,
        350_000,
        "707000",
        "Ventes de marchandises",
        0.5,
    ),
    Sector(
        "49.41A",
        "Transports routiers de fret interurbains",
        0.12,
        0.30,
        0.08,
        0.25,
        0.40,
        0.25,
        0.60,
        2,
        55,
        45,
        0.10,
        False,
        120_000,
        "706000",
        "Prestations de services",
        0.1,
    ),
    Sector(
        "25.62B",
        "Mécanique industrielle",
        0.11,
        -0.05,
        0.10,
        0.35,
        0.38,
        0.15,
        0.55,
        30,
        60,
        55,
        0.08,
        False,
        120_000,
        "701000",
        "Ventes de produits finis",
        0.2,
    ),
    Sector(
        "70.22Z",
        "Conseil pour les affaires et autres conseils de gestion",
        0.15,
        -0.20,
        0.15,
        0.03,
        0.52,
        0.28,
        0.05,
        0,
        60,
        35,
        0.05,
        False,
        140_000,
        "706000",
        "Prestations de services",
        -0.4,
    ),
)
_SECTOR_P = np.array([s.weight for s in SECTORS]) / sum(s.weight for s in SECTORS)
_SECTOR_BY_NAF = {s.naf: i for i, s in enumerate(SECTORS)}

LEGAL_FORMS = {"5710": "SAS", "5499": "SARL", "5720": "SASU", "5599": "SA", "1000": "EI"}

# INSEE trancheEffectifs: (code, lower bound of headcount)
_HEADCOUNT_BANDS: tuple[tuple[str, int], ...] = (
    ("00", 0),
    ("01", 1),
    ("02", 3),
    ("03", 6),
    ("11", 10),
    ("12", 20),
    ("21", 50),
    ("22", 100),
    ("31", 200),
    ("32", 250),
    ("41", 500),
    ("42", 1000),
    ("51", 2000),
    ("52", 5000),
    ("53", 10000),
)

# --- true PD parameters (docs/WORLD.md) ---------------------------------------------

PD_INTERCEPT = -4.50
PD_HEALTH = 1.15
PD_LEVERAGE = 0.45
PD_SIZE = 0.20
PD_AGE = 1.10
PD_AGE_SCALE_YEARS = 2.5
PD_SHOCK = 0.90
PD_SEASON = 0.60
PD_CLOSED = 2.00
PD_FLOOR, PD_CAP = 0.0005, 0.95


@dataclass(frozen=True, slots=True)
class ProceedingsKind:
    """A kind of collective proceedings and its effect on the PD logit."""

    nature: str
    famille: str
    effect: float
    weight: float


PROCEEDINGS_KINDS: tuple[ProceedingsKind, ...] = (
    ProceedingsKind(
        "Jugement d'ouverture d'une procédure de sauvegarde", "Jugement d'ouverture", 1.8, 0.15
    ),
    ProceedingsKind(
        "Jugement d'ouverture d'une procédure de redressement judiciaire",
        "Jugement d'ouverture",
        3.2,
        0.60,
    ),
    ProceedingsKind(
        "Jugement d'ouverture de liquidation judiciaire", "Jugement d'ouverture", 4.5, 0.25
    ),
)
_PROC_P = np.array([k.weight for k in PROCEEDINGS_KINDS])

# --- the company ------------------------------------------------------------------


class Txn(NamedTuple):
    """One bank transaction; amount in signed cents (credit > 0), dated in days before as_of."""

    days_ago: int
    amount_cents: int
    remittance: str
    status: str  # BOOK or PDNG

    @property
    def amount(self) -> Decimal:
        """Signed amount in EUR."""
        return Decimal(self.amount_cents).scaleb(-2)


@dataclass(frozen=True, slots=True)
class BankAccount:
    """One payment account, its bank's rendering habits and its transactions."""

    index: int
    resource_id: str
    iban: str
    bank_name: str
    name: str
    negative_debits: bool  # this bank writes DBIT amounts as negative strings
    balance_style: int  # which balance types the bank lists, and in which order
    balance_cents: int  # closing booked balance (CLBD) at as_of
    pending_cents: int
    transactions: tuple[Txn, ...]  # newest first

    @property
    def balance(self) -> Decimal:
        """Closing booked balance in EUR."""
        return Decimal(self.balance_cents).scaleb(-2)

    def end_of_day_balances_cents(self) -> list[int]:
        """Booked balance at the end of each day, index = days before as_of."""
        days = max((t.days_ago for t in self.transactions), default=0) + 1
        flows = [0] * days
        for t in self.transactions:
            if t.status == "BOOK":
                flows[t.days_ago] += t.amount_cents
        out, bal = [], self.balance_cents
        for d in range(days):
            out.append(bal)
            bal -= flows[d]
        return out


@dataclass(frozen=True, slots=True)
class TrialLine:
    """One line of a trial balance on the PCG."""

    account: str
    label: str
    debit: Decimal
    credit: Decimal


@dataclass(frozen=True, slots=True)
class Statement:
    """One fiscal year: the pre-closing trial balance and the aggregates it must yield."""

    years_ago: int  # 0 = the last closed fiscal year
    lines: tuple[TrialLine, ...]
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
    fixed_assets: Decimal


@dataclass(frozen=True, slots=True)
class Proceedings:
    """Collective proceedings opened against the company."""

    nature: str
    famille: str
    days_ago: int  # judgment date, in days before as_of
    effect: float


@dataclass(frozen=True, slots=True)
class Notice:
    """One BODACC announcement, published days_ago days before as_of."""

    family: str
    days_ago: int
    proceedings: Proceedings | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Company:
    """Everything the world knows about one company, observed and latent."""

    siren: str
    name: str
    city: str
    naf: str
    legal_form: str
    age_days: int
    headcount: int
    headcount_band: str
    category: str | None
    # latent factors
    health: float
    leverage: float
    size: float  # ln of annual revenue in EUR
    seasonality_amp: float
    seasonality_phase: float
    shock: float  # severity, 0 when no shock
    shock_days_ago: int | None
    # registry and consent
    active: bool
    closed_days_ago: int | None
    proceedings: Proceedings | None
    bank_consent: bool
    has_books: bool
    statements: tuple[Statement, ...]  # newest first
    accounts: tuple[BankAccount, ...]
    notices: tuple[Notice, ...]  # newest first
    true_pd: float
    scenario: str | None = None
    fault: str | None = None

    @property
    def sector(self) -> Sector:
        """The company's sector."""
        return SECTORS[_SECTOR_BY_NAF[self.naf]]


# --- randomness --------------------------------------------------------------------


def _rng(siren: str, stream: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{WORLD_VERSION}:{stream}:{siren}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _cents(x: float) -> int:
    return round(x * 100)


def _dec(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


# --- latent factors and the true PD ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Latents:
    sector: int
    legal_form: str
    age_days: int
    health: float
    leverage: float
    size: float
    season_amp: float
    season_phase: float
    shock: float
    shock_days_ago: int | None
    proceedings: Proceedings | None
    closed_days_ago: int | None
    bank_consent: bool
    has_books: bool
    n_accounts: int
    history_days: int
    scenario: str | None


def _draw_latents(siren: str) -> _Latents:
    rng = _rng(siren, "latent")
    # Draw every number up front so that the stream order never depends on branches.
    u = rng.random(20)
    z = rng.standard_normal(6)
    sector = int(np.searchsorted(np.cumsum(_SECTOR_P), u[0] * 0.999999))
    sec = SECTORS[sector]
    age_years = float(np.clip(math.exp(math.log(7.0) + 0.95 * z[0]), 0.08, 70.0))
    age_days = max(30, int(age_years * 365.25))
    health = float(z[1])
    leverage = float(-0.35 * health + math.sqrt(1 - 0.35**2) * z[2])
    size = float(
        np.clip(13.2 + sec.size_shift + 0.25 * math.log1p(age_years) + 1.1 * z[3], 10.3, 19.0)
    )
    season_amp = sec.season * (0.5 + u[1])
    season_phase = TAU * u[2]
    shock, shock_days = 0.0, None
    if u[3] < 0.07:
        shock = 0.4 + 1.1 * u[4]
        shock_days = 5 + int(110 * u[5])
    proceedings = None
    if u[6] < _sigmoid(-4.7 - 1.1 * health + 0.5 * leverage):
        kind = PROCEEDINGS_KINDS[int(np.searchsorted(np.cumsum(_PROC_P), u[7] * 0.999999))]
        proceedings = Proceedings(
            kind.nature, kind.famille, 5 + int(min(age_days - 5, 540) * u[8]), kind.effect
        )
    closed_p = 0.015
    if proceedings is not None and "liquidation" in proceedings.nature:
        closed_p = 0.6 if proceedings.days_ago > 60 else 0.1
    closed_days = None
    if u[9] < closed_p and age_days > 60:
        closed_days = 10 + int((min(age_days, 900) - 10) * u[10])
    if age_years > 25 and size > 15.5:
        legal_form = "5599" if u[11] < 0.5 else "5710"
    elif size < 12.3 and u[11] < 0.35:
        legal_form = "1000"
    elif age_years < 6 and u[11] < 0.45:
        legal_form = "5720"
    else:
        legal_form = "5710" if u[12] < 0.55 else "5499"
    n_accounts = 1 + int(u[13] < 0.25 + 0.1 * (size - 13)) + int(u[14] < 0.12)
    return _Latents(
        sector=sector,
        legal_form=legal_form,
        age_days=age_days,
        health=health,
        leverage=leverage,
        size=size,
        season_amp=float(season_amp),
        season_phase=float(season_phase),
        shock=float(shock),
        shock_days_ago=shock_days,
        proceedings=proceedings,
        closed_days_ago=closed_days,
        bank_consent=bool(u[15] < 0.88),
        has_books=bool(u[16] < 0.85),
        n_accounts=min(3, n_accounts),
        history_days=min(HISTORY_DAYS, age_days),
        scenario=None,
    )


def _scenario_latents(lat: _Latents, scenario: str) -> _Latents:
    """Pin the latent factors of a named scenario; the rest stays drawn from the SIREN."""
    ordinary = {
        "health": 0.0,
        "leverage": 0.0,
        "shock": 0.0,
        "shock_days_ago": None,
        "proceedings": None,
        "closed_days_ago": None,
        "bank_consent": True,
        "has_books": True,
        "age_days": max(lat.age_days, 6 * 365),
        "history_days": HISTORY_DAYS,
        "size": max(lat.size, 13.5),
        "scenario": scenario,
    }
    specific: dict[str, dict[str, object]] = {
        "healthy": {
            "health": 1.0,
            "leverage": -0.5,
            "age_days": 9800,
            "size": 14.5,
            "sector": _SECTOR_BY_NAF["25.62B"],
            "legal_form": "5710",
            "n_accounts": 2,
            "season_amp": 0.05,
        },
        "thin_file_startup": {
            "age_days": 92,
            "legal_form": "5720",
            "has_books": False,
            "history_days": 20,
            "n_accounts": 1,
            "size": 12.0,
            "sector": _SECTOR_BY_NAF["62.01Z"],
        },
        "cash_strapped": {
            "health": -1.35,
            "leverage": 1.3,
            "sector": _SECTOR_BY_NAF["56.10A"],
            "n_accounts": 1,
            "legal_form": "5499",
            "size": 13.4,
            "age_days": 4 * 365,
        },
        "collective_proceedings": {
            "health": -0.8,
            "leverage": 0.8,
            "proceedings": Proceedings(
                PROCEEDINGS_KINDS[1].nature,
                PROCEEDINGS_KINDS[1].famille,
                40,
                PROCEEDINGS_KINDS[1].effect,
            ),
        },
        "closed_company": {"closed_days_ago": 200},
        "no_bank_consent": {"bank_consent": False},
        "bank_truncated": {"n_accounts": 1, "size": 14.5},
    }
    fields = {f: getattr(lat, f) for f in _Latents.__slots__}
    fields.update(ordinary)
    fields.update(specific.get(scenario, {}))
    return _Latents(**fields)


def _pd_of(lat: _Latents) -> float:
    """The true 12-month PD: a logistic function of the latent factors."""
    age_years = lat.age_days / 365.25
    logit = (
        PD_INTERCEPT
        + SECTORS[lat.sector].risk
        - PD_HEALTH * lat.health
        + PD_LEVERAGE * lat.leverage
        - PD_SIZE * (lat.size - 13.5)
        + PD_AGE * math.exp(-age_years / PD_AGE_SCALE_YEARS)
        + PD_SHOCK * lat.shock
        + PD_SEASON * lat.season_amp
        + (lat.proceedings.effect if lat.proceedings is not None else 0.0)
        + (PD_CLOSED if lat.closed_days_ago is not None else 0.0)
    )
    return float(min(PD_CAP, max(PD_FLOOR, _sigmoid(logit))))


def _latents(siren: str) -> _Latents:
    lat = _draw_latents(siren)
    scenario = _SCENARIO_BY_SIREN.get(siren)
    return _scenario_latents(lat, scenario) if scenario else lat


def _check(siren: str) -> None:
    if not std_siren.is_valid(siren) or len(siren) != 9:
        raise ValueError(f"not a checksum-valid SIREN: {siren!r}")


def true_pd(siren: str) -> float:
    """The true 12-month PD of a company, without generating its observable data."""
    _check(siren)
    return _pd_of(_latents(siren))


def bank_consent(siren: str) -> bool:
    """Whether the company lets its bank share its data, without generating its data."""
    _check(siren)
    return _latents(siren).bank_consent


def default_label(siren: str, seed: int) -> bool:
    """Whether the company defaults within 12 months in outcome draw `seed`: Bernoulli(true PD)."""
    rng = _rng(siren, f"default:{seed}")
    return bool(rng.random() < true_pd(siren))


def sample_sirens(n: int, seed: int) -> list[str]:
    """n distinct checksum-valid SIRENs, deterministic in seed, never a scenario SIREN."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out: list[str] = []
    seen: set[str] = set(SCENARIOS.values())
    while len(out) < n:
        for body in rng.integers(10_000_000, 100_000_000, size=max(16, n - len(out) + 8)):
            stem = str(int(body))
            s = stem + luhn.calc_check_digit(stem)
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    break
    return out


# --- observable data ---------------------------------------------------------------

_SURNAMES = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFEBVRE",
    "MICHEL",
    "GARCIA",
    "DAVID",
    "BERTRAND",
    "ROUX",
    "VINCENT",
    "FOURNIER",
    "MOREL",
    "GIRARD",
    "ANDRE",
    "MERCIER",
    "DUPONT",
    "LAMBERT",
    "BONNET",
    "FRANCOIS",
    "MARTINEZ",
    "LEGRAND",
    "GARNIER",
    "FAURE",
    "ROUSSEAU",
    "BLANC",
)
_SECTOR_WORDS = {
    "62.01Z": ("DIGITAL", "LOGICIELS", "INFORMATIQUE", "DATA", "CLOUD"),
    "47.11F": ("DISTRIBUTION", "MARCHE", "HYPER", "ALIMENTATION"),
    "41.20A": ("CONSTRUCTION", "BATIMENT", "MAISONS", "HABITAT"),
    "56.10A": ("BISTROT", "RESTAURANT", "BRASSERIE", "TABLE"),
    "46.90Z": ("NEGOCE", "DIFFUSION", "IMPORT", "COMMERCE"),
    "49.41A": ("TRANSPORTS", "LOGISTIQUE", "FRET", "ROUTE"),
    "25.62B": ("MECANIQUE", "USINAGE", "INDUSTRIE", "PRECISION"),
    "70.22Z": ("CONSEIL", "PARTNERS", "STRATEGIE", "ADVISORY"),
}
_CITIES = (
    "PARIS",
    "LYON",
    "MARSEILLE",
    "TOULOUSE",
    "NANTES",
    "LILLE",
    "BORDEAUX",
    "RENNES",
    "STRASBOURG",
    "MONTPELLIER",
    "NICE",
    "GRENOBLE",
    "DIJON",
    "ANGERS",
    "REIMS",
    "TOURS",
)
_MERCHANTS = (
    "AMAZON EU",
    "TOTALENERGIES",
    "SNCF",
    "OUIGO",
    "AIR FRANCE",
    "METRO CASH",
    "LEROY MERLIN",
    "OFFICE DEPOT",
    "FNAC PRO",
    "UBER",
    "IBIS",
    "GOOGLE ADS",
    "OVHCLOUD",
)
_CREDITORS = (
    "EDF ENTREPRISES",
    "ORANGE BUSINESS",
    "LEASECOM",
    "DIAC LOCATION",
    "AXA FRANCE",
    "ENGIE PRO",
    "BNP PARIBAS LEASE",
    "SFR BUSINESS",
)
# (bank code, name, DBIT rendered negative, balance style)
_BANKS: tuple[tuple[str, str, bool, int], ...] = (
    ("30004", "BNP Paribas", True, 0),
    ("30003", "Société Générale", False, 1),
    ("30002", "LCL", True, 2),
    ("10278", "Crédit Mutuel", False, 0),
    ("20041", "La Banque Postale", True, 3),
    ("16958", "Qonto", False, 0),
    ("17515", "Caisse d'Epargne", True, 1),
    ("18206", "Crédit Agricole", False, 2),
)


def french_iban(bank: str, branch: str, account: str) -> str:
    """A valid French IBAN from bank code, branch code and an 11-digit account number."""
    rib_key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
    bban = f"{bank}{branch}{account}{rib_key:02d}"
    return "FR" + std_iban.calc_check_digits("FR00" + bban) + bban


def _headcount_band(n: int) -> str:
    band = "00"
    for code, lower in _HEADCOUNT_BANDS:
        if n >= lower:
            band = code
    return band


def _statements(siren: str, lat: _Latents, cap: int) -> tuple[Statement, ...]:
    rng = _rng(siren, "books")
    sec = SECTORS[lat.sector]
    n_years = min(3, max(0, (lat.age_days - 150) // 365)) if lat.has_books else 0
    if n_years == 0:
        return ()
    z = rng.standard_normal((3, 12))
    u = rng.random((3, 8))
    margin_c = sec.margin + 0.045 * lat.health + 0.03 * float(rng.standard_normal())
    growth = 0.03 + 0.03 * lat.health + 0.04 * float(rng.standard_normal())
    out = []
    for k in range(n_years):
        zk, uk = z[k], u[k]
        rev = math.exp(lat.size - growth * k + 0.05 * zk[0])
        margin = margin_c + 0.025 * zk[1]
        other_income = rev * 0.01 * uk[0]
        ebitda_target = margin * rev
        opex = rev + other_income - ebitda_target
        shares = np.array([sec.purchases, sec.external, 0.015, sec.personnel, 0.004])
        shares = shares * np.exp(0.08 * zk[2:7])
        costs = shares / shares.sum() * opex
        purchases, external, taxes, personnel, other = (float(c) for c in costs)
        fixed_gross = rev * sec.capital_intensity * math.exp(0.3 * zk[7]) + 5_000
        acc_dep = fixed_gross * (0.3 + 0.4 * uk[1])
        dep = fixed_gross * 0.12
        inventory = rev * sec.inventory_days / 365 * math.exp(0.25 * zk[8])
        dso = sec.receivable_days * (1 + 0.15 * max(0.0, -lat.health))
        receivables = rev * 1.2 * dso / 365 * math.exp(0.25 * zk[9])
        dpo = sec.payable_days * (1 + 0.2 * max(0.0, -lat.health))
        payables = (purchases + external) * 1.2 * dpo / 365
        noncash = fixed_gross - acc_dep + inventory + receivables
        debt = noncash * 0.8 * _sigmoid(-1.3 + 0.9 * lat.leverage + 0.35 * zk[10])
        interest = debt * 0.045
        cash_days = math.exp(3.0 + 0.6 * lat.health + 0.6 * zk[11]) - 8.0
        cash = rev * cash_days / 365

        rev_c, oth_c = _cents(rev), _cents(other_income)
        pl_debits: list[tuple[str, str, int]] = [
            (
                "607000" if sec.inventory_days else "604000",
                "Achats de marchandises"
                if sec.inventory_days
                else "Achats d'études et prestations",
                _cents(purchases * 0.98),
            ),
            ("606100", "Fournitures non stockables (eau, énergie)", _cents(purchases * 0.02)),
            ("613200", "Locations immobilières", _cents(external * 0.35)),
            ("615000", "Entretien et réparations", _cents(external * 0.15)),
            ("622600", "Honoraires", _cents(external * 0.2)),
            ("625100", "Voyages et déplacements", _cents(external * 0.1)),
            ("626000", "Frais postaux et de télécommunications", _cents(external * 0.12)),
            ("627000", "Services bancaires et assimilés", _cents(external * 0.08)),
            ("635100", "Impôts directs (CFE, CVAE)", _cents(taxes)),
            ("641000", "Rémunérations du personnel", _cents(personnel * 0.7)),
            ("645000", "Charges de sécurité sociale et de prévoyance", _cents(personnel * 0.3)),
            ("651000", "Redevances pour concessions, brevets, licences", _cents(other)),
            ("681120", "Dotations aux amortissements sur immobilisations corporelles", _cents(dep)),
            ("661100", "Intérêts des emprunts et dettes", _cents(interest)),
        ]
        pl_credits: list[tuple[str, str, int]] = [
            (sec.revenue_account, sec.revenue_label, rev_c),
            ("740000", "Subventions d'exploitation", oth_c // 2),
            ("758000", "Produits divers de gestion courante", oth_c - oth_c // 2),
        ]
        income = sum(c for _, _, c in pl_credits)
        opex_c = sum(c for a, _, c in pl_debits if a[:2] in ("60", "61", "62", "63", "64", "65"))
        dep_c = _cents(dep)
        int_c = _cents(interest)
        ebitda_c = income - opex_c
        ebit_c = ebitda_c - dep_c
        tax_c = max(0, (ebit_c - int_c) // 4)
        pl_debits.append(("695000", "Impôts sur les bénéfices", tax_c))
        ni_c = ebit_c - int_c - tax_c

        fg_c, ad_c = _cents(fixed_gross), _cents(acc_dep)
        fg1, ad1 = fg_c * 7 // 10, ad_c * 7 // 10
        inv_c, rec_c = _cents(inventory), _cents(receivables)
        if cash >= 0:
            bank_c, od_c = _cents(cash) + 1_000_00, 0
        else:
            bank_c, od_c = 500_00 + _cents(rev * 0.002 * uk[2]), _cents(-cash) + 500_00
        till_c = _cents(rev * 0.001 * uk[3]) if sec.card_receipts else 0
        pay_c = _cents(payables)
        staff_c = _cents(personnel * 0.7 / 12 * 0.5)
        social_c = _cents(personnel / 12 * 0.45)
        vat_c = _cents(rev * 0.2 * (1 - sec.purchases) / 12 * (0.5 + uk[4]))
        debt_c = _cents(debt)
        capital_c = {"5720": 1_000_00, "5499": 10_000_00, "5599": 37_000_00, "1000": 0}.get(
            lat.legal_form, 20_000_00 if cap == 0 else 50_000_00
        )
        total_assets_c = fg_c - ad_c + inv_c + rec_c + bank_c + till_c
        current_liab_c = pay_c + staff_c + social_c + tax_c + vat_c + od_c
        total_liab_c = debt_c + current_liab_c
        equity_c = total_assets_c - total_liab_c
        retained_c = equity_c - capital_c - ni_c  # the plug that balances the books
        legal_reserve_c = min(max(0, retained_c), capital_c // 10)

        bs: list[tuple[str, str, int]] = [  # signed balance: debit > 0
            ("101300", "Capital souscrit - appelé, versé", -capital_c),
            ("106100", "Réserve légale", -legal_reserve_c),
            ("164000", "Emprunts auprès des établissements de crédit", -debt_c),
            ("215400", "Matériel industriel", fg1),
            ("218300", "Matériel de bureau et matériel informatique", fg_c - fg1),
            ("281540", "Amortissements du matériel industriel", -ad1),
            ("281830", "Amortissements du matériel de bureau", -(ad_c - ad1)),
            ("421000", "Personnel - Rémunérations dues", -staff_c),
            ("431000", "Sécurité sociale", -social_c),
            ("444000", "État - Impôts sur les bénéfices", -tax_c),
            ("445510", "TVA à décaisser", -vat_c),
        ]
        if lat.legal_form == "1000":
            bs[0] = ("108000", "Compte de l'exploitant", 0)
        rest = retained_c - legal_reserve_c
        if rest >= 0:
            bs.append(("110000", "Report à nouveau (solde créditeur)", -rest))
        else:
            bs.append(("119000", "Report à nouveau (solde débiteur)", -rest))
        if inv_c:
            bs.append(
                (
                    "370000" if sec.revenue_account == "707000" else "310000",
                    "Stocks de marchandises"
                    if sec.revenue_account == "707000"
                    else "Matières premières",
                    inv_c,
                )
            )
        if od_c:
            bs.append(("519000", "Concours bancaires courants", -od_c))
        if till_c:
            bs.append(("530000", "Caisse", till_c))

        lines: list[TrialLine] = []
        # Third-party and bank accounts carry their yearly movements, as a real
        # trial balance does; others show only their balance.
        for acct, label, bal, turnover in (
            ("401000", "Fournisseurs", -pay_c, _cents((purchases + external) * 1.2)),
            ("411000", "Clients", rec_c, _cents(rev * 1.2)),
            ("512000", "Banque", bank_c, _cents(rev * 1.1)),
        ):
            debit = turnover + max(bal, 0)
            credit = turnover + max(-bal, 0)
            lines.append(TrialLine(acct, label, _dec(debit), _dec(credit)))
        for acct, label, bal in bs:
            if bal or acct.startswith("10"):
                lines.append(TrialLine(acct, label, _dec(max(bal, 0)), _dec(max(-bal, 0))))
        for acct, label, c in pl_debits:
            lines.append(TrialLine(acct, label, _dec(c), _dec(0)))
        for acct, label, c in pl_credits:
            lines.append(TrialLine(acct, label, _dec(0), _dec(c)))
        lines.sort(key=lambda line: line.account)

        cash_c = bank_c + till_c
        out.append(
            Statement(
                years_ago=k,
                lines=tuple(lines),
                revenue=_dec(rev_c),
                ebitda=_dec(ebitda_c),
                ebit=_dec(ebit_c),
                net_income=_dec(ni_c),
                total_assets=_dec(total_assets_c),
                current_assets=_dec(inv_c + rec_c + cash_c),
                current_liabilities=_dec(current_liab_c),
                total_liabilities=_dec(total_liab_c),
                equity=_dec(equity_c),
                retained_earnings=_dec(retained_c),
                cash=_dec(cash_c),
                financial_debt=_dec(debt_c + od_c),
                inventory=_dec(inv_c),
                receivables=_dec(rec_c),
                fixed_assets=_dec(fg_c - ad_c),
            )
        )
    return tuple(out)


def _account(
    siren: str, lat: _Latents, idx: int, names: tuple[str, ...], headcount: int
) -> BankAccount:
    rng = _rng(siren, f"bank:{idx}")
    sec = SECTORS[lat.sector]
    h = lat.history_days
    days = np.arange(h)
    monthly = math.exp(lat.size) / 12.0
    daily_ttc = monthly * 12 / 365 * 1.2
    season = 1.0 + lat.season_amp * np.sin(lat.season_phase - TAU * days / 365.0)
    shocked = np.where(
        days < (lat.shock_days_ago if lat.shock_days_ago is not None else -1),
        max(0.1, 1.0 - 0.45 * lat.shock),
        1.0,
    )
    scale = 1.0 if idx == 0 else 0.08
    # (days_ago, cents, kind, label-argument): kinds decide the remittance text
    d_parts: list[np.ndarray] = []
    a_parts: list[np.ndarray] = []
    k_parts: list[np.ndarray] = []

    def add(d: np.ndarray, amounts: np.ndarray, kind: int) -> None:
        d_parts.append(d.astype(np.int64))
        a_parts.append(np.rint(amounts * 100).astype(np.int64))
        k_parts.append(np.full(len(d), kind, dtype=np.int64))

    size_f = math.exp(0.45 * (lat.size - 13.5))
    # customer receipts
    if sec.card_receipts:
        keep = rng.random(h) < 6 / 7
        dd = days[keep]
        amt = (
            daily_ttc
            * 7
            / 6
            * scale
            * season[keep]
            * shocked[keep]
            * rng.lognormal(-0.045, 0.3, len(dd))
        )
        add(dd, amt, 0)
        lam_c = 0.08
    else:
        lam_c = float(np.clip(0.7 * size_f, 0.15, 6.0)) * (1.0 if idx == 0 else 0.25)
    counts = rng.poisson(lam_c * season * shocked)
    dd = np.repeat(days, counts)
    share = 0.1 if sec.card_receipts else 1.0
    amt = daily_ttc * share * scale / lam_c * rng.lognormal(-0.18, 0.6, len(dd))
    add(dd, amt, 1)
    receipts_unshocked = daily_ttc * scale * float(season.sum())

    # fixed monthly outflows (main account only)
    fixed_total = 0.0
    if idx == 0:
        off = int(rng.integers(0, 30))
        month_days = days[(days + off) % 30 == 0]
        payroll = monthly * sec.personnel
        if headcount > 0:
            add(
                month_days,
                np.full(len(month_days), payroll * 0.55) * rng.lognormal(0, 0.03, len(month_days)),
                2,
            )
            md = np.clip(month_days - 12, 0, None)
            md = md[md < h]
            add(md, np.full(len(md), payroll * 0.42) * rng.lognormal(0, 0.05, len(md)), 3)
            fixed_total += payroll * 0.97 * len(month_days)
        md = np.clip(month_days - 6, 0, None)
        vat = monthly * 0.2 * (1 - sec.purchases) * 0.6
        add(md, vat * rng.lognormal(0, 0.2, len(md)), 4)
        rent = monthly * sec.external * 0.35
        md2 = np.clip(month_days - 25, 0, None)
        add(md2, np.full(len(md2), rent), 5)
        fixed_total += (vat + rent) * len(month_days)
        loan = monthly * 12 * 0.5 * _sigmoid(-1.3 + 0.9 * lat.leverage) / 60
        if lat.leverage > -0.5:
            md3 = np.clip(month_days - 3, 0, None)
            add(md3, np.full(len(md3), loan), 6)
        add(month_days, np.full(len(month_days), 25.0 + 10 * (lat.size > 15)), 7)

    # card spend
    cc = rng.poisson(0.8 * (1.0 if idx == 0 else 0.3), h)
    dd = np.repeat(days, cc)
    add(dd, rng.lognormal(math.log(45), 0.9, len(dd)), 8)

    # suppliers absorb what is left so that outflows match the observed margin;
    # the shock lowers receipts but not costs, which is how it shows in the flows.
    margin = sec.margin + 0.05 * lat.health + 0.05 * float(rng.standard_normal())
    lam_s = float(np.clip(0.45 * size_f, 0.1, 4.0)) * (1.0 if idx == 0 else 0.3)
    counts = rng.poisson(np.full(h, lam_s))
    dd = np.repeat(days, counts)
    raw = rng.lognormal(-0.2, 0.65, len(dd))
    target = max(receipts_unshocked * (1 - margin) - fixed_total, 0.15 * receipts_unshocked)
    card_total = float(a_parts[-1].sum()) / 100
    target = max(target - card_total, 0.05 * receipts_unshocked)
    if len(dd):
        add(dd, raw / raw.sum() * target, 9)

    # rejected direct debits: a DBIT then a CRDT of the same amount a day later
    rejections = 0
    if idx == 0 and h > 2:
        lam_r = 8.0 * _sigmoid(-3.2 - 1.6 * lat.health + 0.8 * lat.shock) * h / HISTORY_DAYS
        if lat.scenario == "cash_strapped":
            lam_r = max(lam_r, 5.0)
        rejections = int(rng.poisson(lam_r))
        if lat.scenario == "cash_strapped":
            rejections = max(rejections, 4)
        if rejections:
            rd = rng.integers(2, h, rejections)
            ra = rng.lognormal(math.log(400 * size_f), 0.7, rejections)
            add(rd, ra, 10)
            add(rd - 1, ra, 11)
            add(rd - 1, np.full(rejections, 20.0), 12)

    d_all = np.concatenate(d_parts)
    a_all = np.concatenate(a_parts)
    k_all = np.concatenate(k_parts)
    credit = (k_all <= 1) | (k_all == 11)
    signed = np.where(credit, a_all, -a_all)
    order = np.lexsort((np.arange(len(d_all)), d_all))
    d_all, signed, k_all = d_all[order], signed[order], k_all[order]
    pend = (d_all == 0) & (k_all == 8)

    # choose the closing balance so that the lowest end-of-day balance sits where the
    # company's cash buffer (a noisy function of health) puts it.
    booked = np.where(pend, 0, signed)
    per_day = np.bincount(d_all, weights=booked, minlength=h)[:h]
    rel = -np.concatenate(([0.0], np.cumsum(per_day)[:-1]))  # eod balance minus closing
    if idx == 0:
        buffer = (
            monthly
            * scale
            * (math.exp(-0.9 + 0.75 * lat.health + 0.5 * float(rng.standard_normal())) - 0.25)
        )
        if lat.scenario == "cash_strapped":
            closing = -float(np.quantile(rel, 0.6))  # most days below zero
        else:
            closing = buffer - float(rel.min())
    else:
        closing = monthly * 0.3 * float(rng.random()) - float(rel.min())
    balance_cents = round(closing)

    cust, supp = names[:6], names[6:]
    cust_idx = rng.integers(0, len(cust), len(d_all))
    supp_idx = rng.integers(0, len(supp), len(d_all))
    merch_idx = rng.integers(0, len(_MERCHANTS), len(d_all))
    cred_idx = rng.integers(0, len(_CREDITORS), len(d_all))
    refs = rng.integers(1000, 99999, len(d_all))
    txns: list[Txn] = []
    for i, (d, amt, kind) in enumerate(
        zip(d_all.tolist(), signed.tolist(), k_all.tolist(), strict=True)
    ):
        if kind == 0:
            label = f"REMISE CB {int(refs[i])} DU JOUR"
        elif kind == 1:
            label = f"VIR SEPA {cust[cust_idx[i]]} FACT {int(refs[i])}"
        elif kind == 2:
            label = "VIR SEPA SALAIRES PERSONNEL" if headcount > 1 else "VIR SEPA REMUNERATION"
        elif kind == 3:
            label = f"PRLV SEPA URSSAF COTISATIONS {int(refs[i])}"
        elif kind == 4:
            label = f"PRLV SEPA DGFIP TVA {int(refs[i])}"
        elif kind == 5:
            label = "PRLV SEPA LOYER SCI " + _SURNAMES[int(refs[0]) % len(_SURNAMES)]
        elif kind == 6:
            label = f"PRLV ECHEANCE PRET {siren[-4:]}{idx}"
        elif kind == 7:
            label = "FRAIS TENUE DE COMPTE"
        elif kind == 8:
            label = f"CARTE X{siren[-4:]} {_MERCHANTS[merch_idx[i]]}"
        elif kind == 9:
            label = f"VIR SEPA {supp[supp_idx[i]]} REGLEMENT {int(refs[i])}"
        elif kind == 10:
            label = f"PRLV SEPA {_CREDITORS[cred_idx[i]]} ECH {int(refs[i])}"
        elif kind == 11:
            label = "REJET"  # named after its DBIT below
        else:
            label = "FRAIS REJET PRLV"
        txns.append(Txn(d, amt, label, "PDNG" if pend[i] else "BOOK"))
    # The REJET CRDT is one day newer than its DBIT, so it comes first in newest-first
    # order; the label lookup above needs the DBIT first, hence this fix-up pass.
    if rejections:
        debits = {
            -t.amount_cents: t.remittance.split(" ECH ")[0][10:]
            for t in txns
            if t.remittance.startswith("PRLV SEPA ") and " ECH " in t.remittance
        }
        txns = [
            t._replace(
                remittance=f"REJET PRLV SEPA {debits.get(t.amount_cents, 'INCONNU')}"
                " MOTIF AM04 PROVISION INSUFFISANTE"
            )
            if t.remittance.startswith("REJET")
            else t
            for t in txns
        ]

    bank_code, bank_name, neg, style = _BANKS[int(rng.integers(0, len(_BANKS)))]
    branch = f"{int(rng.integers(0, 100000)):05d}"
    acct_no = f"{int(rng.integers(0, 10**11)):011d}"
    rid = hashlib.sha256(f"{WORLD_VERSION}:account:{siren}:{idx}".encode()).hexdigest()[:20]
    return BankAccount(
        index=idx,
        resource_id=rid,
        iban=french_iban(bank_code, branch, acct_no),
        bank_name=bank_name,
        name=("Compte courant professionnel", "Compte secondaire", "Compte de réserve")[idx],
        negative_debits=neg,
        balance_style=style,
        balance_cents=balance_cents,
        pending_cents=int(signed[pend].sum()),
        transactions=tuple(txns),
    )


def _notices(siren: str, lat: _Latents, n_statements: int) -> tuple[Notice, ...]:
    rng = _rng(siren, "bodacc")
    u = rng.random(12)
    out: list[Notice] = []
    if lat.age_days < 6000:
        out.append(
            Notice(
                "immatriculation",
                max(0, lat.age_days - 10),
                None,
                "Création d'un fonds de commerce",
            )
        )
    n_mod = int(rng.poisson(min(lat.age_days, 3650) / 365.25 * 0.15))
    for i in range(n_mod):
        out.append(
            Notice(
                "modification",
                int(u[i % 12] * min(lat.age_days, 3650)),
                None,
                "Modification du capital social",
            )
        )
    for k in range(min(3, max(0, (lat.age_days - 240) // 365))):
        out.append(
            Notice("dpc", 130 + 365 * k + int(60 * u[k]), None, "Comptes annuels et rapports")
        )
    if lat.proceedings is not None:
        published = max(0, lat.proceedings.days_ago - 3 - int(10 * u[5]))
        out.append(Notice("collective", published, lat.proceedings, "Tribunal de commerce"))
    if lat.closed_days_ago is not None:
        out.append(
            Notice(
                "radiation",
                max(0, lat.closed_days_ago - 10),
                None,
                "Radiation du registre du commerce et des sociétés",
            )
        )
    out.sort(key=lambda n: n.days_ago)
    return tuple(out)


@lru_cache(maxsize=4096)
def company(siren: str) -> Company:
    """The company behind a checksum-valid SIREN; pure and deterministic."""
    _check(siren)
    lat = _latents(siren)
    sec = SECTORS[lat.sector]
    rng = _rng(siren, "identity")
    u = rng.random(8)
    names = tuple(
        f"{_SURNAMES[int(j)]} {w}"
        for j, w in zip(
            rng.integers(0, len(_SURNAMES), 12),
            (
                "SARL",
                "SAS",
                "ET FILS",
                "SA",
                "SAS",
                "EURL",
                "SAS",
                "SARL",
                "DISTRIBUTION",
                "SAS",
                "SERVICES",
                "SA",
            ),
            strict=True,
        )
    )
    words = _SECTOR_WORDS[sec.naf]
    name = f"{_SURNAMES[int(u[0] * len(_SURNAMES))]} {words[int(u[1] * len(words))]}"
    headcount = 0
    if lat.legal_form != "1000" or u[2] < 0.3:
        headcount = int(math.exp(lat.size) / sec.revenue_per_head * math.exp(0.3 * (u[3] - 0.5)))
    band = "NN" if lat.age_days < 365 and headcount == 0 else _headcount_band(headcount)
    revenue = math.exp(lat.size)
    category: str | None
    if lat.age_days < 730:
        category = None
    elif headcount >= 5000 or revenue > 1.5e9:
        category = "GE"
    elif headcount >= 250 or revenue > 5e7:
        category = "ETI"
    else:
        category = "PME"
    statements = _statements(siren, lat, 0 if lat.size < 15 else 1)
    has_books = bool(statements)
    accounts = tuple(_account(siren, lat, i, names, headcount) for i in range(lat.n_accounts))
    return Company(
        siren=siren,
        name=name,
        city=_CITIES[int(u[4] * len(_CITIES))],
        naf=sec.naf,
        legal_form=lat.legal_form,
        age_days=lat.age_days,
        headcount=headcount,
        headcount_band=band,
        category=category,
        health=lat.health,
        leverage=lat.leverage,
        size=lat.size,
        seasonality_amp=lat.season_amp,
        seasonality_phase=lat.season_phase,
        shock=lat.shock,
        shock_days_ago=lat.shock_days_ago,
        active=lat.closed_days_ago is None,
        closed_days_ago=lat.closed_days_ago,
        proceedings=lat.proceedings,
        bank_consent=lat.bank_consent,
        has_books=has_books,
        statements=statements,
        accounts=accounts,
        notices=_notices(siren, lat, len(statements)),
        true_pd=_pd_of(lat),
        scenario=lat.scenario,
        fault=_FAULTS.get(lat.scenario) if lat.scenario else None,
    )
