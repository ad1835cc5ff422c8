"""Rough measure: degraded answers with a consent's fresh snapshot vs without (issue 12).

In one process on the embedded default (SQLite, in-process cache): a realistic-profile
sandbox over real HTTP, N world companies. Tenant "cold" scores each company without any
consent (the bank is called inside the budget, cold cache); tenant "consented" takes each
company through the sandbox bank's consent page, syncs once, then scores it from the
snapshot, then again with the snapshots made two days old (each decision asks the bank
with the consent's token: the live consent path). Prints the degraded shares, what made
answers degraded, and where the bank data came from.
Usage: python -m loadtests.consent_degraded [N]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from tests.consents.conftest import LENDER, answer_at_bank, lender_app
from tests.servers import serve_in_thread

from b2bscore.app import build_state, close_state, create_app
from b2bscore.consents.models import Consent
from b2bscore.consents.service import allow_redirect, sync_consent
from b2bscore.consents.tasks import sync_tools
from b2bscore.kit.db import upgrade_database_async
from b2bscore.kit.settings import Settings
from b2bscore.sandbox.app import create_sandbox_app
from b2bscore.sandbox.profile import SandboxProfile
from b2bscore.sources.banks import sandbox_bank_of
from b2bscore.tenants import service as tenants
from b2bscore.tenants.models import utcnow
from b2bscore.training.world import company, sample_sirens

REPO = Path(__file__).resolve().parents[1]


async def measure(count: int, sandbox_url: str) -> None:
    """Score count companies without, then with, a consent; print degraded shares."""
    var = Path(tempfile.mkdtemp(prefix="b2bscore-consents-"))
    settings = Settings(
        var_dir=var,
        sandbox_url=sandbox_url,
        models_dir=REPO / "models",
        rate_limit_per_minute=1_000_000,
        consent_callback_url="http://api.test/v1/consents/callback",
        jobs_in_process=False,
    )
    await upgrade_database_async(settings.resolved_database_url)
    app = create_app(settings)
    app.state.b2b = state = await build_state(settings)
    async with state.sessionmaker() as session:
        cold = await tenants.create_tenant(session, "cold")
        warm = await tenants.create_tenant(session, "consented")
        _, cold_key = await tenants.create_api_key(session, cold, "test", ["score:write"])
        _, warm_key = await tenants.create_api_key(
            session, warm, "test", ["score:write", "decisions:read"]
        )
        await allow_redirect(session, warm.id, "test", LENDER, utcnow())
        await session.commit()
    mounts = {
        "all://api.test": httpx.ASGITransport(app=app),
        "all://lender.test": httpx.ASGITransport(app=lender_app()),
    }
    sirens = sample_sirens(count, 4242)
    labels = ("without", "with", "stale")
    degraded = dict.fromkeys(labels, 0)
    bank_missing = dict.fromkeys(labels, 0)  # open banking not usable in the answer
    # The world gives ~16 % of companies no books (accounting 404): degraded by definition.
    with_books = sum(1 for s in sirens if company(s).statements)
    degraded_with_books = dict.fromkeys(labels, 0)
    # Why answers were degraded: each unusable source as "source status (detail)".
    causes: dict[str, Counter[str]] = {label: Counter() for label in labels}
    # With consent: where the bank data came from (snapshot, bank, stale snapshot).
    bank_origin: dict[str, Counter[str]] = {label: Counter() for label in labels}
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    async with httpx.AsyncClient(mounts=mounts, base_url="http://api.test", timeout=30) as api:

        async def score(key: str, siren: str, label: str) -> None:
            started = time.perf_counter()
            r = await api.post(
                "/v1/score",
                json={"siren": siren, "requested_amount": "20000.00", "product": "term_loan"},
                headers={"Authorization": f"Bearer {key}"},
            )
            latencies[label].append((time.perf_counter() - started) * 1000)
            answer = r.json()
            degraded[label] += bool(answer["degraded"])
            if company(siren).statements:
                degraded_with_books[label] += bool(answer["degraded"])
            sources = answer["sources"]
            bank_missing[label] += sources["open_banking"]["status"] not in ("ok", "cached")
            for name, source in sources.items():
                stale = (source.get("snapshot") or {}).get("stale")
                if source["status"] not in ("ok", "cached") or stale:
                    detail = (source["detail"] or "").split(":")[0]
                    causes[label][f"{name} {source['status']} ({detail})"] += 1
            snapshot = sources["open_banking"].get("snapshot") or {}
            origin = str(snapshot.get("source", "none")) + (
                " stale" if snapshot.get("stale") else ""
            )
            bank_origin[label][origin] += 1

        for siren in sirens:
            await score(cold_key, siren, "without")
        async with httpx.AsyncClient() as http:
            tools = sync_tools(state, http)
            for siren in sirens:
                r = await api.post(
                    "/v1/consents",
                    json={
                        "siren": siren,
                        "bank": sandbox_bank_of(siren),
                        "scopes": ["balances", "transactions"],
                        "redirect_uri": LENDER,
                    },
                    headers={"Authorization": f"Bearer {warm_key}"},
                )
                back = await answer_at_bank(api, r.json()["authorization_url"])
                consent_id = back.json()["consent_id"]
                for _ in range(5):  # the realistic bank fails now and then: the job retries
                    try:
                        if await sync_consent(tools, consent_id, utcnow()) == "synced":
                            break
                    except Exception as error:
                        print(f"sync retry for {siren}: {type(error).__name__}", file=sys.stderr)
        for siren in sirens:
            await score(warm_key, siren, "with")
        # The same consents two days later without a sync: each decision asks the bank
        # with the consent's token inside its budget (the live consent path).
        async with state.sessionmaker() as session:
            for consent in (await session.scalars(sa.select(Consent))).all():
                if consent.snapshot_at is not None:
                    consent.snapshot_at -= timedelta(days=2)
            await session.commit()
        for siren in sirens:
            await score(warm_key, siren, "stale")
    await close_state(state)
    for label in ("without", "with", "stale"):
        lat = sorted(latencies[label])
        print(
            f"{label}: {degraded[label]}/{count} degraded "
            f"({100 * degraded[label] / count:.1f} %), "
            f"open banking missing {100 * bank_missing[label] / count:.1f} %, "
            f"p50 {lat[len(lat) // 2]:.0f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.0f} ms"
        )
        print(
            f"    companies with books: {degraded_with_books[label]}/{with_books} degraded "
            f"({100 * degraded_with_books[label] / max(1, with_books):.1f} %)"
        )
        for cause, seen in causes[label].most_common():
            print(f"    {seen:4d}  {cause}")
        print(f"    bank data from: {dict(bank_origin[label])}")
    scenario = {s for s, c in ((s, company(s)) for s in sirens) if c.fault is not None}
    print(f"companies with a scenario fault in the sample: {len(scenario)}/{count}")


def main() -> None:
    """Run the measure against a realistic sandbox served in a thread."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    os.environ.setdefault("B2BSCORE_SANDBOX_PROFILE", "realistic")
    with serve_in_thread(create_sandbox_app(SandboxProfile.preset("realistic"))) as url:
        asyncio.run(measure(count, url))


if __name__ == "__main__":
    main()
