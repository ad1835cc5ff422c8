"""The three sources of one request in parallel, under one absolute deadline.

Every source ends as a SourceResult: whatever an adapter raises becomes a status with a
short detail, and a source still running at the deadline is cancelled and reported as a
timeout. The caller gets its bundle at the deadline at the latest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from b2bscore.kit.cache import Cache
from b2bscore.kit.metrics import SOURCE_LATENCY, SOURCE_STATUS
from b2bscore.kit.packed import pack_json
from b2bscore.sources import accounting, open_banking, registry
from b2bscore.sources.cache import SourceCache
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.errors import SourceAbsent, SourceError, SourceUnavailable
from b2bscore.sources.sirene import SireneQuota
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import (
    AccountingData,
    BankData,
    RegistryData,
    SourceBundle,
    SourceName,
    SourceResult,
    SourceStatus,
)

log = logging.getLogger(__name__)

Data = BankData | AccountingData | RegistryData
Fetch = Callable[[], Awaitable[dict[str, Any]]]
Parse = Callable[[Mapping[str, Any], date], Data]
# The accounting raw record of the books a lender uploaded for a SIREN, or None.
UploadedBooks = Callable[[str], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class ConsentedBank:
    """The bank data a lender's consent gave one decision (see consents.service)."""

    data: BankData
    packed: bytes  # the minimised normalised record, packed once for the audit row
    detail: str  # where it came from: "snapshot", "bank (consent)", "stale snapshot (...)"
    info: Mapping[str, Any]  # what the answer says of it (scoring.schemas.SnapshotOut)
    # Older than the freshness limit: the bank could not be asked in time. Used, and the
    # answer is degraded.
    stale: bool = False


# The lender's consent for a SIREN: its bank data for this decision, or None (no active
# consent: the bank is asked as without one). Raises SourceError when the consent's bank
# failed and nothing else is usable.
BankSnapshot = Callable[[str], Awaitable[ConsentedBank | None]]


def _valid_siren(siren: str) -> bool:
    return len(siren) == 9 and siren.isascii() and siren.isdigit()


def _fetcher(
    name: SourceName,
    siren: str,
    clients: ProviderClients,
    deadline: float,
    cache: Cache | None = None,
    uploaded_books: UploadedBooks | None = None,
) -> Fetch:
    """The fetch of one source, raising SourceUnavailable when it cannot be asked at all."""

    async def fetch() -> dict[str, Any]:
        if name is SourceName.OPEN_BANKING:
            bank = clients.bank_client(siren)
            if bank is None:
                raise SourceUnavailable("not configured")
            token = clients.consent_token(siren)
            if token is None:
                raise SourceUnavailable("no consent")
            return await open_banking.fetch_open_banking(bank, token, deadline=deadline)
        if name is SourceName.ACCOUNTING:
            if uploaded_books is not None:
                # Books the lender uploaded for this company come before the provider's.
                uploaded = await uploaded_books(siren)
                if uploaded is not None:
                    return uploaded
            if clients.accounting is None:
                raise SourceUnavailable("not configured")
            return await accounting.fetch_accounting(clients.accounting, siren)
        if clients.sirene is None:
            raise SourceUnavailable("not configured")
        quota = None
        if cache is not None and clients.sirene_per_minute is not None:
            quota = SireneQuota(cache, clients.sirene_per_minute)
        return await registry.fetch_registry(
            clients.sirene, clients.bodacc, siren, quota=quota, deadline=deadline
        )

    return fetch


def _parser(name: SourceName, tokenizer: Tokenizer) -> Parse:
    if name is SourceName.OPEN_BANKING:
        return lambda raw, as_of: open_banking.parse_raw(raw, tokenizer, as_of)
    if name is SourceName.ACCOUNTING:
        return accounting.parse_raw
    return registry.parse_raw


def _detail(data: Data) -> str | None:
    # What a usable source still lacks (BODACC down, malformed records dropped), or where
    # it came from when that is not the provider (the lender's own books).
    if isinstance(data, RegistryData):
        return data.note
    if isinstance(data, AccountingData) and data.origin == "upload":
        return "books uploaded by the lender"
    if isinstance(data, BankData):
        return open_banking.dropped_detail(data)
    return None


