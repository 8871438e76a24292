"""A synthetic traffic exporter: what a real Prometheus scrapes in tests instead of a cluster.

Each service gets `rps` requests per second of wall time, split between the tracks by the
canary weight that `weight_of(namespace, service)` reports at the time (tests wire it to the
Kubernetes emulator, so the split follows the weights the bot actually set). Each track has an
error rate and a latency the test chooses. Counters are advanced when Prometheus scrapes, so
what it stores is exactly what a real app with that traffic would have shown.

Every service is exposed in all three flavours the bot reads (app metrics, Istio, NGINX
ingress) plus cAdvisor/kube-state-metrics series for each track's pods, so one exporter serves
tests of every strategy. Latencies spread around the track's latency deterministically
(0.5x, 0.8x, 1x, 1.2x, 1.5x with weights 10/20/40/20/10 %): the mean is exactly the set latency
and the p99 lands in the bucket around 1.5x.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SPREAD = ((0.5, 0.1), (0.8, 0.2), (1.0, 0.4), (1.2, 0.2), (1.5, 0.1))
CPU_LIMIT_CORES = 0.5
MEMORY_LIMIT_BYTES = 512 * 2**20
PODS = {"stable": 2, "canary": 1}
TRACKS = ("stable", "canary")


@dataclass
class _Track:
    error_rate: float = 0.0
    latency_ms: float = 50.0
    cpu_cores: float = 0.1  # per pod
    memory_bytes: float = 128 * 2**20  # per pod
    ok: float = 0.0
    errors: float = 0.0
    latency_sum_s: float = 0.0
    # Requests per bucket of BUCKETS_S, not cumulative; the last slot is beyond 10 s.
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(BUCKETS_S) + 1))
    cpu_seconds: float = 0.0  # per pod

    def serve(self, requests: float, seconds: float) -> None:
        self.errors += requests * self.error_rate
        self.ok += requests * (1 - self.error_rate)
        latency_s = self.latency_ms / 1000
        self.latency_sum_s += requests * latency_s
        for factor, share in _SPREAD:
            index = next(
                (i for i, bound in enumerate(BUCKETS_S) if latency_s * factor <= bound),
                len(BUCKETS_S),
            )
            self.buckets[index] += requests * share
        self.cpu_seconds += self.cpu_cores * seconds

    def cumulative(self, scale: float) -> list[tuple[str, float]]:
        running, out = 0.0, []
        for bound, count in zip(BUCKETS_S, self.buckets, strict=False):
            running += count
            out.append((f"{bound * scale:g}", running))
        out.append(("+Inf", running + self.buckets[-1]))
        return out


@dataclass
class _Service:
    namespace: str
    service: str
    deployment: str
    ingress: str
    rps: float
    nginx_canary_ingress: bool
    unlabelled_stable: bool = False
    tracks: dict[str, _Track] = field(default_factory=lambda: {t: _Track() for t in TRACKS})

    def pods(self, track: str) -> list[str]:
        workload = f"{self.deployment}-canary" if track == "canary" else self.deployment
        rs_hash = hashlib.sha1(workload.encode()).hexdigest()[:9]
        return [f"{workload}-{rs_hash}-{i:05x}" for i in range(PODS[track])]


class TrafficExporter:
    """`/metrics` on 127.0.0.1 (a free port) with synthetic traffic for each added service."""

    def __init__(
        self,
        *,
        weight_of: Callable[[str, str], float],
        flavours: Iterable[str] = ("generic", "istio", "nginx", "cadvisor"),
    ) -> None:
        """`flavours`: the series families to expose (a benchmark of thousands of services
        leaves out those its strategy never reads)."""
        self._weight_of = weight_of
        self._flavours = tuple(flavours)
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], _Service] = {}
        self._last = time.monotonic()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def add_service(
        self,
        namespace: str,
        service: str,
        *,
        deployment: str,
        rps: float = 20.0,
        ingress: str | None = None,
        nginx_canary_ingress: bool = False,
        unlabelled_stable: bool = False,
    ) -> None:
        """`nginx_canary_ingress`: label canary NGINX requests `ingress="<ingress>-canary"`
        (older controllers) rather than only with the `canary` label (current ones).
        `unlabelled_stable`: the app's stable series carry no `track` label, as from pods
        labelled only `app: ...` (the canary's still say `track="canary"`)."""
        self._advance()
        with self._lock:
            self._services[(namespace, service)] = _Service(
                namespace,
                service,
                deployment,
                ingress or service,
                rps,
                nginx_canary_ingress,
                unlabelled_stable,
            )

    def set_track(
        self,
        namespace: str,
        service: str,
        track: str,
        *,
        error_rate: float | None = None,
        latency_ms: float | None = None,
        cpu_cores: float | None = None,
        memory_bytes: float | None = None,
    ) -> None:
        """Change a track from now on (None keeps the current value); the past is kept."""
        self._advance()
        with self._lock:
            state = self._services[(namespace, service)].tracks[track]
            if error_rate is not None:
                state.error_rate = error_rate
            if latency_ms is not None:
                state.latency_ms = latency_ms
            if cpu_cores is not None:
                state.cpu_cores = cpu_cores
            if memory_bytes is not None:
                state.memory_bytes = memory_bytes

    def start(self) -> str:
        """Serve `/metrics`; returns the `host:port` for Prometheus' scrape config."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        self._advance()
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        return self.address

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the exporter is not running")
        return f"127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def _advance(self) -> None:
        """Serve the requests of the time since the last call, at the weights of now."""
        with self._lock:
            keys = list(self._services)
        # Outside the lock: weight_of may take the cluster emulator's own lock.
        weights = {key: min(100.0, max(0.0, self._weight_of(*key))) for key in keys}
        with self._lock:
            now = time.monotonic()
            elapsed, self._last = now - self._last, now
            for key, weight in weights.items():
                svc = self._services[key]
                canary_rps = svc.rps * weight / 100
                svc.tracks["canary"].serve(canary_rps * elapsed, elapsed)
                svc.tracks["stable"].serve((svc.rps - canary_rps) * elapsed, elapsed)

    def families(self) -> list[Metric]:
        self._advance()
        with self._lock:
            return list(_families(list(self._services.values()), self._flavours))


class _Collector(Collector):
    def __init__(self, exporter: TrafficExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        return self._exporter.families()

    def describe(self) -> Iterable[Metric]:
        return []


def _families(services: list[_Service], flavours: tuple[str, ...]) -> Iterator[Metric]:
    makers = {"generic": _generic, "istio": _istio, "nginx": _nginx, "cadvisor": _cadvisor}
    for flavour in flavours:
        yield from makers[flavour](services)


def _generic(services: list[_Service]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "http_requests", "Requests served.", labels=["namespace", "service", "track", "code"]
    )
    duration = HistogramMetricFamily(
        "http_request_duration_seconds",
        "Request latency.",
        labels=["namespace", "service", "track"],
    )
    for svc in services:
        for track, state in svc.tracks.items():
            # An empty label value is no label at all once Prometheus has scraped it.
            label = "" if svc.unlabelled_stable and track == "stable" else track
            requests.add_metric([svc.namespace, svc.service, label, "200"], state.ok)
            requests.add_metric([svc.namespace, svc.service, label, "500"], state.errors)
            duration.add_metric(
                [svc.namespace, svc.service, label], state.cumulative(1), state.latency_sum_s
            )
    yield requests
    yield duration


def _istio(services: list[_Service]) -> Iterator[Metric]:
    labels = ["reporter", "destination_workload_namespace", "destination_workload"]
    requests = CounterMetricFamily(
        "istio_requests", "Istio requests.", labels=[*labels, "response_code"]
    )
    duration = HistogramMetricFamily(
        "istio_request_duration_milliseconds", "Istio request latency.", labels=labels
    )
    for svc in services:
        for track, state in svc.tracks.items():
            workload = f"{svc.deployment}-canary" if track == "canary" else svc.deployment
            base = ["destination", svc.namespace, workload]
            requests.add_metric([*base, "200"], state.ok)
            requests.add_metric([*base, "503"], state.errors)
            duration.add_metric(base, state.cumulative(1000), state.latency_sum_s * 1000)
    yield requests
    yield duration


def _nginx(services: list[_Service]) -> Iterator[Metric]:
    labels = ["namespace", "ingress", "service", "canary"]
    # Untyped: prometheus_client would append `_total` to a counter, and the controller's
    # metric has no such suffix. rate() does not care about the declared type.
    requests = UnknownMetricFamily(
        "nginx_ingress_controller_requests", "NGINX requests.", labels=[*labels, "status"]
    )
    duration = HistogramMetricFamily(
        "nginx_ingress_controller_request_duration_seconds", "NGINX latency.", labels=labels
    )
    for svc in services:
        for track, state in svc.tracks.items():
            ingress, upstream = svc.ingress, ""
            if track == "canary":
                upstream = f"{svc.namespace}-{svc.service}-canary-80"
                if svc.nginx_canary_ingress:
                    ingress = f"{svc.ingress}-canary"
            base = [svc.namespace, ingress, svc.service, upstream]
            requests.add_metric([*base, "200"], state.ok)
            requests.add_metric([*base, "502"], state.errors)
            duration.add_metric(base, state.cumulative(1), state.latency_sum_s)
    yield requests
    yield duration


def _cadvisor(services: list[_Service]) -> Iterator[Metric]:
    pod_labels = ["namespace", "pod", "container"]
    cpu = CounterMetricFamily("container_cpu_usage_seconds", "cAdvisor CPU.", labels=pod_labels)
    memory = GaugeMetricFamily(
        "container_memory_working_set_bytes", "cAdvisor memory.", labels=pod_labels
    )
    limits = GaugeMetricFamily(
        "kube_pod_container_resource_limits",
        "kube-state-metrics limits.",
        labels=[*pod_labels, "resource", "unit"],
    )
    for svc in services:
        for track, state in svc.tracks.items():
            for pod in svc.pods(track):
                # cAdvisor also reports the pod's cgroup (container="") and the pause
                # container ("POD"); the bot's queries must leave both out.
                for container, share in (("app", 1.0), ("", 1.0), ("POD", 0.01)):
                    cpu.add_metric([svc.namespace, pod, container], state.cpu_seconds * share)
                    memory.add_metric([svc.namespace, pod, container], state.memory_bytes * share)
                limits.add_metric([svc.namespace, pod, "app", "cpu", "core"], CPU_LIMIT_CORES)
                limits.add_metric([svc.namespace, pod, "app", "memory", "byte"], MEMORY_LIMIT_BYTES)
    yield cpu
    yield memory
    yield limits
