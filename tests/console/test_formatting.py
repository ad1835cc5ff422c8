"""The console's number typography and chart geometry (pure functions)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from b2bscore.console import charts, i18n


class TestTypography:
    """Money, percentages and ages in English and French."""

    def test_money(self) -> None:
        assert i18n.money(Decimal("1234567.5"), "en") == "€1,234,567.50"
        assert i18n.money(Decimal("1234567.5"), "fr") == "1\u202f234\u202f567,50\u00a0€"
        assert i18n.money(Decimal("0"), "en") == "€0.00"
        assert i18n.money(None, "fr") == "—"

    def test_percent_and_age(self) -> None:
        assert i18n.percent(0.0123, "en") == "1.23%"
        assert i18n.percent(0.0123, "fr") == "1,23\u202f%"
        today = date(2026, 12, 4)
        assert i18n.age(date(2026, 12, 4), today, "en") == "today"
        assert i18n.age(date(2026, 12, 1), today, "fr") == "3 jours"
        assert i18n.age(None, today, "en") == "—"

    def test_every_text_has_both_languages(self) -> None:
        en, fr = i18n.translator("en"), i18n.translator("fr")
        assert en("api_key") == "API key"
        assert fr("api_key") == "Clé d'API"
        assert fr("decision") == "Décision"


class TestCharts:
    """Bars, histogram and percentiles."""

    def test_reason_bars_diverge_around_the_axis(self) -> None:
        chart = charts.reason_chart(
            [
                {"code": "A", "contribution": 0.5, "label_en": "up", "label_fr": "haut"},
                {"code": "B", "contribution": -0.25, "label_en": "down", "label_fr": "bas"},
            ],
            "fr",
        )
        adverse, favourable = chart.bars
        assert adverse.adverse
        assert adverse.x == chart.axis_x
        assert adverse.label == "haut"
        assert not favourable.adverse
        assert favourable.x + favourable.width == chart.axis_x
        assert favourable.width == adverse.width / 2

    def test_histogram_bins_and_bands(self) -> None:
        histogram = charts.score_histogram(
            [0, 49, 50, 999, 1000, 600], approve_from=569, decline_below=443
        )
        counts = {c.low: c.count for c in histogram.columns if c.count}
        assert counts == {0: 2, 50: 1, 600: 1, 950: 2}
        bands = {c.low: c.band for c in histogram.columns}
        assert bands[0] == "decline"
        assert bands[500] == "review"
        assert bands[600] == "approve"

    def test_nearest_rank_percentiles(self) -> None:
        values = [float(v) for v in range(1, 101)]
        assert charts.percentile(values, 0.50) == 50.0
        assert charts.percentile(values, 0.99) == 99.0
        assert charts.percentile([], 0.5) == 0.0
