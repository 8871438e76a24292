"""Metric analysis: measure both tracks in Prometheus, then judge the rules (apart, on purpose).

`Analyzer(provider).measure(targets, now=...)` turns one tick's batched queries into a
`Measurement` per rollout; `judge(rules=..., history=..., now=..., analysis_interval=...)` is a
pure function from stored Measurements to an `Analysis` (healthy / breached / no data).
"""

from rollout.analysis.judge import beyond, judge
from rollout.analysis.measure import Analyzer
from rollout.analysis.provider import (
    MetricsProvider,
    MetricsUnavailable,
    PrometheusAccess,
    PrometheusProvider,
    QueryFailed,
    Series,
)
from rollout.analysis.queries import BUILTIN_METRICS, flavour_of
from rollout.analysis.templates import PLACEHOLDERS, TemplateError, check_template
from rollout.analysis.types import (
    Analysis,
    AnalysisTarget,
    Measurement,
    RuleResult,
    TrackValues,
    Verdict,
)

__all__ = [
    "BUILTIN_METRICS",
    "PLACEHOLDERS",
    "Analysis",
    "AnalysisTarget",
    "Analyzer",
    "Measurement",
    "MetricsProvider",
    "MetricsUnavailable",
    "PrometheusAccess",
    "PrometheusProvider",
    "QueryFailed",
    "RuleResult",
    "Series",
    "TemplateError",
    "TrackValues",
    "Verdict",
    "beyond",
    "check_template",
    "flavour_of",
    "judge",
]