class _Run:
    """State shared by the source tasks of one fan-out."""

    def __init__(
        self,
        siren: str,
        clients: ProviderClients,
        cache: SourceCache | None,
        tokenizer: Tokenizer,
        as_of: date,
        namespace: str,
        *,
        deadline: float,
        kit_cache: Cache | None = None,
        uploaded_books: UploadedBooks | None = None,
        accounting_namespace: str | None = None,
        bank_snapshot: BankSnapshot | None = None,
    ) -> None:
        self.siren = siren
        self.clients = clients
        self.cache = cache
        self.tokenizer = tokenizer
        self.as_of = as_of
        self.namespace = namespace
        self.kit_cache = kit_cache
        self.deadline = deadline
        self.uploaded_books = uploaded_books
        self.accounting_namespace = accounting_namespace or namespace
        self.bank_snapshot = bank_snapshot
        self.writes: list[asyncio.Task[None]] = []

    async def source(self, name: SourceName) -> SourceResult:
        """One source, end to end; never raises (cancellation aside)."""
        started = time.perf_counter()
        parse = _parser(name, self.tokenizer)
        # Uploaded books belong to one tenant: their cache entry must be that tenant's.
        namespace = self.accounting_namespace if name is SourceName.ACCOUNTING else self.namespace
        try:
            if name is SourceName.OPEN_BANKING and self.bank_snapshot is not None:
                # The lender's consent comes first: its fresh snapshot spares the bank any
                # call; without one its bank is asked with its token.
                consented = await self.bank_snapshot(self.siren)
                if consented is not None:
                    return SourceResult(
                        name=name,
                        status=SourceStatus.CACHED if consented.stale else SourceStatus.OK,
                        latency_ms=_ms(started),
                        as_of=consented.data.as_of,
                        detail=consented.detail,
                        data=consented.data,
                        packed_raw=consented.packed,
                        snapshot=consented.info,
                        stale=consented.stale,
                    )
            if self.cache is not None:
                hit = await self.cache.get(namespace, name, self.siren)
                if hit is not None and hit.absent is not None:
                    # The provider said lately that it has nothing (no consent, no books).
                    cached_reason = f"{hit.absent} (cached)"
                    return _failed(name, SourceStatus.UNAVAILABLE, cached_reason, started)
                if hit is not None:
                    if hit.parsed is None:
                        try:
                            raw = hit.raw()
                            hit.parsed = parse(raw, hit.as_of)
                            hit.detail = _detail(hit.parsed)
                        except SourceError:
                            hit = None  # written by another version of the parser: fetch afresh
                    if hit is not None:
                        return SourceResult(
                            name=name,
                            status=SourceStatus.CACHED,
                            latency_ms=_ms(started),
                            as_of=hit.as_of,
                            detail=hit.detail,
                            data=hit.parsed,
                            packed_raw=hit.packed_raw,
                        )
            try:
                raw = await _fetcher(
                    name,
                    self.siren,
                    self.clients,
                    self.deadline,
                    self.kit_cache,
                    self.uploaded_books,
                )()
            except SourceAbsent as error:
                if self.cache is not None:
                    self.writes.append(
                        asyncio.create_task(
                            self.cache.put_absent(namespace, name, self.siren, error.reason)
                        )
                    )
                raise
            packed_raw = pack_json(raw) if raw else b""
            try:
                data = parse(raw, self.as_of)
            except SourceError as error:
                # Keep what the provider sent: the audit must show the malformed payload.
                return _failed(name, error.status, error.reason, started, packed_raw)
            detail = _detail(data)
            if self.cache is not None:
                # Written beside the request rather than in it; the fan-out waits for
                # writes only while its deadline allows.
                self.writes.append(
                    asyncio.create_task(
                        self.cache.put(
                            namespace, name, self.siren, packed_raw, self.as_of, data, detail
                        )
                    )
                )
            return SourceResult(
                name=name,
                status=SourceStatus.OK,
                latency_ms=_ms(started),
                as_of=self.as_of,
                detail=detail,
                data=data,
                packed_raw=packed_raw,
            )
        except SourceError as error:
            return _failed(name, error.status, error.reason, started)
        except Exception as error:
            log.exception("source %s failed unexpectedly for %s", name.value, self.siren)
            return _failed(name, SourceStatus.ERROR, f"internal: {type(error).__name__}", started)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _failed(
    name: SourceName,
    status: SourceStatus,
    detail: str,
    started: float,
    packed_raw: bytes = b"",
) -> SourceResult:
    return SourceResult(
        name=name, status=status, latency_ms=_ms(started), detail=detail, packed_raw=packed_raw
    )


