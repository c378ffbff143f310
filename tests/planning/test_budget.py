"""Budgets on the command line."""

from __future__ import annotations

import pytest

from pedseg.errors import ConfigError
from pedseg.planning.budget import format_duration, parse_budget


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h", 3600.0),
        ("45m", 2700.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("2.5h", 9000.0),
        ("1h 2m 3s", 3723.0),
        ("10M", 600.0),
    ],
)
def test_budgets_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("90", "must look like 1h, 45m, 90s, 1h30m or 2.5h, got '90'"),
        ("1h30", "must look like"),
        ("30m1h", "must look like"),
        ("", "must look like"),
        ("-1h", "must look like"),
        ("0m", "more than 0 seconds"),
        ("800h", "at most 30 days"),
    ],
)
def test_bad_budgets_are_one_line_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_budget(text)
    assert str(info.value).startswith("--budget ") and "\n" not in str(info.value)


def test_durations_read_naturally() -> None:
    assert format_duration(3720) == "1h 02m"
    assert format_duration(245) == "4m 05s"
    assert format_duration(12.4) == "12 s"
