"""Standing test consents of the embedded default: the sandbox's consented companies.

A decision that calls the bank inside its budget depends on how busy the server is: the
open-banking calls are sequential, and on a saturated machine they are cut at the
deadline, so the same company gets a degraded review under load and a full decision
otherwise. Live lenders avoid that with consents synced ahead (docs/CONSENTS.md). The
embedded default does the same for its own sandbox tenant: every company of the sandbox
directory whose bank holds its consent gets an active test consent at its sandbox bank,
under the public `sandbox-SIREN` token the sandbox grants to pre-consented companies, and
the job engine syncs it like any other consent. The decision then reads the snapshot.
Companies outside the directory, or whose sync failed, are asked in the request as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.consents.models import Consent
from b2bscore.consents.repository import ConsentRepository
from b2bscore.consents.service import _audit, _seal_tokens, queue_sync
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.kit.jobs import Jobs
from b2bscore.kit.settings import Settings
from b2bscore.sources.banks import sandbox_bank_of
from b2bscore.tenants.models import new_id
from b2bscore.training import world

# Not a URL: nobody is sent anywhere, the consent was never asked through the flow.
STANDING_REDIRECT = "urn:b2bscore:sandbox-standing-consent"
STANDING_SCOPES = ("balances", "transactions")
# The sandbox directory: the scenario companies and the companies of the load tests'
# mix (loadtests/mix.py draws its SIRENs from the same seed and count).
DIRECTORY_SEED = 20_261_101
DIRECTORY_SIZE = 5_200
# Syncs waiting at most on the embedded default's queue, and the pause between waves.
WAVE_WINDOW = 192
WAVE_PAUSE_SECONDS = 0.5


def sandbox_directory(size: int = DIRECTORY_SIZE) -> list[str]:
    """The sandbox's published companies: the scenarios, then `size` drawn SIRENs (0: none)."""
    if size <= 0:
        return []
    return list(world.SCENARIOS.values()) + world.sample_sirens(size, DIRECTORY_SEED)


async def ensure_standing_consents(
    session: AsyncSession,
    settings: Settings,
    keyring: DataKeyring,
    *,
    tenant_id: str,
    key_id: str,
    sirens: Iterable[str],
    now: datetime,
) -> int:
    """Active test consents for the consented companies that lack one; how many (no commit)."""
    held = await ConsentRepository(session).active_sirens(tenant_id, "test")
    created = 0
    for siren in sirens:
        if siren in held or not world.bank_consent(siren):
            continue
        held.add(siren)
        consent = Consent(
            id=new_id(),
            tenant_id=tenant_id,
            mode="test",
            siren=siren,
            bank_id=sandbox_bank_of(siren),
            status="active",
            requested_scopes=list(STANDING_SCOPES),
            granted_scopes=list(STANDING_SCOPES),
            accounts=[],
            redirect_uri=STANDING_REDIRECT,
            state_hash=None,
            state_expires_at=now,
            created_by=key_id,
            created_at=now,
            updated_at=now,
            activated_at=now,
            expires_at=now + timedelta(days=settings.consent_validity_days),
            expiring_notified=False,
            # No expiry: the sandbox's public token is not refreshed (no refresh token).
            access_expires_at=None,
        )
        _seal_tokens(keyring, consent, {"access_token": f"sandbox-{siren}"})
        session.add(consent)
        _audit(
            session,
            consent,
            actor="system",
            action="activated",
            now=now,
            detail={"standing": "sandbox directory"},
        )
        created += 1
    await session.flush()
    return created


@dataclass(frozen=True, slots=True)
class Wave:
    """What one wave did: syncs queued, the last id seen, and whether nothing is left."""

    queued: int
    after: str
    done: bool


async def queue_one_wave(
    jobs: Jobs,
    due: Callable[[str, int], Awaitable[Sequence[str]]],
    *,
    after: str = "",
    window: int = WAVE_WINDOW,
) -> Wave:
    """Queue a sync of the next consents `due(after_id, limit)` names, if the queue has room.

    At most about `window` syncs wait at a time (retries waiting for their backoff count):
    thousands of consents must neither flood the embedded default's in-memory queue (its
    connector rescans every waiting job for each job it hands out: 1,000 waiting syncs
    stalled the event loop that also serves the requests) nor starve the requests. The
    caller goes on from `after` (consents in id order, each queued once per pass: one
    whose syncs all fail waits for the next pass).
    """
    depth = await jobs.queue_depth()
    if depth.get("consents", {}).get("todo", 0) >= window:
        return Wave(0, after, done=False)
    ids = await due(after, window)
    if not ids:
        return Wave(0, after, done=True)
    queued = 0
    for consent_id in ids:
        queued += await queue_sync(jobs, consent_id)
    return Wave(queued, ids[-1], done=False)
