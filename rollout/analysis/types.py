"""The values that flow from measuring to judging to the engine, as frozen records.

Measuring (talking to Prometheus) and judging (applying rules) never share a function; these
records are the only thing they share. A `Measurement` is stored by the engine as JSON so that
a restarted bot still knows how long a rule has been beyond its threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from rollout.config import Rule

Track = Literal["canary", "stable"]
TRACKS: tuple[Track, ...] = ("canary", "stable")


class Verdict(StrEnum):
    HEALTHY = "healthy"
    BREACHED = "breached"
    NO_DATA = "no_data"


def finite(value: float | None) -> float | None:
    """NaN and infinities are what Prometheus says for 0/0 and x/0: no usable data."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class TrackValues:
    """One metric for both tracks; None means no data (never NaN, see `finite`)."""

    canary: float | None
    stable: float | None

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__; a NaN that slipped past the
        # provider must not compare as "not above the threshold" and pass as healthy.
        object.__setattr__(self, "canary", finite(self.canary))
        object.__setattr__(self, "stable", finite(self.stable))

    def of(self, track: Track) -> float | None:
        return self.canary if track == "canary" else self.stable


NO_VALUES = TrackValues(None, None)


@dataclass(frozen=True)
class Measurement:
    """Every metric of one rollout, both tracks, measured at one analysis tick."""

    at: datetime
    values: Mapping[str, TrackValues]

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("Measurement.at must be timezone-aware (UTC)")
        # A private copy: the caller's dict may change after the tick; typed as Mapping so
        # mypy refuses writes (a MappingProxyType would break copy/pickle for the engine).
        if not isinstance(self.values, _Stored):
            object.__setattr__(self, "values", dict(self.values))

    def get(self, metric: str) -> TrackValues:
        return self.values.get(metric, NO_VALUES)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "values": {
                name: {"canary": values.canary, "stable": values.stable}
                for name, values in sorted(self.values.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(at=datetime.fromisoformat(data["at"]), values=_values_of(data))

    @classmethod
    def stored(cls, at: datetime, text: str) -> Measurement:
        """A measurement as the store keeps it (`to_json` as JSON text), its values decoded
        when first read. A tick judges a rollout on the samples of its rules' longest `for`
        (27 at 1,000 rollouts with `for: 2m` every 5 s: 27,000 a tick), but reads the latest
        one only, unless a rule is beyond its threshold: decoding every one cost more CPU than
        the rest of the tick (about 0.8 s a tick)."""
        return cls(at=at, values=_Stored(text))


def _values_of(data: Mapping[str, Any]) -> dict[str, TrackValues]:
    return {
        name: TrackValues(canary=raw.get("canary"), stable=raw.get("stable"))
        for name, raw in data.get("values", {}).items()
    }


class _Stored(Mapping[str, TrackValues]):
    """A stored measurement's values, decoded on first use (see `Measurement.stored`)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._values: dict[str, TrackValues] | None = None

    def _decoded(self) -> dict[str, TrackValues]:
        if self._values is None:
            self._values = _values_of(json.loads(self._text))
        return self._values

    def __getitem__(self, name: str) -> TrackValues:
        return self._decoded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


@dataclass(frozen=True)
class RuleResult:
    """How one rule stands now.

    `canary`/`stable` are the latest sample's values; `window` is the rule's `for`. `since` is
    the first sample of the current run beyond the threshold (None when the latest sample is
    not beyond). `pending` is True when the latest sample is beyond the threshold but not yet
    for the whole window: the verdict is still HEALTHY (like a Prometheus alert that is pending,
    not firing), but the engine should not count that tick as healthy for a step.
    """

    rule: Rule
    verdict: Verdict
    canary: float | None
    stable: float | None
    window: timedelta
    note: str | None = None
    since: datetime | None = None
    pending: bool = False


@dataclass(frozen=True)
class Analysis:
    """All rules of one rollout judged at one tick."""

    at: datetime
    results: tuple[RuleResult, ...]
    latest: Measurement | None = field(default=None)

    @property
    def verdict(self) -> Verdict:
        verdicts = {result.verdict for result in self.results}
        if Verdict.BREACHED in verdicts:
            return Verdict.BREACHED
        if Verdict.NO_DATA in verdicts:
            return Verdict.NO_DATA
        return Verdict.HEALTHY

    @property
    def breached(self) -> RuleResult | None:
        return next((r for r in self.results if r.verdict is Verdict.BREACHED), None)

    @property
    def pending(self) -> tuple[RuleResult, ...]:
        return tuple(result for result in self.results if result.pending)


@dataclass(frozen=True, kw_only=True)
class AnalysisTarget:
    """What to measure for one active rollout: built from the rollout and its service config.

    `service` is the key in `services:` (the `{{ service }}` placeholder and the `service` label
    of the generic app metrics); `deployment` is the stable Deployment (the canary's is
    `<deployment>-canary`); `ingress` is the Ingress the nginx flavour reads (the service key
    when None). `window` is the policy's `analysis_window`; `custom_metrics` is the service's
    `metrics:` section.
    """

    rollout_id: str
    service: str
    namespace: str
    deployment: str
    strategy: str
    ingress: str | None
    window: timedelta
    custom_metrics: Mapping[str, str] = field(default_factory=dict)

    def deployment_of(self, track: Track) -> str:
        return f"{self.deployment}-canary" if track == "canary" else self.deployment
