"""Built-in PromQL per traffic flavour, batched across rollouts, and split back per rollout.

One analysis tick measures every active rollout. Instead of one query per rollout, metric and
track, each built-in metric is fetched with ONE query per (family, metric, window) covering
every rollout of that family, grouped by the labels that tell rollouts and tracks apart; the
result is split back in Python. A tick therefore issues 5 queries per (flavour, window) in use
plus 2 per window for saturation (shared by all flavours), however many rollouts are active.
Custom per-service queries (a service's `metrics:`) cannot be batched: they cost one query per
rollout, metric and track.

Which family measures a strategy is its registry entry's `flavour` (rollout/traffic/registry.py).
Families and what tells the tracks apart:
- generic (strategies replicas, service, gateway, argo): the app's own `http_requests_total`
  and `http_request_duration_seconds` with labels `namespace`, `service` (the key in
  `services:`), `track`, `code`. Stable pods of a team's own manifests carry no `track` label
  (only the canary pods get `track: canary`), so a series without one counts as stable.
- istio: `istio_requests_total` / `istio_request_duration_milliseconds` as reported by the
  destination, by `destination_workload_namespace` and `destination_workload` (the Deployment:
  `<deployment>` or `<deployment>-canary`), errors by `response_code`.
- nginx: `nginx_ingress_controller_requests` / `..._request_duration_seconds` by `namespace`
  and `ingress`, errors by `status`. Canary requests are told apart in PromQL (label_replace):
  a non-empty `canary` label, or an `ingress` named `<ingress>-canary`, whichever the
  controller version reports.
- cadvisor (saturation, every flavour): cAdvisor usage over kube-state-metrics limits, summed
  over the track's pods. Pods are matched to their Deployment by name
  (`<deployment>-<replicaset hash>-<suffix>`), as Flagger does, because cAdvisor series carry
  no Deployment or track label and a join through `kube_pod_labels` would be far costlier.

Error and success rates use `(errors or total * 0) / total` so that a track with traffic but no
5xx series yet reads 0, not "no data"; a track without traffic reads 0/0 = no data.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from rollout.analysis.provider import Series
from rollout.analysis.templates import TemplateError, prometheus_duration, render
from rollout.analysis.types import TRACKS, AnalysisTarget, Track
from rollout.traffic import registry
from rollout.traffic.registry import Flavour

log = logging.getLogger(__name__)

TRAFFIC_METRICS = ("request_rate", "error_rate", "success_rate", "latency_avg_ms", "latency_p99_ms")
SATURATION_METRICS = ("cpu_saturation", "memory_saturation")
BUILTIN_METRICS = TRAFFIC_METRICS + SATURATION_METRICS

_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")

SeriesKey = tuple[str, ...]
Slot = tuple[str, Track]  # (rollout_id, track)


def flavour_of(strategy: str) -> Flavour:
    """The query family of a strategy, as its registry entry says."""
    try:
        return registry.strategy(strategy).flavour
    except registry.UnknownStrategy:
        raise ValueError(f"no built-in metrics for strategy {strategy!r}") from None


def _any_of(label: str, values: Sequence[str], *, then: str = "") -> str:
    """A matcher for any of `values` (followed by the regex `then`), escaped for RE2 and PromQL."""
    escaped = sorted({"".join("\\" + c if c in _RE2_SPECIAL else c for c in v) for v in values})
    regex = f"({'|'.join(escaped)}){then}" if then else "|".join(escaped)
    return f'{label}=~"{_promql_string(regex)}"'


def _promql_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _nginx_tracks(expr: str) -> str:
    """Label canary requests `track="canary"` and fold `<ingress>-canary` into `<ingress>`."""
    marked = f'label_replace({expr}, "track", "canary", "canary", ".+")'
    marked = f'label_replace({marked}, "track", "canary", "ingress", ".+-canary")'
    return f'label_replace({marked}, "ingress", "$1", "ingress", "(.+)-canary")'


def _generic_tracks(expr: str) -> str:
    """A series without a `track` label comes from pods labelled as the team made them: stable."""
    return f'label_replace({expr}, "track", "stable", "track", "")'


def _ingress(target: AnalysisTarget) -> str:
    return target.ingress or target.service


@dataclass(frozen=True, kw_only=True)
class Family:
    """How one source of metrics is queried for many rollouts and split back per track."""

    name: str
    metrics: tuple[str, ...]
    group_by: tuple[str, ...]
    selector: Callable[[Sequence[AnalysisTarget]], str]
    key: Callable[[AnalysisTarget, Track], SeriesKey]
    build: Callable[[Family, str, str, str], str]  # (family, metric, selector, window) -> PromQL

    def promql(self, metric: str, targets: Sequence[AnalysisTarget], window: timedelta) -> str:
        return self.build(self, metric, self.selector(targets), prometheus_duration(window))

    def series_key(self, labels: Mapping[str, str]) -> SeriesKey:
        return tuple(labels.get(label, "") for label in self.group_by)


@dataclass(frozen=True, kw_only=True)
class _TrafficNames:
    requests: str
    duration: str
    to_ms: float
    code: str
    normalise: Callable[[str], str] = lambda expr: expr


def _traffic(names: _TrafficNames) -> Callable[[Family, str, str, str], str]:
    def build(family: Family, metric: str, selector: str, window: str) -> str:
        by = ", ".join(family.group_by)

        def summed(series: str, extra: str = "", *, by_extra: str = "") -> str:
            matchers = ",".join(part for part in (selector, extra) if part)
            rate = names.normalise(f"rate({series}{{{matchers}}}[{window}])")
            return f"sum by ({by}{by_extra}) ({rate})"

        total = summed(names.requests)
        errors = summed(names.requests, f'{names.code}=~"5.."')
        successes = summed(names.requests, f'{names.code}!~"5.."')
        to_ms = f"{names.to_ms:g} * " if names.to_ms != 1 else ""
        buckets = summed(f"{names.duration}_bucket", by_extra=", le")
        queries = {
            "request_rate": total,
            "error_rate": f"({errors} or {total} * 0) / {total}",
            "success_rate": f"({successes} or {total} * 0) / {total}",
            "latency_avg_ms": f"{to_ms}{summed(names.duration + '_sum')}"
            f" / {summed(names.duration + '_count')}",
            "latency_p99_ms": f"{to_ms}histogram_quantile(0.99, {buckets})",
        }
        return queries[metric]

    return build


_POD_OF_DEPLOYMENT = "-[a-z0-9]+-[a-z0-9]+"


def _saturation(family: Family, metric: str, selector: str, window: str) -> str:
    by = ", ".join(family.group_by)

    def per_workload(expr: str) -> str:
        named = f'label_replace({expr}, "workload", "$1", "pod", "(.+){_POD_OF_DEPLOYMENT}")'
        return f"sum by ({by}) ({named})"

    containers = f'{selector},container!="",container!="POD"'
    if metric == "cpu_saturation":
        used = f"rate(container_cpu_usage_seconds_total{{{containers}}}[{window}])"
        resource = "cpu"
    else:
        used = f"container_memory_working_set_bytes{{{containers}}}"
        resource = "memory"
    limit = f'kube_pod_container_resource_limits{{{selector},resource="{resource}"}}'
    return f"{per_workload(used)} / {per_workload(limit)}"


def _workloads(targets: Sequence[AnalysisTarget]) -> list[str]:
    return [t.deployment_of(track) for t in targets for track in TRACKS]


GENERIC = Family(
    name="generic",
    metrics=TRAFFIC_METRICS,
    group_by=("namespace", "service", "track"),
    selector=lambda ts: ",".join(
        (
            _any_of("namespace", [t.namespace for t in ts]),
            _any_of("service", [t.service for t in ts]),
        )
    ),
    key=lambda t, track: (t.namespace, t.service, track),
    build=_traffic(
        _TrafficNames(
            requests="http_requests_total",
            duration="http_request_duration_seconds",
            to_ms=1000,
            code="code",
            normalise=_generic_tracks,
        )
    ),
)
ISTIO = Family(
    name="istio",
    metrics=TRAFFIC_METRICS,
    group_by=("destination_workload_namespace", "destination_workload"),
    selector=lambda ts: ",".join(
        (
            'reporter="destination"',
            _any_of("destination_workload_namespace", [t.namespace for t in ts]),
            _any_of("destination_workload", _workloads(ts)),
        )
    ),
    key=lambda t, track: (t.namespace, t.deployment_of(track)),
    build=_traffic(
        _TrafficNames(
            requests="istio_requests_total",
            duration="istio_request_duration_milliseconds",
            to_ms=1,
            code="response_code",
        )
    ),
)
NGINX = Family(
    name="nginx",
    metrics=TRAFFIC_METRICS,
    group_by=("namespace", "ingress", "track"),
    selector=lambda ts: ",".join(
        (
            _any_of("namespace", [t.namespace for t in ts]),
            _any_of("ingress", [f"{_ingress(t)}{s}" for t in ts for s in ("", "-canary")]),
        )
    ),
    key=lambda t, track: (t.namespace, _ingress(t), "canary" if track == "canary" else ""),
    build=_traffic(
        _TrafficNames(
            requests="nginx_ingress_controller_requests",
            duration="nginx_ingress_controller_request_duration_seconds",
            to_ms=1000,
            code="status",
            normalise=_nginx_tracks,
        )
    ),
)
CADVISOR = Family(
    name="cadvisor",
    metrics=SATURATION_METRICS,
    group_by=("namespace", "workload"),
    selector=lambda ts: ",".join(
        (
            _any_of("namespace", [t.namespace for t in ts]),
            # Anchored by Prometheus: `checkout-<hash>-<id>` never matches checkout-canary's pods.
            _any_of("pod", _workloads(ts), then=_POD_OF_DEPLOYMENT),
        )
    ),
    key=lambda t, track: (t.namespace, t.deployment_of(track)),
    build=_saturation,
)
FAMILIES: Mapping[Flavour, tuple[Family, ...]] = {
    "generic": (GENERIC, CADVISOR),
    "istio": (ISTIO, CADVISOR),
    "nginx": (NGINX, CADVISOR),
}


@dataclass(frozen=True)
class BatchQuery:
    """One built-in metric for many rollouts and both tracks, in one PromQL query."""

    family: Family
    metric: str
    window: timedelta
    targets: tuple[AnalysisTarget, ...]

    @property
    def promql(self) -> str:
        return self.family.promql(self.metric, self.targets, self.window)

    def split(self, series: Sequence[Series]) -> dict[Slot, float | None]:
        """Each series to its rollout and track; unrelated series are ignored.

        A slot that two series claim is ambiguous (None, logged): the query grouped by too few
        labels, and adding up ratios would be wrong. Targets measuring the same workload
        (not expected: one active rollout per service) each get its value.
        """
        slots: dict[SeriesKey, list[Slot]] = defaultdict(list)
        for target in self.targets:
            for track in TRACKS:
                slots[self.family.key(target, track)].append((target.rollout_id, track))
        values: dict[Slot, float | None] = {}
        for one in series:
            for slot in slots.get(self.family.series_key(one.labels), ()):
                if slot in values:
                    log.warning("%s: several series for %s %s", self.metric, *slot)
                    values[slot] = None
                else:
                    values[slot] = one.value
        return values


@dataclass(frozen=True)
class CustomQuery:
    """A service's own PromQL for one metric and track of one rollout."""

    rollout_id: str
    metric: str
    track: Track
    promql: str


