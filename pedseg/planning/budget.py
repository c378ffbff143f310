"""Time budgets on the command line: ``1h``, ``45m``, ``90s``, ``1h30m``, ``2.5h`` -> seconds."""

from __future__ import annotations

import re

from pedseg.errors import ConfigError

__all__ = ["MAX_BUDGET_S", "format_duration", "parse_budget"]

MAX_BUDGET_S = 30 * 24 * 3600.0
_PATTERN = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_EXAMPLES = "1h, 45m, 90s, 1h30m or 2.5h"


def parse_budget(text: str, *, option: str = "--budget") -> float:
    """Seconds in ``text``: hours, minutes and seconds in that order, each optional, units required."""
    cleaned = "".join(str(text).split()).lower()
    match = _PATTERN.match(cleaned) if cleaned else None
    if match is None or not any(match.groupdict().values()):
        raise ConfigError(f"{option} must look like {_EXAMPLES}, got {text!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    seconds = parts["h"] * 3600.0 + parts["m"] * 60.0 + parts["s"]
    if seconds <= 0:
        raise ConfigError(f"{option} must be more than 0 seconds, got {text!r}")
    if seconds > MAX_BUDGET_S:
        raise ConfigError(f"{option} must be at most 30 days (720h), got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h 02m``, ``4m 05s`` or ``12 s``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs} s"
