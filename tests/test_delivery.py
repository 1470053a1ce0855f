"""Delivery metrics over a fixture history of promotions and rollbacks, against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from playground import delivery

FIXTURE = Path(__file__).parent / "data" / "history" / "releases.csv"


@pytest.fixture
def releases():
    return delivery.releases_frame(
        pd.read_csv(FIXTURE, dtype=str, keep_default_na=False).replace("", None).to_dict("records")
    )


def W(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_weekly_figures_match_hand_computed_values(releases):
    t = delivery.weekly(releases)
    assert list(t.index) == [
        ("prod/backend", W("2024-01-01")),
        ("prod/backend", W("2024-01-08")),
        ("prod/frontend", W("2024-01-01")),
        ("prod/frontend", W("2024-01-15")),
    ]
    # backend, week of Mon 2024-01-01: r1 (promoted, lead 1h10m), r2 (rolled back after 5 min),
    # r3 (promoted, lead 12h20m), r4 (promoted Sunday 23:30, lead 2h)
    b1 = t.loc[("prod/backend", W("2024-01-01"))]
    assert (b1.releases, b1.promotions, b1.rollbacks) == (4, 3, 1)
    assert b1.deployment_frequency == 3 / 7
    assert b1.change_failure_rate == 0.25
    assert b1.lead_time_median_s == 7200.0  # median of 4200, 44400, 7200 s
    assert b1.time_to_restore_median_s == 300.0
    # backend, week of Mon 2024-01-08: r5 (rolled back after 3 min), r6 (after 9 min), r7 (promoted, no commit time)
    b2 = t.loc[("prod/backend", W("2024-01-08"))]
    assert (b2.releases, b2.promotions, b2.rollbacks) == (3, 1, 2)
    assert b2.change_failure_rate == 2 / 3
    assert math.isnan(b2.lead_time_median_s)
    assert b2.time_to_restore_median_s == 360.0  # median of 180 and 540
    f1 = t.loc[("prod/frontend", W("2024-01-01"))]
    assert (f1.releases, f1.promotions, f1.rollbacks, f1.change_failure_rate) == (1, 1, 0, 0.0)
    assert f1.lead_time_median_s == 3960.0 and math.isnan(f1.time_to_restore_median_s)
    f3 = t.loc[("prod/frontend", W("2024-01-15"))]
    assert f3.lead_time_median_s == 86400.0


def test_summary_per_target(releases):
    s = delivery.summary(releases)
    b = s.loc["prod/backend"]
    assert (b.releases, b.promotions, b.rollbacks) == (7, 4, 3)
    assert b.change_failure_rate == 3 / 7
    assert b.deployment_frequency == 4 / 14  # two weeks, 2024-01-01 .. 2024-01-14
    assert b.lead_time_median_s == 7200.0  # median of 4200, 44400, 7200 (r7 has no commit time)
    assert b.time_to_restore_median_s == 300.0  # median of 300, 180, 540
    f = s.loc["prod/frontend"]
    assert f.deployment_frequency == 2 / 21  # weeks of 01-01 .. 01-15: 21 days
    assert f.lead_time_median_s == (3960.0 + 86400.0) / 2


def test_chart_and_markdown(releases, tmp_path):
    t = delivery.weekly(releases)
    path = delivery.plot(t, tmp_path / "delivery.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    md = delivery.to_markdown(t)
    assert md.splitlines()[0].startswith("| target | week | releases")
    assert "| prod/backend | 2024-01-08 | 3 | 1 | 2 |" in md


def test_empty_history():
    empty = delivery.releases_frame([])
    assert delivery.weekly(empty).empty and delivery.summary(empty).empty
