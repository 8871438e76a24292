"""Human durations (`10s`, `2m`, `1h30m`) as used in the config file and in `/canary` flags.

One parser serves both, so a duration that `check-config` accepts is also accepted after
`--interval`, and both give the same error text.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class DurationError(ValueError):
    """A duration string that cannot be read; the message says what a good one looks like."""


def parse_duration(text: str) -> timedelta:
    """Read `1h30m`-style text; `0s` is allowed (a rule's `for: 0s`), an empty string is not."""
    cleaned = text.strip().lower()
    match = _DURATION.match(cleaned)
    if not cleaned or match is None:
        raise DurationError(
            f"{text!r} is not a duration: use a number with a unit, like 30s, 10m, 1h or 1h30m"
        )
    seconds = sum(
        int(amount) * _UNIT_SECONDS[unit]
        for amount, unit in zip(match.groups(), "dhms", strict=True)
        if amount is not None
    )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of `parse_duration`, for messages: 5400 s -> `1h30m`, 0 -> `0s`."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
