"""/v1/monitored-companies and /v1/batches."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["portfolio"])
