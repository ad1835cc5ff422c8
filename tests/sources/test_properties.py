"""Property tests: the registry and accounting adapters never raise on arbitrary input.

Whatever a provider sends, an adapter answers with data or a SourceError (which the fan-out
turns into a source status), and the FEC reader with data or a FecError naming the place.
"""

from __future__ import annotations

import contextlib
from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2bscore.sources import accounting, bodacc, registry
from b2bscore.sources.cli import ParseFailure, Provider, parse_payload
from b2bscore.sources.errors import SourceError
from b2bscore.sources.fec import FecError, parse_fec
from tests.sources import payloads

AS_OF = date(2026, 1, 31)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
# Records that look like BODACC's, with any field broken.
records = st.fixed_dictionaries(
    {},
    optional={
        "familleavis": st.sampled_from(["collective", "dpc", "vente", "depot", ""]) | json_values,
        "dateparution": st.sampled_from(["2025-01-02", "2025-13-01", ""]) | json_values,
        "jugement": st.sampled_from(['{"nature": "Jugement de clôture"}', "{", "[]"]) | json_values,
    },
)


@FAST
@given(
    body=json_values
    | st.fixed_dictionaries({"results": st.lists(records | json_values, max_size=6)})
)
def test_bodacc_answers_never_raise(body: Any) -> None:
    try:
        notices = bodacc.parse_records(body)
    except SourceError:
        return
    assert notices.dropped + len(notices.announcements) == len(body["results"])
    bodacc.lifecycle(notices.announcements)


@FAST
@given(sirene=json_values, answer=json_values)
def test_registry_raw_records_never_raise(sirene: Any, answer: Any) -> None:
    with contextlib.suppress(SourceError):
        registry.parse_raw({"sirene": sirene, "bodacc": answer}, AS_OF)


@FAST
@given(answer=json_values)
def test_sirene_data_survives_any_bodacc_answer(answer: Any) -> None:
    data = registry.parse_raw({"sirene": payloads.sirene(), "bodacc": answer}, AS_OF)
    assert data.siren == "111111118"


@FAST
@given(text=st.text(max_size=400))
def test_fec_reader_raises_only_fec_errors(text: str) -> None:
    error: FecError | None = None
    try:
        parse_fec(payloads.FEC_HEADER + "\n" + text)
    except FecError as caught:
        error = caught
    assert error is None or error.line is None or error.line >= 1


@FAST
@given(raw=st.binary(max_size=300))
def test_fec_reader_on_arbitrary_bytes(raw: bytes) -> None:
    with contextlib.suppress(FecError):
        parse_fec(raw)


@FAST
@given(raw=json_values)
def test_accounting_raw_records_never_raise(raw: Any) -> None:
    with contextlib.suppress(SourceError):
        accounting.parse_raw(raw if isinstance(raw, dict) else {"fec": raw}, AS_OF)


@FAST
@given(
    provider=st.sampled_from([Provider.SIRENE, Provider.BODACC, Provider.FEC]),
    raw=st.binary(max_size=200),
)
def test_the_parse_command_fails_only_with_a_message(provider: Provider, raw: bytes) -> None:
    message = "parsed"
    try:
        parse_payload(provider, raw)
    except ParseFailure as error:
        message = str(error)
    assert message
