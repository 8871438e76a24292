"""Built-in PromQL per traffic flavour: the queries of a family, batched across rollouts.

One analysis tick measures every active rollout. Instead of one query per rollout, metric and
track, each built-in query is asked ONCE per (family, query, window) for every rollout of that
family, grouped by the labels that tell rollouts and tracks apart; rollout/analysis/batch.py
splits the answer back per rollout and track and derives the metrics from it. A traffic family
has 3 queries, the shared saturation family 2, so a tick issues 3 per (flavour, window) in use
plus 2 per window for saturation, however many rollouts are active. Custom per-service queries
(a service's `metrics:`) cannot be batched: they cost one query per rollout, metric and track.

A traffic family's queries and the metrics each gives:
- `requests`: the request rate by status code, `sum by (<group>, <code>) (rate(<requests>[w]))`.
  `request_rate` is the sum over codes, `error_rate` the 5xx codes' share (codes matching
  `5..`, as a `=~"5.."` matcher does) and `success_rate` the others' share; computed in Python
  (batch.py) from this one answer, with what PromQL's `(errors or total * 0) / total` gives:
  a track with traffic but no 5xx reads 0, a track without traffic has no data (no series, or
  0/0). Asked as three ratios, Prometheus evaluated the total rate over every request series
  five times a tick (bench/scale.py measured each query with Prometheus's own `stats`).
- `latency_avg_ms`: `sum(rate(<duration>_sum)) / sum(rate(<duration>_count))`, in ms.
- `latency_p99_ms`: `histogram_quantile(0.99, sum by (<group>, le) (rate(<duration>_bucket)))`,
  in ms: the quantile stays Prometheus's own (interpolation, +Inf bucket).

Which family measures a strategy is its registry entry's `flavour` (rollout/traffic/registry.py).
Families and what tells the tracks apart:
- generic (strategies replicas, service, gateway, argo): the app's own `http_requests_total`
  and `http_request_duration_seconds` with labels `namespace`, `service` (the key in
  `services:`), `track`, `code`. Stable pods of a team's own manifests carry no `track` label
  (only the canary pods get `track: canary`), so a series without one counts as stable.
- istio: `istio_requests_total` / `istio_request_duration_milliseconds` as reported by the
  destination, by `destination_workload_namespace` and `destination_workload` (the Deployment:
  `<deployment>` or `<deployment>-canary`), status code `response_code`.
- nginx: `nginx_ingress_controller_requests` / `..._request_duration_seconds` by `namespace`
  and `ingress`, status code `status`. Canary requests are told apart in PromQL
  (label_replace): a non-empty `canary` label, or an `ingress` named `<ingress>-canary`,
  whichever the controller version reports.
- cadvisor (saturation, every flavour): cAdvisor usage over kube-state-metrics limits, summed
  over the track's pods. Pods are matched to their Deployment by name
  (`<deployment>-<replicaset hash>-<suffix>`), as Flagger does, because cAdvisor series carry
  no Deployment or track label and a join through `kube_pod_labels` would be far costlier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from rollout.analysis.templates import prometheus_duration
from rollout.analysis.types import TRACKS, AnalysisTarget, Track
from rollout.traffic import registry
from rollout.traffic.registry import Flavour

TRAFFIC_METRICS = ("request_rate", "error_rate", "success_rate", "latency_avg_ms", "latency_p99_ms")
SATURATION_METRICS = ("cpu_saturation", "memory_saturation")
BUILTIN_METRICS = TRAFFIC_METRICS + SATURATION_METRICS
# The query whose answer, by status code, gives the three request metrics (see above).
REQUESTS = "requests"
TRAFFIC_QUERIES: Mapping[str, tuple[str, ...]] = {
    REQUESTS: ("request_rate", "error_rate", "success_rate"),
    "latency_avg_ms": ("latency_avg_ms",),
    "latency_p99_ms": ("latency_p99_ms",),
}
SATURATION_QUERIES: Mapping[str, tuple[str, ...]] = {
    "cpu_saturation": ("cpu_saturation",),
    "memory_saturation": ("memory_saturation",),
}

# Each character RE2 gives a meaning, escaped with a backslash (one translate per name: the
# selector of a tick names every rollout's workloads, 2,000 at 1,000 rollouts).
_RE2_ESCAPES = str.maketrans({c: "\\" + c for c in "\\.+*?()|[]{}^$"})

SeriesKey = tuple[str, ...]


def flavour_of(strategy: str) -> Flavour:
    """The query family of a strategy, as its registry entry says."""
    try:
        return registry.strategy(strategy).flavour
    except registry.UnknownStrategy:
        raise ValueError(f"no built-in metrics for strategy {strategy!r}") from None


def _any_of(label: str, values: Sequence[str], *, then: str = "") -> str:
    """A matcher for any of `values` (followed by the regex `then`), escaped for RE2 and PromQL."""
    escaped = sorted({value.translate(_RE2_ESCAPES) for value in values})
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
    """How one source of metrics is queried for many rollouts and split back per track.

    `queries` maps each of the family's queries to the metrics its answer gives; `code` is the
    status-code label the `requests` query also groups by (traffic families only)."""

    name: str
    queries: Mapping[str, tuple[str, ...]]
    group_by: tuple[str, ...]
    selector: Callable[[Sequence[AnalysisTarget]], str]
    key: Callable[[AnalysisTarget, Track], SeriesKey]
    build: Callable[[Family, str, str, str], str]  # (family, query, selector, window) -> PromQL
    code: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(metric for metrics in self.queries.values() for metric in metrics)

    def query_of(self, metric: str) -> str:
        """The query whose answer gives `metric`."""
        return next(name for name, metrics in self.queries.items() if metric in metrics)

    def promql(self, query: str, targets: Sequence[AnalysisTarget], window: timedelta) -> str:
        return self.build(self, query, self.selector(targets), prometheus_duration(window))

    def series_key(self, labels: Mapping[str, str]) -> SeriesKey:
        return tuple(labels.get(label, "") for label in self.group_by)


@dataclass(frozen=True, kw_only=True)
class _TrafficNames:
    requests: str
    duration: str
    to_ms: float
    normalise: Callable[[str], str] = lambda expr: expr


def _traffic(names: _TrafficNames) -> Callable[[Family, str, str, str], str]:
    def build(family: Family, query: str, selector: str, window: str) -> str:
        by = ", ".join(family.group_by)

        def summed(series: str, *, by_extra: str = "") -> str:
            rate = names.normalise(f"rate({series}{{{selector}}}[{window}])")
            return f"sum by ({by}{by_extra}) ({rate})"

        if query == REQUESTS:
            return summed(names.requests, by_extra=f", {family.code}")
        to_ms = f"{names.to_ms:g} * " if names.to_ms != 1 else ""
        if query == "latency_avg_ms":
            return f"{to_ms}{summed(names.duration + '_sum')} / {summed(names.duration + '_count')}"
        buckets = summed(f"{names.duration}_bucket", by_extra=", le")
        return f"{to_ms}histogram_quantile(0.99, {buckets})"

    return build


_POD_OF_DEPLOYMENT = "-[a-z0-9]+-[a-z0-9]+"


def _saturation(family: Family, query: str, selector: str, window: str) -> str:
    by = ", ".join(family.group_by)

    def per_workload(expr: str) -> str:
        named = f'label_replace({expr}, "workload", "$1", "pod", "(.+){_POD_OF_DEPLOYMENT}")'
        return f"sum by ({by}) ({named})"

    containers = f'{selector},container!="",container!="POD"'
    if query == "cpu_saturation":
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
    queries=TRAFFIC_QUERIES,
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
            normalise=_generic_tracks,
        )
    ),
    code="code",
)
ISTIO = Family(
    name="istio",
    queries=TRAFFIC_QUERIES,
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
        )
    ),
    code="response_code",
)
NGINX = Family(
    name="nginx",
    queries=TRAFFIC_QUERIES,
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
            normalise=_nginx_tracks,
        )
    ),
    code="status",
)
CADVISOR = Family(
    name="cadvisor",
    queries=SATURATION_QUERIES,
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
