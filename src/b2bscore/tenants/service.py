"""Tenants and API keys: creation, listing, revocation and authentication."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.cache import Cache
from b2bscore.tenants.keys import MODES, KeyMode, display_prefix, generate_key, hash_key, mode_of
from b2bscore.tenants.models import ApiKey, Tenant, utcnow
from b2bscore.tenants.repository import ApiKeyRepository, TenantRepository
from b2bscore.tenants.revocation import mark_revoked

Scope = Literal["score:write", "decisions:read", "admin"]
SCOPES: Final[frozenset[str]] = frozenset({"score:write", "decisions:read", "admin"})

# last_used_at is informational: refreshing it at most once a minute keeps writes off
# the authentication path almost always.
_LAST_USED_GRANULARITY: Final = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and key behind a valid bearer token."""

    tenant_id: str
    tenant_name: str
    key_id: str
    mode: KeyMode
    scopes: frozenset[str]
    rate_limit_per_minute: int | None
    expires_at: datetime | None = None
    # Live keys score with no live provider configured only when the tenant allows it.
    allow_partial_data: bool = False

    def has_scope(self, scope: str) -> bool:
        """True when the key carries scope; `admin` carries every scope."""
        return scope in self.scopes or "admin" in self.scopes


def _checked_scopes(scopes: Iterable[str]) -> list[str]:
    result = sorted(set(scopes))
    unknown = [s for s in result if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    if not result:
        raise ValueError("a key needs at least one scope")
    return result


def _checked_mode(mode: str) -> KeyMode:
    for known in MODES:
        if mode == known:
            return known
    raise ValueError(f"unknown key mode {mode!r}: expected one of {', '.join(MODES)}")


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    """The tenant with this name, created if it does not exist yet (caller commits)."""
    repository = TenantRepository(session)
    existing = await repository.get_by_name(name)
    if existing is not None:
        return existing
    tenant = Tenant(name=name, created_at=utcnow())
    session.add(tenant)
    try:
        await session.flush()
    except IntegrityError:
        # Lost a creation race (an admin operation, so rare): the session is rolled back
        # and the winner's row returned.
        await session.rollback()
        existing = await repository.get_by_name(name)
        if existing is None:
            raise
        return existing
    return tenant


async def create_api_key(
    session: AsyncSession,
    tenant: Tenant,
    mode: str,
    scopes: Iterable[str],
    name: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key for tenant and its plaintext, which is never stored (caller commits)."""
    key_mode = _checked_mode(mode)
    plaintext = generate_key(key_mode)
    api_key = ApiKey(
        tenant_id=tenant.id,
        mode=key_mode,
        prefix=display_prefix(plaintext),
        key_hash=hash_key(plaintext),
        scopes=_checked_scopes(scopes),
        name=name,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(api_key)
    await session.flush()
    return api_key, plaintext


async def list_api_keys(session: AsyncSession, tenant_id: str) -> Sequence[ApiKey]:
    """Every key of the tenant, revoked ones included, oldest first."""
    return await ApiKeyRepository(session).list_for_tenant(tenant_id)


async def revoke_api_key(
    session: AsyncSession,
    key_id: str,
    *,
    tenant_id: str | None = None,
    cache: Cache | None = None,
) -> ApiKey | None:
    """Revoke a key (idempotent; caller commits); None when no such key.

    With the shared cache, every process refuses the key from the next request on
    (see tenants.revocation); without it, other processes that authenticated the key
    recently keep accepting it for up to the principal cache TTL (see tenants.auth).
    """
    from b2bscore.tenants.auth import principal_cache

    api_key = await ApiKeyRepository(session).get(key_id, tenant_id=tenant_id)
    if api_key is None:
        return None
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        await session.flush()
    # Announced before the caller commits: should the commit fail, the key is refused
    # for a few minutes more than it should be, never accepted longer (fail closed).
    if cache is not None:
        await mark_revoked(cache, api_key.key_hash)
    principal_cache.forget(api_key.key_hash)
    return api_key


async def set_rate_limit(
    session: AsyncSession, tenant_id: str, per_minute: int | None
) -> Tenant | None:
    """Set (or with None, reset to the default) the tenant's requests per minute, per mode."""
    if per_minute is not None and per_minute < 1:
        raise ValueError("a rate limit must allow at least one request per minute")
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        return None
    tenant.rate_limit_per_minute = per_minute
    await session.flush()
    return tenant


async def set_partial_data(session: AsyncSession, tenant_id: str, allow: bool) -> Tenant | None:
    """Allow (or forbid) the tenant's live keys to score with no live provider configured."""
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        return None
    tenant.allow_partial_data = allow
    await session.flush()
    return tenant


async def authenticate(session: AsyncSession, presented_key: str) -> Principal | None:
    """The principal behind a presented key, or None when it is unknown, revoked or expired.

    Malformed keys are refused without touching the database. When the key's
    last_used_at is stale, the refreshed stamp is committed here.
    """
    mode = mode_of(presented_key)
    if mode is None:
        return None
    presented_hash = hash_key(presented_key)
    found = await ApiKeyRepository(session).get_with_tenant_by_hash(presented_hash)
    if found is None:
        return None
    api_key, tenant = found
    # The index lookup already matched; the constant-time comparison guards against a
    # backend whose text comparison is looser than byte equality (collations, padding).
    if not hmac.compare_digest(api_key.key_hash.encode(), presented_hash.encode()):
        return None
    now = utcnow()
    if api_key.revoked_at is not None or api_key.mode != mode:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return None
    if api_key.last_used_at is None or now - api_key.last_used_at >= _LAST_USED_GRANULARITY:
        await ApiKeyRepository(session).touch(
            api_key.id, now, unless_since=now - _LAST_USED_GRANULARITY
        )
        await session.commit()
    return Principal(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        key_id=api_key.id,
        mode=mode,
        scopes=frozenset(api_key.scopes),
        rate_limit_per_minute=tenant.rate_limit_per_minute,
        expires_at=api_key.expires_at,
        allow_partial_data=tenant.allow_partial_data,
    )
