"""Canonical serialization of the raw payloads that are digested and encrypted."""

from __future__ import annotations

from decimal import Decimal

import orjson

from b2bscore.decisions.service import serialize_payloads


def test_payloads_serialize_canonically() -> None:
    payloads = {
        "b": {"amount": Decimal("12.30"), "missing": float("nan"), 7: "int key"},
        "a": {"tags": {"y", "x"}},
    }
    plaintext = serialize_payloads(payloads)
    assert plaintext.index(b'"a"') < plaintext.index(b'"b"')
    assert orjson.loads(plaintext) == {
        "a": {"tags": ["x", "y"]},
        "b": {"7": "int key", "amount": "12.30", "missing": None},
    }
    # Same content, other insertion order: same bytes, so the same digest.
    assert serialize_payloads(dict(reversed(payloads.items()))) == plaintext
