"""The registry on PostgreSQL: verification first, audited events, rollback, notices."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.cache import create_cache
from b2bscore.model import registry
from b2bscore.model.bundle import BundleError
from b2bscore.model.serving import CANARY_BUCKETS, ServingModels, canary_bucket
from b2bscore.training import world
from tests.model.registry_helpers import BAD, CORRUPT, GOOD, LIVE_DEFAULT, make_models_dir


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.mktemp("models"))


class TestVerification:
    def test_good_bundle_verifies(self, models_dir: Path) -> None:
        bundle = registry.verify(registry.resolve(models_dir, GOOD))
        assert bundle.model_id == GOOD

    def test_corrupted_bundle_is_refused(self, models_dir: Path) -> None:
        with pytest.raises(BundleError, match=r"sha256 mismatch for model\.txt"):
            registry.verify(registry.resolve(models_dir, CORRUPT))

    def test_unknown_version_is_refused(self, models_dir: Path) -> None:
        with pytest.raises(registry.RegistryError):
            registry.resolve(models_dir, "2099.1.1")

    def test_next_version_never_reuses_a_name(self, models_dir: Path) -> None:
        model_id, version = registry.next_version(models_dir)
        assert (model_id, version) == ("b2b-lgbm-2026.11.10", "2026.11.10")
        assert not (models_dir / model_id).exists()


class TestPromotion:
    async def test_promote_then_rollback_with_audited_events(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        first = await registry.promote(db_session, models_dir, LIVE_DEFAULT, actor="ops:alice")
        second = await registry.promote(
            db_session, models_dir, "2026.11.9", actor="ops:bob", reason="better AUC"
        )
        assert (second.from_model, second.to_model) == (LIVE_DEFAULT, GOOD)
        assert second.detail["reason"] == "better AUC"
        assert (await registry.assignments(db_session))["live"].model_id == GOOD

        back = await registry.rollback(db_session, models_dir, actor="ops:carol")
        assert (back.action, back.from_model, back.to_model) == ("rollback", GOOD, LIVE_DEFAULT)
        assert (await registry.assignments(db_session))["live"].model_id == LIVE_DEFAULT
        assert back.prev_hash == second.row_hash
        assert second.prev_hash == first.row_hash
        assert await registry.verify_events(db_session) is None
        history = await registry.events(db_session)
        assert [e.actor for e in history[:3]] == ["ops:carol", "ops:bob", "ops:alice"]

    async def test_corrupted_bundle_refused_and_live_stays(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        await registry.promote(db_session, models_dir, LIVE_DEFAULT, actor="ops")
        before = await registry.latest_event_id(db_session)
        with pytest.raises(BundleError):
            await registry.promote(db_session, models_dir, CORRUPT, actor="ops")
        assert (await registry.assignments(db_session))["live"].model_id == LIVE_DEFAULT
        assert await registry.latest_event_id(db_session) == before

    async def test_promoting_the_live_bundle_again_is_refused(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        await registry.promote(db_session, models_dir, LIVE_DEFAULT, actor="ops")
        with pytest.raises(registry.RegistryError, match="already live"):
            await registry.promote(db_session, models_dir, LIVE_DEFAULT, actor="ops")

    async def test_nothing_to_roll_back_to(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        with pytest.raises(registry.RegistryError):
            await registry.rollback(db_session, models_dir, actor="ops")
        await registry.promote(db_session, models_dir, GOOD, actor="ops")
        with pytest.raises(registry.RegistryError, match="no previous live version"):
            await registry.rollback(db_session, models_dir, actor="ops")

    async def test_first_promotion_rolls_back_to_the_start_up_default(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        await registry.promote(db_session, models_dir, GOOD, actor="ops", default_live=LIVE_DEFAULT)
        back = await registry.rollback(db_session, models_dir, actor="ops")
        assert (back.from_model, back.to_model) == (GOOD, LIVE_DEFAULT)

    async def test_events_are_insert_only(self, db_session: AsyncSession, models_dir: Path) -> None:
        await registry.promote(db_session, models_dir, LIVE_DEFAULT, actor="ops")
        with pytest.raises(DBAPIError, match="insert-only"):
            async with db_session.begin_nested():
                await db_session.execute(text("UPDATE model_events SET actor = 'mallory'"))


class TestRoles:
    async def test_shadow_and_canary_on_and_off(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        await registry.set_shadow(db_session, models_dir, GOOD, actor="ops")
        await registry.set_canary(
            db_session, models_dir, BAD, actor="ops", percent=10, tenants=["t-1"]
        )
        assigned = await registry.assignments(db_session)
        assert assigned["shadow"].model_id == GOOD
        assert (assigned["canary"].model_id, assigned["canary"].percent) == (BAD, 10)
        assert assigned["canary"].tenants == ["t-1"]
        off = await registry.set_canary(db_session, models_dir, None, actor="ops")
        assert (off.action, off.from_model, off.to_model) == ("canary_off", BAD, None)
        await registry.set_shadow(db_session, models_dir, None, actor="ops")
        assert await registry.assignments(db_session) == {}

    async def test_corrupted_bundle_cannot_be_shadow_or_canary(
        self, db_session: AsyncSession, models_dir: Path
    ) -> None:
        with pytest.raises(BundleError):
            await registry.set_shadow(db_session, models_dir, CORRUPT, actor="ops")
        with pytest.raises(BundleError):
            await registry.set_canary(db_session, models_dir, CORRUPT, actor="ops", percent=5)


async def test_notice_goes_to_redis(redis_url: str) -> None:
    cache = create_cache(redis_url)
    try:
        await registry.notify(cache, 42)
        assert await cache.get(registry.NOTICE_KEY) == b"42"
    finally:
        await cache.close()
    client = redis.Redis.from_url(redis_url)
    assert client.ttl(registry.NOTICE_KEY) > 0
    client.close()


class TestCanarySplit:
    def test_bucket_is_stable_and_documented(self) -> None:
        # sha256("111111118") read as a big-endian integer of its first 8 bytes, mod 100.
        import hashlib

        digest = hashlib.sha256(b"111111118").digest()
        assert canary_bucket("111111118") == int.from_bytes(digest[:8], "big") % 100
        assert canary_bucket("111111118") == canary_bucket("111111118")

    def test_split_follows_the_percentage(self, models_dir: Path) -> None:
        live = registry.verify(models_dir / LIVE_DEFAULT)
        canary = registry.verify(models_dir / GOOD)
        serving = ServingModels(live=live, canary=canary, canary_percent=20)
        sirens = world.sample_sirens(5000, 7)
        chosen = [serving.for_request(s, "tenant") for s in sirens]
        share = sum(b is canary for b in chosen) / len(sirens)
        assert 0.18 < share < 0.22
        # Same company, same answer, every time.
        assert all(
            serving.for_request(s, "tenant") is b for s, b in zip(sirens, chosen, strict=True)
        )
        assert all(0 <= canary_bucket(s) < CANARY_BUCKETS for s in sirens[:100])

    def test_named_tenant_always_gets_the_candidate(self, models_dir: Path) -> None:
        live = registry.verify(models_dir / LIVE_DEFAULT)
        canary = registry.verify(models_dir / GOOD)
        serving = ServingModels(live=live, canary=canary, canary_tenants=frozenset({"t-1"}))
        assert all(serving.for_request(s, "t-1") is canary for s in ("111111118", "444444442"))
        assert serving.for_request("111111118", "t-2") is live
        assert ServingModels(live=live).for_request("111111118", "t-1") is live
