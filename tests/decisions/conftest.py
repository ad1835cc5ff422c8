"""Fixtures of the audit store tests."""

from __future__ import annotations

import secrets

import pytest

from b2bscore.decisions.crypto import DataKeyring


@pytest.fixture
def keyring() -> DataKeyring:
    """An in-memory keyring with one key."""
    return DataKeyring({"k1": secrets.token_bytes(32)})
