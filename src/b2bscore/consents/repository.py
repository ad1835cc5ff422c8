"""Typed access to consents; every lender-facing query is scoped to a tenant and a mode."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.consents.models import Consent, ConsentEvent, ConsentRedirect


class ConsentRepository:
    """Consents, their events and the redirect allow-list, in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str, mode: str, consent_id: str) -> Consent | None:
        """A tenant's consent in one mode (None: absent or another tenant's)."""
        consent = await self.session.get(Consent, consent_id)
        if consent is None or consent.tenant_id != tenant_id or consent.mode != mode:
            return None
        return consent

    async def locked(self, consent_id: str) -> Consent | None:
        """A consent, its row locked until the transaction ends (PostgreSQL)."""
        query = sa.select(Consent).where(Consent.id == consent_id).with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def by_state(self, state_hash: str) -> Consent | None:
        """The pending consent a state belongs to (locked: a state is used once)."""
        query = sa.select(Consent).where(Consent.state_hash == state_hash).with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def page(
        self, tenant_id: str, mode: str, limit: int, before: tuple[datetime, str] | None
    ) -> Sequence[Consent]:
        """A tenant's consents, newest first, after a (created_at, id) cursor."""
        query = sa.select(Consent).where(Consent.tenant_id == tenant_id, Consent.mode == mode)
        if before is not None:
            query = query.where(sa.tuple_(Consent.created_at, Consent.id) < before)
        query = query.order_by(Consent.created_at.desc(), Consent.id.desc()).limit(limit)
        return (await self.session.scalars(query)).all()

    async def for_decision(self, tenant_id: str, mode: str, siren: str) -> sa.Row[Any] | None:
        """The company's active consent with the freshest snapshot (one indexed read)."""
        query = (
            sa.select(
                Consent.id,
                Consent.bank_id,
                Consent.granted_scopes,
                Consent.snapshot_at,
                Consent.snapshot_key_id,
                Consent.snapshot_nonce,
                Consent.snapshot_ciphertext,
                Consent.access_expires_at,
                Consent.tokens_key_id,
                Consent.tokens_nonce,
                Consent.tokens_ciphertext,
            )
            .where(
                Consent.tenant_id == tenant_id,
                Consent.mode == mode,
                Consent.siren == siren,
                Consent.status == "active",
            )
            .order_by(Consent.snapshot_at.desc().nulls_last(), Consent.activated_at.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).first()  # type: ignore[return-value]

    async def active_keys(self) -> list[tuple[str, str, str]]:
        """(tenant, mode, SIREN) of every active consent."""
        query = sa.select(Consent.tenant_id, Consent.mode, Consent.siren).where(
            Consent.status == "active"
        )
        return [(t, m, s) for t, m, s in (await self.session.execute(query)).all()]

    async def due_for_sync(
        self, older_than: datetime, limit: int, *, after: str = ""
    ) -> Sequence[str]:
        """Active consents whose last sync is older than older_than (or that never synced),
        by id after `after`."""
        query = (
            sa.select(Consent.id)
            .where(
                Consent.status == "active",
                sa.or_(Consent.last_synced_at.is_(None), Consent.last_synced_at < older_than),
                Consent.id > after,
            )
            .order_by(Consent.id)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def never_synced(self, mode: str, limit: int, *, after: str = "") -> Sequence[str]:
        """Active consents of a mode that have no sync yet, by id after `after`."""
        query = (
            sa.select(Consent.id)
            .where(
                Consent.status == "active",
                Consent.mode == mode,
                Consent.last_synced_at.is_(None),
                Consent.id > after,
            )
            .order_by(Consent.id)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def active_sirens(self, tenant_id: str, mode: str) -> set[str]:
        """The SIRENs with an active consent of a tenant in one mode."""
        query = sa.select(Consent.siren).where(
            Consent.tenant_id == tenant_id, Consent.mode == mode, Consent.status == "active"
        )
        return set((await self.session.scalars(query)).all())

    async def expiring(self, before: datetime, limit: int) -> Sequence[Consent]:
        """Active consents expiring before `before` not yet announced, locked."""
        query = (
            sa.select(Consent)
            .where(
                Consent.status == "active",
                Consent.expires_at < before,
                Consent.expiring_notified.is_(False),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(query)).all()

    async def expired(self, now: datetime, limit: int) -> Sequence[Consent]:
        """Active consents past their expiry, locked."""
        query = (
            sa.select(Consent)
            .where(Consent.status == "active", Consent.expires_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(query)).all()

    async def stale_pending(self, now: datetime, limit: int) -> Sequence[Consent]:
        """Pending consents past their life, locked: the user never came back from the
        bank (state expired), or the code's exchange never succeeded (code expired)."""
        query = (
            sa.select(Consent)
            .where(
                Consent.status == "pending",
                sa.or_(
                    Consent.code_expires_at <= now,
                    sa.and_(Consent.code_expires_at.is_(None), Consent.state_expires_at <= now),
                ),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(query)).all()

    async def to_purge(self, now: datetime, limit: int) -> Sequence[Consent]:
        """Expired consents whose data retention has ended and that still hold data."""
        query = (
            sa.select(Consent)
            .where(
                Consent.purge_after <= now,
                sa.or_(
                    Consent.snapshot_ciphertext.is_not(None),
                    Consent.tokens_ciphertext.is_not(None),
                ),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(query)).all()

    def add_event(self, event: ConsentEvent) -> None:
        """Append one event of the consent audit trail."""
        self.session.add(event)

    async def events(self, consent_id: str) -> Sequence[ConsentEvent]:
        """A consent's audit trail, oldest first."""
        query = (
            sa.select(ConsentEvent)
            .where(ConsentEvent.consent_id == consent_id)
            .order_by(ConsentEvent.at, ConsentEvent.id)
        )
        return (await self.session.scalars(query)).all()

    async def redirect_allowed(self, tenant_id: str, mode: str, uri: str) -> bool:
        """True when the tenant allows this exact redirect_uri in this mode."""
        found = await self.session.get(ConsentRedirect, (tenant_id, mode, uri))
        return found is not None

    async def allow_redirect(self, tenant_id: str, mode: str, uri: str, now: datetime) -> None:
        """Add a redirect_uri to a tenant's allow-list (idempotent)."""
        if not await self.redirect_allowed(tenant_id, mode, uri):
            self.session.add(
                ConsentRedirect(tenant_id=tenant_id, mode=mode, uri=uri, created_at=now)
            )
            await self.session.flush()

    async def redirects(self, tenant_id: str, mode: str) -> Sequence[ConsentRedirect]:
        """A tenant's allowed redirect_uris in one mode, oldest first."""
        query = (
            sa.select(ConsentRedirect)
            .where(ConsentRedirect.tenant_id == tenant_id, ConsentRedirect.mode == mode)
            .order_by(ConsentRedirect.created_at, ConsentRedirect.uri)
        )
        return (await self.session.scalars(query)).all()

    async def remove_redirect(self, tenant_id: str, mode: str, uri: str) -> bool:
        """Take a redirect_uri off a tenant's allow-list; False when it was not on it."""
        found = await self.session.get(ConsentRedirect, (tenant_id, mode, uri))
        if found is None:
            return False
        await self.session.delete(found)
        await self.session.flush()
        return True