def _observe(result: SourceResult) -> None:
    labels = {"source": result.name.value, "status": result.status.value}
    SOURCE_LATENCY.labels(**labels).observe(result.latency_ms / 1000)
    SOURCE_STATUS.labels(**labels).inc()


async def _cancel(tasks: set[asyncio.Task[Any]] | list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def gather_sources(
    siren: str,
    clients: ProviderClients | None,
    *,
    deadline: float,
    cache: Cache | None,
    tokenizer: Tokenizer,
    as_of: date,
    cache_namespace: str,
    freshness_seconds: Mapping[SourceName, float] | None = None,
    uploaded_books: UploadedBooks | None = None,
    accounting_namespace: str | None = None,
    bank_snapshot: BankSnapshot | None = None,
) -> SourceBundle:
    """The three sources of siren, each with its status, by deadline (time.monotonic()).

    clients None (no provider configured for this mode) makes every source unavailable, but
    for the lender's uploaded books.
    uploaded_books, when given, is asked for the lender's own books before the accounting
    provider; accounting_namespace then keeps their cache entries apart per tenant.
    bank_snapshot, when given, is asked for a consent's fresh synced snapshot before the
    bank (inside the open-banking task: it runs beside the other sources).
    """
    started = time.perf_counter()
    order = (SourceName.OPEN_BANKING, SourceName.ACCOUNTING, SourceName.REGISTRY)
    if clients is None:
        if uploaded_books is None:
            return _bundle(
                {n: _failed(n, SourceStatus.UNAVAILABLE, "not configured", started) for n in order}
            )
        # No provider for this mode, but the lender's own books may be there.
        clients = ProviderClients(None, None, None, None)
    if not _valid_siren(siren):
        return _bundle(
            {n: _failed(n, SourceStatus.UNAVAILABLE, "invalid siren", started) for n in order}
        )
    source_cache = SourceCache(cache, tokenizer, freshness_seconds) if cache is not None else None
    run = _Run(
        siren,
        clients,
        source_cache,
        tokenizer,
        as_of,
        cache_namespace,
        kit_cache=cache,
        deadline=deadline,
        uploaded_books=uploaded_books,
        accounting_namespace=accounting_namespace,
        bank_snapshot=bank_snapshot,
    )
    tasks = {name: asyncio.create_task(run.source(name)) for name in order}
    try:
        done, pending = await asyncio.wait(
            tasks.values(), timeout=max(0.0, deadline - time.monotonic())
        )
    except BaseException:
        # The request itself was cancelled: take the providers' calls down with it.
        await _cancel(set(tasks.values()))
        await _cancel(run.writes)
        raise
    await _cancel(pending)
    results: dict[SourceName, SourceResult] = {}
    for name, task in tasks.items():
        if task in done:
            results[name] = task.result()
        else:
            results[name] = SourceResult(
                name=name,
                status=SourceStatus.TIMEOUT,
                latency_ms=_ms(started),
                detail="deadline",
            )
    await _settle_writes(run.writes, deadline)
    return _bundle(results)


async def _settle_writes(writes: list[asyncio.Task[None]], deadline: float) -> None:
    if not writes:
        return
    finished, late = await asyncio.wait(writes, timeout=max(0.0, deadline - time.monotonic()))
    await _cancel(list(late))
    for task in finished:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("source cache write failed: %s", type(error).__name__)


def _bundle(results: Mapping[SourceName, SourceResult]) -> SourceBundle:
    for result in results.values():
        _observe(result)
    return SourceBundle(
        open_banking=results[SourceName.OPEN_BANKING],
        accounting=results[SourceName.ACCOUNTING],
        registry=results[SourceName.REGISTRY],
    )
