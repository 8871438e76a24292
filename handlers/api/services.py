"""What the pipeline API's routes need from the running bot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from handlers.api.tokens import ApiTokens
from rollout.engine import Engine
from rollout.ports import Clock


@dataclass(frozen=True, kw_only=True)
class ApiServices:
    engine: Engine
    clock: Clock
    tokens: ApiTokens
    # Runs work after the answer, off the request thread (the cluster part of a start).
    later: Callable[[Callable[[], object]], None]
