"""Raw payloads packed once (canonical JSON, gzip) and joined into the audit payload."""

from __future__ import annotations

import gzip
from decimal import Decimal

import orjson

from b2bscore.kit.packed import is_packed, join_object, pack_json, payload_json, unpack_json


def test_payloads_pack_canonically() -> None:
    value = {"b": {"amount": Decimal("12.30"), "missing": float("nan"), 7: "int key"}}
    plain = payload_json({**value, "a": {"tags": {"y", "x"}}})
    assert plain.index(b'"a"') < plain.index(b'"b"')
    assert orjson.loads(plain) == {
        "a": {"tags": ["x", "y"]},
        "b": {"7": "int key", "amount": "12.30", "missing": None},
    }
    # Same content, other insertion order: same bytes, so the same digest.
    assert pack_json({"a": {"tags": {"x", "y"}}, **value}) == pack_json(
        {**value, "a": {"tags": {"y", "x"}}}
    )


def test_joined_members_unpack_to_the_canonical_object() -> None:
    parts = {
        "registry": {"sirene": {"siren": "111111118"}, "bodacc": None},
        "open_banking": {"accounts": [{"resourceId": "abc", "balance": "12.30"}] * 50},
    }
    joined = join_object({name: pack_json(value) for name, value in parts.items()})
    assert is_packed(joined)
    # The joined members are one gzip stream whose content is exactly the canonical JSON
    # of the whole object, as if it had been encoded in one go.
    assert gzip.decompress(joined) == payload_json(parts)
    assert unpack_json(joined) == parts
    assert unpack_json(join_object({})) == {}
    # Joining is deterministic: the same parts give the same bytes (and digest).
    assert join_object({n: pack_json(v) for n, v in reversed(parts.items())}) == joined


def test_plain_json_rows_still_unpack() -> None:
    assert not is_packed(b'{"a":1}')
    assert unpack_json(b'{"a":1}') == {"a": 1}
