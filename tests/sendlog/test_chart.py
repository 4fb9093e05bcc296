import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from followup.sendlog.chart import _nice_max, daily_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_chart_is_valid_svg_with_a_bar_per_series_per_day_and_a_text_alternative() -> None:
    days = [(date(2026, 3, 1) + timedelta(days=i), 10 + i, 9 + i, i % 2) for i in range(30)]
    root = ET.fromstring(daily_chart(days, title="Texts & results"))  # noqa: S314 - our own output
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Texts & results"  # type: ignore[union-attr]
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == "From March 01 to March 30: 735 sent, 705 delivered, 15 failed."
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 90
    tallest = max(float(r.get("height", 0)) for r in bars)
    assert 0 < tallest <= 240


def test_an_empty_month_draws_an_empty_chart() -> None:
    root = ET.fromstring(daily_chart([], title="t"))  # noqa: S314
    assert root.find(f"{SVG}desc").text == "No texts in this period."  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "top"), [(0, 4), (4, 4), (5, 8), (9, 20), (41, 80), (1234, 2000)]
)
def test_axis_top_is_four_round_steps(value: int, top: int) -> None:
    assert _nice_max(value) == top
    assert top % 4 == 0 and top >= value
