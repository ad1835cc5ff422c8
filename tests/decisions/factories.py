"""Builders of audit records and tenants for the decisions tests."""

from __future__ import annotations

import secrets
from dataclasses import replace
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.service import DecisionRecord, hash_request
from b2bscore.kit.packed import pack_json
from b2bscore.tenants.models import Tenant
from b2bscore.tenants.service import create_tenant


async def new_tenant(session: AsyncSession, label: str = "t") -> Tenant:
    """A tenant with a unique name, flushed in session."""
    return await create_tenant(session, f"{label}-{secrets.token_hex(6)}")


def make_record(tenant_id: str, **overrides: Any) -> DecisionRecord:
    """A plausible decision record; overrides replace fields."""
    body = {"siren": "552100554", "requested_amount": "25000.00", "product": "invoice_financing"}
    record = DecisionRecord(
        tenant_id=tenant_id,
        mode="test",
        siren="552100554",
        product="invoice_financing",
        requested_amount=Decimal("25000.00"),
        request_hash=hash_request(body),
        request=body,
        features={
            "revenue_eur": 1_250_000.0,
            "cash_days": 41.5,
            "big_integral_float": 1e16,
            "missing": float("nan"),
            "equity": Decimal("120000.50"),
        },
        model_id="lgbm-2026-11",
        model_version="1.0.0",
        probability_of_default=0.012345678901234567,
        score=812,
        grade="A",
        decision="approve",
        proposed_limit=Decimal("20000"),
        reasons=[{"code": "CASH_BUFFER", "direction": "favourable", "impact": 0.42}],
        sources={
            "open_banking": {"status": "ok", "latency_ms": 87.2, "as_of": "2026-11-23"},
            "registry": {"status": "timeout", "latency_ms": 300.0, "as_of": None},
        },
        degraded=True,
        latency_ms=143.25,
        payloads={
            "open_banking": pack_json({"accounts": [{"resourceId": "abc", "balance": "12.30"}]})
        },
    )
    return replace(record, **overrides)
