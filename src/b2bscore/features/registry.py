"""Registry features: age, legal form, sector, headcount, status and legal events.

Categorical registry codes become small ordinals so that the model and its monotone
constraints see numbers, never strings.
"""

from __future__ import annotations

import math

from b2bscore.sources.bodacc import lifecycle
from b2bscore.sources.types import RegistryData

NAMES: tuple[str, ...] = (
    "company_age_years",
    "legal_form_group",
    "headcount_band",
    "sector_risk_group",
    "registry_active",
    "collective_proceedings",
    "days_since_collective",
)

_NAN = math.nan
_MISSING: tuple[float, ...] = (_NAN,) * len(NAMES)
COLLECTIVE_LOOKBACK_DAYS = 5 * 365 + 1

# INSEE trancheEffectifsUniteLegale, in increasing order of headcount.
HEADCOUNT_ORDINAL: dict[str, float] = {
    "NN": 0.0,
    "00": 0.0,
    "01": 1.0,
    "02": 2.0,
    "03": 3.0,
    "11": 4.0,
    "12": 5.0,
    "21": 6.0,
    "22": 7.0,
    "31": 8.0,
    "32": 9.0,
    "41": 10.0,
    "42": 11.0,
    "51": 12.0,
    "52": 13.0,
    "53": 14.0,
}

# NAF rev. 2 division -> risk group 0 (lowest) .. 4 (highest), after the relative
# failure rates by sector published by Banque de France (construction, hospitality and
# retail above average; health, finance and public services well below).
_SECTOR_GROUPS: dict[int, tuple[int, ...]] = {
    0: (*range(64, 67), 84, 85, *range(86, 89), 99),
    1: (*range(1, 4), *range(35, 40), *range(58, 64), 68, *range(69, 76)),
    2: (*range(5, 10), *range(10, 34), 45, 46, *range(77, 83), *range(94, 99)),
    3: (47, *range(49, 54), *range(90, 94)),
    4: (*range(41, 44), 55, 56),
}
SECTOR_RISK_GROUP: dict[int, float] = {
    div: float(group) for group, divs in _SECTOR_GROUPS.items() for div in divs
}
DEFAULT_SECTOR_GROUP = 2.0


def legal_form_group(code: str | None) -> float:
    """0 sole trader, 1 SARL/EURL, 2 SAS/SASU, 3 SA, 4 other; NaN when unknown."""
    if not code:
        return _NAN
    if code.startswith("1"):
        return 0.0
    if code.startswith("54"):
        return 1.0
    if code.startswith("57"):
        return 2.0
    if code.startswith(("55", "56")):
        return 3.0
    return 4.0


def sector_risk_group(naf: str | None) -> float:
    """Risk group of the NAF division (e.g. 62.01Z -> 62 -> 1); NaN when unknown."""
    if not naf or len(naf) < 2 or not naf[:2].isdigit():
        return _NAN
    return SECTOR_RISK_GROUP.get(int(naf[:2]), DEFAULT_SECTOR_GROUP)


def registry_features(record: RegistryData | None) -> tuple[float, ...]:
    """Registry features in ``NAMES`` order; all NaN without a registry record."""
    if record is None:
        return _MISSING
    as_of = record.as_of
    age = _NAN
    if record.created_on is not None:
        age = max((as_of - record.created_on).days / 365.25, 0.0)
    headcount = _NAN
    if record.headcount_band is not None:
        headcount = HEADCOUNT_ORDINAL.get(record.headcount_band, _NAN)

    # The latest procedure's start (its opening notice; later notices of the same
    # procedure do not move it) and whether it is still running: a closed procedure keeps
    # its days since but no longer counts as ongoing.
    opened_on, ongoing = record.proceedings_opened_on, record.ongoing_proceeding
    if ongoing is None:
        state = lifecycle(record.announcements)
        opened_on, ongoing = state.opened_on, state.ongoing
    days_since = _NAN
    if opened_on is not None and (as_of - opened_on).days >= 0:
        days_since = float((as_of - opened_on).days)
    recent = ongoing and not math.isnan(days_since) and days_since <= COLLECTIVE_LOOKBACK_DAYS
    collective = 1.0 if recent else 0.0

    return (
        age,
        legal_form_group(record.legal_form),
        headcount,
        sector_risk_group(record.naf),
        1.0 if record.active else 0.0,
        collective,
        days_since,
    )
