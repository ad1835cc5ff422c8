"""A realistic audit record: one sandbox company's raw payloads, features and reasons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from b2bscore.decisions.service import DecisionRecord
from b2bscore.kit.packed import pack_json
from b2bscore.sandbox import wire
from b2bscore.training import world


def record_factory() -> Callable[[str], DecisionRecord]:
    """A function giving a tenant's record, the size and shape of a real decision's row."""
    siren = world.sample_sirens(1, 99)[0]
    # The raw provider payloads are the largest part of a row; packed once, as the fan-out
    # packs a record when it arrives (kit.packed).
    raw = wire.render_company(world.company(siren), datetime.now(UTC).date())
    payloads = {name: pack_json(value) for name, value in raw.items() if value}
    features = {f"f{i}": 0.5 * i for i in range(60)}
    reasons = [
        {
            "code": "LIQUIDITY",
            "family": "liquidity",
            "direction": "adverse",
            "contribution": 0.4,
            "feature": "cash_ratio",
            "value": 0.1,
            "label_fr": "x" * 60,
            "label_en": "y" * 60,
        }
    ] * 4

    def record(tenant_id: str) -> DecisionRecord:
        return DecisionRecord(
            tenant_id=tenant_id,
            mode="test",
            siren=siren,
            product="term_loan",
            requested_amount=Decimal("25000.00"),
            request_hash="0" * 64,
            request={"siren": siren, "requested_amount": "25000.00", "product": "term_loan"},
            features=features,
            model_id="bench",
            model_version="1",
            probability_of_default=0.0123,
            score=700,
            grade="B",
            decision="approve",
            proposed_limit=Decimal("25000.00"),
            reasons=reasons,
            sources={"open_banking": {"status": "ok", "latency_ms": 1.0}},
            degraded=False,
            latency_ms=12.0,
            payloads=payloads,
        )

    return record
