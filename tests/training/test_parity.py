"""Training/serving parity: the features training computes equal the live service's.

Training: world -> render_company -> the adapters' parse_raw -> build_features, in process.
Serving: the sandbox over real HTTP -> gather_sources (no cache) -> build_features.
Same SIREN, same request, same as_of: the two vectors must be equal bit for bit (NaN for
NaN), or the model would be scored on inputs it was not trained on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import numpy as np
import pytest

from b2bscore.features.build import FeatureVector, build_features
from b2bscore.features.catalog import FEATURE_NAMES
from b2bscore.features.types import CreditRequest
from b2bscore.kit.settings import Settings
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.fanout import gather_sources
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import SourceBundle, SourceStatus
from b2bscore.training import world
from b2bscore.training.dataset import company_features

SEED = 2026
# A key unlike training's: tokens must not reach the features, so the vectors still match.
TOKENIZER = Tokenizer(b"parity-test-serving-key-0123456789")
BUDGET_S = 20.0  # generous: this test is about values, not latency
OK = SourceStatus.OK
UNAVAILABLE = SourceStatus.UNAVAILABLE

# Scenario companies whose sandbox answers carry no injected fault, with the statuses the
# service must see (open banking, accounting, registry).
SCENARIOS: dict[str, tuple[SourceStatus, SourceStatus, SourceStatus]] = {
    world.SCENARIOS["healthy"]: (OK, OK, OK),
    world.SCENARIOS["cash_strapped"]: (OK, OK, OK),
    world.SCENARIOS["collective_proceedings"]: (OK, OK, OK),
    world.SCENARIOS["closed_company"]: (OK, OK, OK),
    world.SCENARIOS["thin_file_startup"]: (OK, UNAVAILABLE, OK),
    world.SCENARIOS["no_bank_consent"]: (UNAVAILABLE, OK, OK),
}
SAMPLED = world.sample_sirens(14, SEED + 7)
SIRENS = [*SCENARIOS, *SAMPLED]


@pytest.fixture(scope="module")
async def clients(sandbox_url: str) -> AsyncIterator[ProviderClients]:
    """Provider clients on the sandbox served over real HTTP."""
    pool = ProviderClients.sandbox(sandbox_url, Settings())
    yield pool
    await pool.aclose()


async def _served(
    siren: str, request: CreditRequest, clients: ProviderClients
) -> tuple[FeatureVector, SourceBundle, date]:
    """The service's path: fan-out over HTTP, no cache, then the same build_features."""
    while True:
        as_of = datetime.now(UTC).date()
        sources = await gather_sources(
            siren,
            clients,
            deadline=time.monotonic() + BUDGET_S,
            cache=None,
            tokenizer=TOKENIZER,
            as_of=as_of,
            cache_namespace="parity-test",
        )
        # The sandbox renders as of its own today: retry if the call straddled midnight.
        if datetime.now(UTC).date() == as_of:
            break
    vector = build_features(sources.bank, sources.books, sources.record, request)
    return vector, sources, as_of


def _mismatches(a: FeatureVector, b: FeatureVector) -> dict[str, tuple[float, float]]:
    return {
        name: (float(x), float(y))
        for name, x, y in zip(FEATURE_NAMES, a.values, b.values, strict=True)
        if not np.array_equal(x, y, equal_nan=True)
    }


@pytest.mark.parametrize("siren", SIRENS)
async def test_training_features_equal_served_features(
    clients: ProviderClients, siren: str
) -> None:
    # The request is training's own draw for this company, so both sides see the same one.
    _, request = company_features(siren, SEED)
    served, sources, as_of = await _served(siren, request, clients)
    trained, trained_request = company_features(siren, SEED, as_of=as_of)
    assert trained_request == request

    statuses = tuple(r.status for r in sources.all())
    if siren in SCENARIOS:
        assert statuses == SCENARIOS[siren], [(r.name, r.detail) for r in sources.all()]
    else:
        # Ordinary companies may lack books or consent, never because a call failed.
        assert all(s in (OK, UNAVAILABLE) for s in statuses), statuses
        assert sources.registry.status == OK

    assert served.values.shape == trained.values.shape == (len(FEATURE_NAMES),)
    assert np.array_equal(served.values, trained.values, equal_nan=True), _mismatches(
        served, trained
    )


def test_parity_sample_covers_full_data() -> None:
    """The compared companies include ones with every source, so no feature goes untested."""
    full = 0
    seen = np.zeros(len(FEATURE_NAMES), dtype=bool)
    for siren in SIRENS:
        vector, _ = company_features(siren, SEED)
        seen |= ~np.isnan(vector.values)
        full += int(vector.get("has_bank") == 1.0 and vector.get("has_books") == 1.0)
    assert full >= 10
    assert seen.all(), [n for n, s in zip(FEATURE_NAMES, seen, strict=True) if not s]
