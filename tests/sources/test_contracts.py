"""Contract tests: every captured real payload parses through `b2bscore providers parse`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from b2bscore.cli import app

HERE = Path(__file__).parent / "fixtures"
SHARED = Path("/work/shared/fixtures/providers")
PROVIDERS = ("sirene", "bodacc", "fec")


def _files() -> list[tuple[str, Path]]:
    seen: dict[tuple[str, str], Path] = {}
    for root in (HERE, SHARED):
        for provider in PROVIDERS:
            for path in sorted((root / provider).glob("*")) if (root / provider).is_dir() else []:
                seen.setdefault((provider, path.name), path)
    return [(provider, path) for (provider, _), path in sorted(seen.items())]


def _parse(provider: str, path: Path) -> tuple[int, str, dict[str, Any] | None]:
    result = CliRunner().invoke(app, ["providers", "parse", provider, str(path)])
    lines = result.stdout.strip().splitlines()
    record = json.loads(lines[-1]) if result.exit_code == 0 and lines else None
    return result.exit_code, result.output, record


@pytest.mark.parametrize(("provider", "path"), _files(), ids=lambda v: getattr(v, "name", v))
def test_every_captured_payload_parses(provider: str, path: Path) -> None:
    code, output, record = _parse(provider, path)
    assert code == 0, output
    assert isinstance(record, dict)


def test_sirene_dinum() -> None:
    _, _, record = _parse("sirene", HERE / "sirene/siren_130025265_dinum.json")
    assert record == {
        "absent": False,
        "siren": "130025265",
        "active": True,
        "created": "2017-05-24",
        "legal_form": "7120",
        "naf": "84.11Z",
        "headcount_band": "22",
        "category": "PME",
        "restricted": False,
    }


def test_sirene_404_is_absent_not_an_error() -> None:
    code, _, record = _parse("sirene", HERE / "sirene/siren_404.json")
    assert code == 0
    assert record is not None
    assert (record["absent"], record["siren"]) == (True, None)


def test_bodacc_liquidation() -> None:
    _, _, record = _parse("bodacc", HERE / "bodacc/v21_collective_liquidation_A202601765232.json")
    assert record is not None
    assert (record["announcements"], record["dropped"]) == (1, 0)
    assert record["proceedings"] == [
        {
            "date": "2026-09-08",
            "published": "2026-09-15",
            "family": "collective",
            "kind": "opening",
            "nature": "Jugement d'ouverture de liquidation judiciaire",
        }
    ]
    assert record["ongoing_proceeding"] is True


def test_fec_odoo() -> None:
    _, _, record = _parse("fec", HERE / "fec/odoo_l10n_fr_fec_pipe.txt")
    assert record is not None
    years = record["fiscal_years"]
    assert isinstance(years, list)
    (year,) = years
    assert year["closing_date"] == "2021-05-02"
    assert year["revenue"] == "6467.04"  # 1437.12 + 1676.64 + 3353.28
    assert year["result"] == "6467.04"
    assert year["equity"] == "6467.04"
    assert year["total_assets"] == "7760.45"  # 411100 7260.45 + supplier advance 500
    assert year["total_liabilities"] == "1293.41"  # VAT collected
    assert year["balanced"] is True
    assert year["assets_equal_liabilities_plus_equity"] is True


def test_failures_exit_1_naming_the_field_or_line_and_column(tmp_path: Path) -> None:
    dinum = json.loads((HERE / "sirene/siren_130025265_dinum.json").read_text())
    del dinum["uniteLegale"]["periodesUniteLegale"]
    bad_sirene = tmp_path / "sirene.json"
    bad_sirene.write_text(json.dumps(dinum))
    code, output, _ = _parse("sirene", bad_sirene)
    assert code == 1
    assert "periodesUniteLegale" in output

    text = (HERE / "fec/odoo_l10n_fr_fec_pipe.txt").read_text()
    bad_fec = tmp_path / "fec.txt"
    bad_fec.write_text(text.replace("|20210502|400000|", "|2021-13-02|400000|"))
    code, output, _ = _parse("fec", bad_fec)
    assert code == 1
    assert "line 7, column EcritureDate" in output

    not_json = tmp_path / "bodacc.json"
    not_json.write_text('{"results": [')
    code, output, _ = _parse("bodacc", not_json)
    assert code == 1
    assert "not JSON (line 1" in output


def test_open_banking_goes_through_the_open_banking_adapter(tmp_path: Path) -> None:
    from b2bscore.sources import open_banking

    path = tmp_path / "ob.json"
    path.write_text("{}")
    code, output, _ = _parse("open_banking", path)
    if getattr(open_banking, "parse_document", None) is None:
        assert code == 1
        assert "parse_document" in output
    else:  # wired by the open-banking work: an empty document names what is missing
        assert code in (0, 1)