def metric_names(target: AnalysisTarget) -> tuple[str, ...]:
    """Every metric measured for `target`: the built-ins, then its custom-only metrics."""
    extra = sorted(set(target.custom_metrics) - set(BUILTIN_METRICS))
    return BUILTIN_METRICS + tuple(extra)


def plan(targets: Sequence[AnalysisTarget]) -> tuple[list[BatchQuery], list[CustomQuery]]:
    """The queries of one tick: batched built-ins, then custom queries one by one."""
    groups: dict[tuple[str, str, timedelta], list[AnalysisTarget]] = defaultdict(list)
    families: dict[str, Family] = {}
    customs: list[CustomQuery] = []
    for target in targets:
        for family in FAMILIES[flavour_of(target.strategy)]:
            families[family.name] = family
            for metric in family.metrics:
                if metric not in target.custom_metrics:
                    groups[(family.name, metric, target.window)].append(target)
        customs.extend(custom_queries(target))
    batches = [
        BatchQuery(families[name], metric, window, tuple(members))
        for (name, metric, window), members in groups.items()
    ]
    return batches, customs


def custom_queries(target: AnalysisTarget) -> list[CustomQuery]:
    queries = []
    for metric, template in sorted(target.custom_metrics.items()):
        for track in TRACKS:
            try:
                promql = render(
                    template,
                    namespace=target.namespace,
                    service=target.service,
                    deployment=target.deployment_of(track),
                    track=track,
                    window=target.window,
                )
            except TemplateError as error:
                log.warning("%s: custom metric %s: %s", target.service, metric, error)
                continue
            queries.append(CustomQuery(target.rollout_id, metric, track, promql))
    return queries
