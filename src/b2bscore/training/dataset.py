"""Training rows built exactly like serving: world -> wire payloads -> adapters -> features.

Each company is rendered in the providers' real wire formats and parsed back with the
adapters' own pure ``parse_raw`` functions before ``build_features`` sees it, so the model
is trained on precisely what the service computes for the same SIREN. A source an adapter
rejects is treated as missing, as the fan-out would.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np

from b2bscore.features.build import FeatureVector, build_features
from b2bscore.features.catalog import FEATURE_NAMES
from b2bscore.features.types import CreditRequest, Product
from b2bscore.sandbox import wire
from b2bscore.sources import accounting as accounting_source
from b2bscore.sources import open_banking as open_banking_source
from b2bscore.sources import registry as registry_source
from b2bscore.sources.errors import SourceError
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import AccountingData, BankData, RegistryData
from b2bscore.training import world

# Features are relative to each source's as_of, so one fixed date loses no generality and
# keeps every build reproducible.
TRAINING_AS_OF = date(2026, 11, 2)
# Tokens never reach the features; a fixed key keeps the parse identical to serving.
_TOKENIZER = Tokenizer(b"b2bscore-training-tokenization-key")
PARALLEL_MIN_ROWS = 2_000
_CHUNK = 256

# Product mix and ticket size (share of annual revenue: median, log-spread, floor, cap).
_PRODUCTS: tuple[tuple[Product, float, float, float, float, float], ...] = (
    (Product.BNPL, 0.30, 0.004, 0.8, 200.0, 50_000.0),
    (Product.INVOICE_FINANCING, 0.25, 0.03, 0.7, 1_000.0, 500_000.0),
    (Product.CREDIT_LINE, 0.25, 0.05, 0.7, 2_000.0, 300_000.0),
    (Product.TERM_LOAN, 0.20, 0.10, 0.8, 5_000.0, 1_000_000.0),
)
_PRODUCT_P = np.cumsum([p[1] for p in _PRODUCTS])


def sample_request(siren: str, seed: int, company: world.Company) -> CreditRequest:
    """A realistic request of this company: product mix and amount scaled to its size."""
    body = int(siren) * 1_000_003 + seed
    rng = np.random.Generator(np.random.PCG64([body & 0xFFFFFFFF, body >> 32, 0xB2B]))
    u, z = float(rng.random()), float(rng.standard_normal())
    product, _, share, spread, floor, cap = _PRODUCTS[
        min(int(np.searchsorted(_PRODUCT_P, u * _PRODUCT_P[-1])), len(_PRODUCTS) - 1)
    ]
    revenue = math.exp(company.size)
    amount = min(max(revenue * share * math.exp(spread * z), floor), cap)
    return CreditRequest(
        siren=siren,
        requested_amount=Decimal(int(round(amount, -2))).quantize(Decimal("0.01")),
        product=product,
    )


def parse_company(
    company: world.Company, as_of: date = TRAINING_AS_OF
) -> tuple[BankData | None, AccountingData | None, RegistryData | None]:
    """The normalized sources of a company, through its wire payloads and the adapters."""
    raw: dict[str, Any] = wire.render_company(company, as_of)
    bank = books = record = None
    try:
        if raw.get("open_banking") is not None:
            bank = open_banking_source.parse_raw(raw["open_banking"], _TOKENIZER, as_of)
    except SourceError:
        bank = None
    try:
        if raw.get("accounting") is not None:
            books = accounting_source.parse_raw(raw["accounting"], as_of)
    except SourceError:
        books = None
    try:
        if raw.get("registry") is not None:
            record = registry_source.parse_raw(raw["registry"], as_of)
    except SourceError:
        record = None
    return bank, books, record


def company_features(
    siren: str, seed: int, as_of: date = TRAINING_AS_OF
) -> tuple[FeatureVector, CreditRequest]:
    """The feature vector and request of one SIREN, as used for training."""
    company = world.company(siren)
    request = sample_request(siren, seed, company)
    bank, books, record = parse_company(company, as_of)
    return build_features(bank, books, record, request), request


def _rows(args: tuple[Sequence[str], int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sirens, seed = args
    x = np.empty((len(sirens), len(FEATURE_NAMES)), dtype=np.float64)
    y = np.empty(len(sirens), dtype=np.float64)
    pd = np.empty(len(sirens), dtype=np.float64)
    for i, siren in enumerate(sirens):
        vector, _ = company_features(siren, seed)
        x[i] = vector.values
        y[i] = 1.0 if world.default_label(siren, seed) else 0.0
        pd[i] = world.true_pd(siren)
    return x, y, pd


Progress = Callable[[int, int], None]  # (companies done, companies in all)


def build_dataset_for(
    sirens: Sequence[str], seed: int, workers: int = 2, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, default labels (outcome draw ``seed``) and true PDs of given SIRENs."""
    chunks = [(list(sirens[i : i + _CHUNK]), seed) for i in range(0, len(sirens), _CHUNK)]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    done = 0

    def collect(part: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        nonlocal done
        parts.append(part)
        done += len(part[1])
        if progress is not None:
            progress(done, len(sirens))

    if workers > 1 and len(sirens) >= PARALLEL_MIN_ROWS:
        # spawn, not fork: the caller may hold threads (server, test runner) and locks.
        with mp.get_context("spawn").Pool(workers) as pool:
            for part in pool.imap(_rows, chunks, chunksize=1):  # in order, as they finish
                collect(part)
    else:
        for chunk in chunks:
            collect(_rows(chunk))
    if not parts:
        empty = np.empty(0, dtype=np.float64)
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float64), empty, empty.copy()
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def build_dataset(
    n: int, seed: int, workers: int = 2, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(X, y, sirens, true_pd) for ``world.sample_sirens(n, seed)``, built like serving."""
    sirens = world.sample_sirens(n, seed)
    x, y, true_pd = build_dataset_for(sirens, seed, workers, progress)
    return x, y, sirens, true_pd
