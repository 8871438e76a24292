"""What every section of the config schema shares (rollout/config.py and the modules beside it):
the frozen model base, the duration type, and the checks of Slack IDs, Kubernetes names and
environment variable names, so that each section words the same mistake the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

from rollout.durations import parse_duration


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):
        raise ValueError("a duration must be text like 30s, 10m, 1h or 1h30m")
    if isinstance(value, int | float):
        raise ValueError(f"{value} has no unit: write it like {value}s or {value}m")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
# A config field of Slack IDs: several, one, or one left out.
SlackIds = TypeVar("SlackIds", tuple[str, ...], str | None)

USER_OR_GROUP = re.compile(r"^[UWS][A-Z0-9]{2,}$")
CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_ids(value: SlackIds, pattern: re.Pattern[str], what: str) -> SlackIds:
    """`value` (one ID, several, or None) if each is a Slack `what` ID; else the first that
    is not is named."""
    for one in [value] if isinstance(value, str) else value or ():
        if not pattern.match(one):
            raise ValueError(f"{one!r} is not a Slack {what} ID")
    return value


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(
            f"{value!r} is not an environment variable name: it names the variable that holds "
            "the secret (like PROMETHEUS_TOKEN), never the secret itself"
        )
    return value
