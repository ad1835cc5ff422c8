"""`b2bscore train` never overwrites; `b2bscore models` lists, shows, refuses bad bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from b2bscore.cli import app
from b2bscore.model.bundle import sha256_file
from tests.model.registry_helpers import CORRUPT, GOOD, LIVE_DEFAULT, make_models_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture
def env(models_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("B2BSCORE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("B2BSCORE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("B2BSCORE_MODEL_ID", LIVE_DEFAULT)
    return models_dir


def test_train_refuses_an_existing_version(models_dir: Path) -> None:
    before = sha256_file(models_dir / LIVE_DEFAULT / "model.txt")
    result = runner.invoke(app, ["train", "--version", "2026.11.1", "--out", str(models_dir)])
    assert result.exit_code == 1
    assert "immutable" in result.output
    assert sha256_file(models_dir / LIVE_DEFAULT / "model.txt") == before


def test_models_list_one_json_object_per_line(env: Path) -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in map(json.loads, result.output.splitlines())}
    assert {LIVE_DEFAULT, GOOD, CORRUPT} <= set(rows)
    live = rows[LIVE_DEFAULT]
    assert live["live"] is True
    assert live["roles"] == ["live"]
    for field in (
        "version",
        "trained_at",
        "data_fingerprint",
        "code_fingerprint",
        "auc",
        "brier",
        "calibration",
        "size_bytes",
        "shadow",
        "canary",
    ):
        assert field in live
    assert rows[GOOD]["live"] is False


def test_models_show_prints_the_card(env: Path) -> None:
    result = runner.invoke(app, ["models", "show", "2026.11.1"])
    assert result.exit_code == 0
    assert "## Reason-code catalogue" in result.output
    missing = runner.invoke(app, ["models", "show", "1999.1.1"])
    assert missing.exit_code == 1


def test_promote_refuses_a_corrupted_bundle(env: Path) -> None:
    result = runner.invoke(app, ["models", "promote", CORRUPT])
    assert result.exit_code == 1
    assert "refused" in result.output
    assert "nothing changed" in result.output
    verify = runner.invoke(app, ["models", "verify", GOOD])
    assert verify.exit_code == 0
    assert json.loads(verify.output)["verified"] is True


def test_drift_rejects_a_bad_window(env: Path) -> None:
    result = runner.invoke(app, ["models", "drift", "--window", "seven days"])
    assert result.exit_code == 2
    assert "window" in result.output


def test_parity_never_makes_a_fresh_data_key(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B2BSCORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("B2BSCORE_DATA_KEYS", raising=False)
    result = runner.invoke(app, ["models", "parity", "--sample", "5"])
    assert result.exit_code == 2
    assert "no data keys" in result.output
    assert not (tmp_path / "var").exists()
