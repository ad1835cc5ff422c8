"""Background work of the portfolio: monitoring sweeps and batches."""

from __future__ import annotations
