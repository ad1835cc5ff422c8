"""The canonical JSON that row hashes are computed over: pinned, since a change breaks chains."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b2bscore.decisions.chain import RowContent, canonical_json, compute_row_hash, jsonable
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.service import link_into_chain, prepare_row
from tests.decisions.factories import make_record


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_plain_data_as_json() -> None:
    value = {
        "b": [1, 2.5, True, None, "x"],
        "a": {"nested": [{"z": 1, "y": 2}]},
        3: "int key",
    }
    assert jsonable(value) == {
        "b": [1, 2.5, True, None, "x"],
        "a": {"nested": [{"z": 1, "y": 2}]},
        "3": "int key",
    }
    assert canonical_json(value) == (
        b'{"3":"int key","a":{"nested":[{"y":2,"z":1}]},"b":[1,2.5,true,null,"x"]}'
    )


def test_values_json_cannot_hold() -> None:
    paris = timezone(timedelta(hours=1))
    value = {
        "money": Decimal("12.50"),
        "at": datetime(2026, 12, 3, 8, 0, tzinfo=paris),
        "day": date(2026, 12, 3),
        "colour": Colour.RED,
        "level": Level.HIGH,
        "tags": {"b", "a"},
        "pair": (1, "two"),
        "missing": [math.nan, math.inf, -math.inf],
        "ordered": OrderedDict([("k", Decimal("1"))]),
    }
    assert jsonable(value) == {
        "money": "12.50",
        "at": "2026-12-03T07:00:00+00:00",
        "day": "2026-12-03",
        "colour": "red",
        "level": 3,
        "tags": ["a", "b"],
        "pair": [1, "two"],
        "missing": [None, None, None],
        "ordered": {"k": "1"},
    }
    with pytest.raises(ValueError, match="naive"):
        jsonable(datetime(2026, 12, 3, 8, 0))  # naive on purpose: the refusal is the point
    with pytest.raises(TypeError, match="object"):
        jsonable(object())


def test_integral_floats_hash_as_ints_within_64_bits() -> None:
    # JSONB hands these back as integers: they must hash as the integers they become.
    assert canonical_json([1.0, -0.0, 1e16, 2.0**63, -(2.0**63), 0.5]) == (
        b"[1,0,10000000000000000,9223372036854775808,-9223372036854775808,0.5]"
    )
    assert canonical_json([2.0**64, 1e300]) == b"[1.8446744073709552e+19,1e+300]"
    assert canonical_json({"t": datetime(2026, 1, 1, tzinfo=UTC)}) == (
        b'{"t":"2026-01-01T00:00:00+00:00"}'
    )


def test_jsonable_is_idempotent() -> None:
    value = {"a": [Decimal("1.5"), {"b": math.nan}], "c": (1.0, "x")}
    once = jsonable(value)
    assert jsonable(once) == once
    assert canonical_json(once) == canonical_json(value)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what JSON numbers can carry here
    | st.floats()
    | st.decimals(allow_nan=False, places=4)
    | st.text(max_size=6)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    features=st.dictionaries(st.text(max_size=8), _VALUES, max_size=8),
    reasons=st.lists(st.dictionaries(st.text(max_size=5), _VALUES, max_size=4), max_size=3),
)
@settings(max_examples=150, deadline=None)
def test_content_encoded_before_the_lock_hashes_as_the_whole_row(
    features: dict[str, Any], reasons: list[dict[str, Any]]
) -> None:
    # RowContent skips jsonable() on the JSON columns prepare_row already made plain: for
    # any content, the hash must be the one verification recomputes from the whole row.
    keyring = DataKeyring({"k1": bytes(range(32))})
    row = prepare_row(make_record("tenant-1", features=features, reasons=reasons), keyring)
    keys = ChainKeyring({"c1": bytes(range(1, 33))})
    link_into_chain(row, seq=3, prev_hash="ab" * 32, chain_keys=keys, content=RowContent.of(row))
    assert row.row_hash == compute_row_hash("ab" * 32, row, keys)
