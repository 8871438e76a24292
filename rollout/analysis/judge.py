"""Judging: rules applied to measured samples, with no I/O and no clock (DESIGN.md "Rules").

Kept apart from measuring, after Argo Rollouts: `beyond` maps one value to beyond / within /
can't judge, and `judge` applies a rule's `for` over the stored samples. Precisely, with
T = `analysis_interval`:

- Samples later than `now` are ignored. If there is no sample, or the latest one is more than
  1.5 T old (a tick was missed), every rule is NO_DATA: stale data is not current health.
- The latest sample decides between HEALTHY and NO_DATA. It is "not judged" (NO_DATA, with a
  note) when the canary value is missing; when a relative rule lacks stable's value; or when the
  rule has `min_request_rate` and the canary's `request_rate` is missing or below it (too little
  traffic proves nothing either way, and missing data never counts as healthy).
- A rule is BREACHED when the latest sample is beyond its threshold and so is every sample of
  an unbroken run back to one that is old enough: the run is broken by a sample within the
  threshold, a sample not judged, or a gap between two samples longer than 1.5 T (a missing
  tick: what happened then is unknown, so the window is "not proven breached" and restarts).
  "Old enough" means the run spans at least `for` rounded up to whole intervals, less T/2 of
  sampling jitter. On a regular tick grid that is never less than `for`: with T = 30s a
  `for: 2m` breaches on the fifth beyond sample (120s of evidence), still so if a tick ran a
  little late or early, and a `for: 45s` needs 60s. `for: 0s`: the latest sample alone decides.
- Beyond but not yet for long enough is HEALTHY with `pending=True`, like a Prometheus alert
  that is pending, not firing.

Thresholds are strict: `above` is beyond when canary > x, `below` when canary < x,
`above_stable_by` when canary - stable > x, `above_stable_ratio` when canary > x * stable.
With stable at 0 the ratio rule is beyond for any canary value above 0: a canary that errs or
waits where stable does not is worse by any factor. Rules on metrics that are often 0 on both
tracks (error rates) read better as `above_stable_by`, or with `min_request_rate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from rollout.analysis.types import Analysis, Measurement, RuleResult, Verdict, finite
from rollout.config import Rule
from rollout.durations import format_duration

_RELATIVE = frozenset({"above_stable_by", "above_stable_ratio"})


def beyond(rule: Rule, canary: float | None, stable: float | None) -> bool | None:
    """Is this canary value beyond the rule's threshold? None when it can't be judged."""
    canary, stable = finite(canary), finite(stable)
    if canary is None:
        return None
    key, threshold = rule.threshold_key, rule.threshold
    if key == "above":
        return canary > threshold
    if key == "below":
        return canary < threshold
    if stable is None:
        return None
    if key == "above_stable_by":
        return canary - stable > threshold
    return canary > threshold * stable


def judge(
    *,
    rules: Sequence[Rule],
    history: Sequence[Measurement],
    now: datetime,
    analysis_interval: timedelta,
) -> Analysis:
    """Judge every rule on the samples in `history` (any order; older ones are simply unused)."""
    samples = sorted((m for m in history if m.at <= now), key=lambda m: m.at)
    latest = samples[-1] if samples else None
    jitter = analysis_interval / 2
    if latest is None or now - latest.at > analysis_interval + jitter:
        note = (
            "no samples yet"
            if latest is None
            else f"no sample for {format_duration(now - latest.at)} (Prometheus unreachable?)"
        )
        results = tuple(
            RuleResult(rule, Verdict.NO_DATA, None, None, rule.for_, note) for rule in rules
        )
        return Analysis(at=now, results=results, latest=latest)
    return Analysis(
        at=now,
        results=tuple(_judge_rule(rule, samples, interval=analysis_interval) for rule in rules),
        latest=latest,
    )


def _judge_rule(rule: Rule, samples: Sequence[Measurement], *, interval: timedelta) -> RuleResult:
    latest = samples[-1]
    values = latest.get(rule.metric)
    now_beyond, note = _judge_sample(rule, latest)
    if now_beyond is None:
        return RuleResult(rule, Verdict.NO_DATA, values.canary, values.stable, rule.for_, note)
    if not now_beyond:
        return RuleResult(rule, Verdict.HEALTHY, values.canary, values.stable, rule.for_)
    since = _run_start(rule, samples, interval=interval)
    held = latest.at - since
    if held >= _required_span(rule.for_, interval):
        return RuleResult(
            rule, Verdict.BREACHED, values.canary, values.stable, rule.for_, since=since
        )
    return RuleResult(
        rule,
        Verdict.HEALTHY,
        values.canary,
        values.stable,
        rule.for_,
        note=f"beyond threshold for {format_duration(held)} of {format_duration(rule.for_)}",
        since=since,
        pending=True,
    )


def beyond_any(rules: Sequence[Rule], sample: Measurement) -> bool:
    """Is any rule beyond its threshold on this sample? When none is, and the sample is the
    latest, the older samples change nothing of the judgement (see `_judge_rule`)."""
    return any(_judge_sample(rule, sample)[0] is True for rule in rules)


def _judge_sample(rule: Rule, sample: Measurement) -> tuple[bool | None, str | None]:
    """Beyond / within / not judged (with why) for one sample."""
    if rule.min_request_rate is not None:
        rate = sample.get("request_rate").canary
        if rate is None:
            return None, "no canary request rate to check the minimum volume"
        if rate < rule.min_request_rate:
            return None, (
                f"below minimum volume {rule.min_request_rate:g} req/s (canary {rate:.3g} req/s)"
            )
    values = sample.get(rule.metric)
    if values.canary is None:
        return None, "no data from Prometheus for the canary"
    if rule.threshold_key in _RELATIVE and values.stable is None:
        return None, "no data from Prometheus for stable"
    return beyond(rule, values.canary, values.stable), None


def _run_start(rule: Rule, samples: Sequence[Measurement], *, interval: timedelta) -> datetime:
    """When the unbroken run of beyond samples that ends with the latest one began."""
    max_gap = interval + interval / 2
    start = samples[-1]
    for sample in reversed(samples[:-1]):
        if start.at - sample.at > max_gap or _judge_sample(rule, sample)[0] is not True:
            break
        start = sample
    return start.at


def _required_span(window: timedelta, interval: timedelta) -> timedelta:
    if window <= timedelta(0):
        return timedelta(0)
    whole_intervals = -(-window // interval)
    return whole_intervals * interval - interval / 2
