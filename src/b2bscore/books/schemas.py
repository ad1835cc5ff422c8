"""Wire shapes of the books endpoints."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict


class BooksOut(BaseModel):
    """What was stored: the file's fingerprint and the figures the decisions will read."""

    model_config = ConfigDict(frozen=True)

    id: str
    siren: str
    mode: str
    file_name: str
    size_bytes: int
    sha256: str
    created_at: datetime
    closing_date: date
    fiscal_year: int
    lines: int
    entries: int
    balanced: bool
    revenue: str
    result: str
    equity: str
    total_assets: str
    total_liabilities: str
