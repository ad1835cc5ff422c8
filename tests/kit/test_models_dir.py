"""Where the service looks for its model bundles when B2BSCORE_MODELS_DIR is not set."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2bscore.kit import settings as settings_module
from b2bscore.kit.settings import Settings, default_models_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_source_checkout_reads_its_models_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("B2BSCORE_MODELS_DIR", raising=False)
    monkeypatch.chdir("/")  # wherever the command runs from
    assert Settings().models_dir == REPO / "models"
    assert any((REPO / "models").glob("*/bundle.json"))


def test_an_installed_package_reads_the_bundles_it_ships(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    packaged = tmp_path / "bundled_models"
    packaged.mkdir()
    monkeypatch.setattr(settings_module, "PACKAGED_MODELS_DIR", packaged)
    assert default_models_dir() == packaged


def test_the_setting_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("B2BSCORE_MODELS_DIR", str(tmp_path))
    assert Settings().models_dir == tmp_path
