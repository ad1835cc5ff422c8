"""The sandbox world moves: events that change a company as its providers would show it.

`b2bscore sandbox event SIREN KIND` (or `POST /sandbox/v1/events` on a running sandbox)
records an event in a small store, a JSON-lines file (B2BSCORE_SANDBOX_EVENTS_FILE,
default var/sandbox_events.jsonl) that every sandbox process reads. From then on:

- `proceedings_opened`: BODACC publishes a collective-proceedings announcement
  (familleavis `collective`, a `jugement` of redressement judiciaire) dated that day;
- `closed`: Sirene shows a new period with etatAdministratifUniteLegale `C` from that day;
- `cash_squeeze`: the bank shows rejected direct debits with their fees and a large tax
  debit that takes the closing balance below zero.

The world itself stays a pure function of the SIREN: the events are applied on top of it
(`moved_company`), so removing the store puts every company back as it was.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send
from stdnum.fr import siren as std_siren

from b2bscore.training.world import (
    PROCEEDINGS_KINDS,
    BankAccount,
    Company,
    Notice,
    Proceedings,
    Txn,
    company,
)

EventKind = Literal["proceedings_opened", "closed", "cash_squeeze"]
KINDS: Final[tuple[str, ...]] = ("proceedings_opened", "closed", "cash_squeeze")
ENV_FILE: Final = "B2BSCORE_SANDBOX_EVENTS_FILE"
# A sandbox process looks at the store at most this often.
CHECK_SECONDS: Final = 0.1


@dataclass(frozen=True, slots=True)
class SandboxEvent:
    """One change of the sandbox world."""

    siren: str
    kind: str
    on: date


def default_path() -> Path:
    """The store's path: B2BSCORE_SANDBOX_EVENTS_FILE, else under B2BSCORE_VAR_DIR (var/)."""
    explicit = os.environ.get(ENV_FILE)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("B2BSCORE_VAR_DIR", "var")) / "sandbox_events.jsonl"


class EventStore:
    """The events of the sandbox world, in a JSON-lines file shared by its processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._by_siren: dict[str, tuple[SandboxEvent, ...]] = {}
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call listener whenever the events change (to drop rendered payloads)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def record(self, siren: str, kind: str, on: date | None = None) -> SandboxEvent:
        """Append an event (ValueError for an invalid SIREN or an unknown kind)."""
        if not std_siren.is_valid(siren):
            raise ValueError(f"not a valid SIREN: {siren!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}: expected one of {', '.join(KINDS)}")
        event = SandboxEvent(std_siren.compact(siren), kind, on or datetime.now(UTC).date())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"siren": event.siren, "kind": kind, "on": event.on.isoformat()})
        # One small O_APPEND write per event: lines of concurrent writers never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)
        self.refresh(force=True)
        return event

    def refresh(self, *, force: bool = False) -> None:
        """Reload the store if the file changed (checked at most every CHECK_SECONDS)."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        with self._lock:
            by_siren: dict[str, list[SandboxEvent]] = {}
            if stamp is not None:
                for raw in self.path.read_bytes().splitlines():
                    if not raw.strip():
                        continue
                    item = orjson.loads(raw)
                    event = SandboxEvent(
                        item["siren"], item["kind"], date.fromisoformat(item["on"])
                    )
                    by_siren.setdefault(event.siren, []).append(event)
            self._by_siren = {k: tuple(v) for k, v in by_siren.items()}
            self._stamp = stamp
        for listener in self._listeners:
            listener()

    def events(self, siren: str) -> tuple[SandboxEvent, ...]:
        """The events of one company, oldest first."""
        return self._by_siren.get(siren, ())

    def sirens(self, kind: str) -> list[str]:
        """The companies with at least one event of kind (the BODACC feed's, for one)."""
        return sorted(
            s for s, events in self._by_siren.items() if any(e.kind == kind for e in events)
        )

    def company(self, siren: str) -> Company:
        """The world's company with its events applied."""
        return moved_company(company(siren), self.events(siren), datetime.now(UTC).date())


def moved_company(base: Company, events: Iterable[SandboxEvent], as_of: date) -> Company:
    """base as its providers show it after events (pure)."""
    moved = base
    for event in events:
        days_ago = max(0, (as_of - event.on).days)
        if event.kind == "closed":
            moved = dataclasses.replace(moved, active=False, closed_days_ago=days_ago)
        elif event.kind == "proceedings_opened":
            kind = PROCEEDINGS_KINDS[1]  # redressement judiciaire, the most frequent
            proceedings = Proceedings(kind.nature, kind.famille, days_ago, kind.effect)
            notice = Notice(
                "collective", days_ago, proceedings, "Jugement d'ouverture (sandbox event)"
            )
            moved = dataclasses.replace(
                moved, proceedings=proceedings, notices=(notice, *moved.notices)
            )
        elif event.kind == "cash_squeeze" and moved.accounts:
            main, *others = moved.accounts
            moved = dataclasses.replace(moved, accounts=(_squeezed(main, days_ago), *others))
    return moved


def _squeezed(account: BankAccount, days_ago: int) -> BankAccount:
    """Rejected direct debits with fees, and a tax debit that overdraws the account."""
    outflow = sum(-t.amount_cents for t in account.transactions if t.amount_cents < 0)
    monthly = max(outflow // 3, 500_000)
    extra: list[Txn] = []
    for i in range(6):
        day = days_ago + 1 + 2 * i
        amount = monthly // 12
        extra.append(Txn(day, amount, f"REJET PRLV SEPA FOURNISSEUR ECH {9000 + i}", "BOOK"))
        extra.append(Txn(day + 1, -amount, f"PRLV SEPA FOURNISSEUR ECH {9000 + i}", "BOOK"))
        extra.append(Txn(day, -2000, "FRAIS REJET PRLV", "BOOK"))
    tax = abs(account.balance_cents) + monthly
    extra.append(Txn(days_ago, -tax, "PRLV SEPA DGFIP MISE EN DEMEURE", "BOOK"))
    fees = 6 * 2000
    transactions = tuple(sorted((*extra, *account.transactions), key=lambda t: t.days_ago))
    return dataclasses.replace(
        account,
        transactions=transactions,
        balance_cents=account.balance_cents - tax - fees,
    )


class RecordEvent(BaseModel):
    """An event to apply to a sandbox company."""

    siren: str
    kind: EventKind
    on: date | None = None


def admin_router(store: EventStore) -> APIRouter:
    """`POST /sandbox/v1/events`: record an event on a running sandbox (public test data)."""
    router = APIRouter()

    @router.post("/sandbox/v1/events", status_code=201)
    async def record_event(body: RecordEvent) -> dict[str, Any]:
        """Record one event; the providers show it from the next request on."""
        try:
            event = store.record(body.siren, body.kind, body.on)
        except ValueError as error:
            from fastapi import HTTPException

            raise HTTPException(422, str(error)) from error
        return {"siren": event.siren, "kind": event.kind, "on": event.on.isoformat()}

    @router.get("/sandbox/v1/events/{siren}")
    async def list_events(siren: str) -> dict[str, Any]:
        """The events applied to one company."""
        store.refresh()
        return {
            "siren": siren,
            "events": [{"kind": e.kind, "on": e.on.isoformat()} for e in store.events(siren)],
        }

    return router


class RefreshEvents:
    """Pure ASGI middleware: look for new events (a stat, at most every 100 ms) per request."""

    def __init__(self, app: ASGIApp, store: EventStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.store.refresh()
        await self.app(scope, receive, send)
