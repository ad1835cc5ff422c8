"""POST /v1/decisions/{id}/replay: the stored model on the stored features, compared."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from b2bscore.decisions.chain import compute_row_hash
from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_sessionmaker
from tests.security.conftest import (
    Stack,
    assert_problem_json,
    bearer,
    score_body,
    tamper,
)

COLLECTIVE = "444444442"
NO_BANK_CONSENT = "123456782"


async def _score(stack: Stack, siren: str) -> dict[str, Any]:
    response = await stack.client.post(
        "/v1/score", json=score_body(siren), headers=bearer(stack.keys.writer)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _replay(stack: Stack, decision_id: str, key: str) -> Any:
    return await stack.client.post(
        f"/v1/decisions/{decision_id}/replay",
        headers=bearer(key, **{"Content-Type": "application/json"}),
    )


async def test_fresh_decisions_replay_identically(stack: Stack) -> None:
    # A plain approval, a hard-rule decline and a degraded review: every branch of the core.
    for siren in ("111111118", COLLECTIVE, NO_BANK_CONSENT):
        answer = await _score(stack, siren)
        response = await _replay(stack, answer["decision_id"], stack.keys.writer)
        assert response.status_code == 200, response.text
        replay = response.json()
        assert replay == {
            "decision_id": answer["decision_id"],
            "identical": True,
            "differences": [],
            "model": answer["model"],
        }


async def _relink(stack: Stack, decision_id: str) -> None:
    """Recompute the row's own link with the audit key, as an insider who stole it would."""
    async with create_sessionmaker(stack.engine)() as session:
        row = (
            await session.execute(select(Decision).where(Decision.id == decision_id))
        ).scalar_one()
        row_hash = compute_row_hash(row.prev_hash, row, stack.state.chain_keys)
    await tamper(
        stack.url, "UPDATE decisions SET row_hash = $2 WHERE id = $1", decision_id, row_hash
    )


async def test_a_tampered_feature_shows_in_the_replay(stack: Stack) -> None:
    answer = await _score(stack, "111111118")
    assert answer["decision"] == "approve"
    # An insider rewrites the company as closed, behind the trigger's back.
    await tamper(
        stack.url,
        "UPDATE decisions SET features = jsonb_set(features, '{registry_active}', '0') "
        "WHERE id = $1",
        answer["decision_id"],
    )
    # Without the audit key the row no longer matches its link: it is not replayed at all.
    response = await _replay(stack, answer["decision_id"], stack.keys.writer)
    assert response.status_code == 409, response.text
    assert assert_problem_json(response)["code"] == "integrity_error"
    # With the stolen key the link is forged, and the replay still shows the change.
    await _relink(stack, answer["decision_id"])
    response = await _replay(stack, answer["decision_id"], stack.keys.writer)
    assert response.status_code == 200, response.text
    replay = response.json()
    assert replay["identical"] is False
    differences = {d["field"]: d for d in replay["differences"]}
    assert differences["decision"] == {
        "field": "decision",
        "recorded": "approve",
        "replayed": "decline",
    }
    assert differences["reasons"]["replayed"][0]["code"] == "RULE_CLOSED"


async def test_replay_of_another_tenants_decision_is_404(stack: Stack) -> None:
    answer = await _score(stack, "111111118")
    for decision_id in (answer["decision_id"], str(uuid.uuid4())):
        response = await _replay(stack, decision_id, stack.keys.other_tenant)
        assert response.status_code == 404
        assert assert_problem_json(response)["code"] == "decision_not_found"
        assert "111111118" not in response.text
        assert "score" not in response.json()


async def test_replay_needs_decisions_read(stack: Stack) -> None:
    answer = await _score(stack, "111111118")
    assert (await _replay(stack, answer["decision_id"], stack.keys.reader_only)).status_code == 200
    response = await stack.client.post(
        f"/v1/decisions/{answer['decision_id']}/replay",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401


async def test_a_model_that_is_gone_is_a_clean_409(stack: Stack) -> None:
    answer = await _score(stack, "111111118")
    for model_id in ("retired-model", "../../etc"):
        await tamper(
            stack.url,
            "UPDATE decisions SET model_id = $2 WHERE id = $1",
            answer["decision_id"],
            model_id,
        )
        await _relink(stack, answer["decision_id"])
        response = await _replay(stack, answer["decision_id"], stack.keys.writer)
        assert response.status_code == 409, response.text
        assert assert_problem_json(response)["code"] == "replay_unavailable"
