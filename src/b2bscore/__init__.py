"""Instant, explainable B2B credit scoring."""
