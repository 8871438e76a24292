"""Measuring and judging against a real Prometheus scraping the synthetic traffic exporter.

What a fake cannot show: that the built-in PromQL of every flavour really evaluates to the
traffic split, error rate, latency and saturation the exporter produced; that batching keeps
the query count flat as rollouts are added; and that an outage reads as "no data" and ends.
Windows are 10 s with 1 s scrapes, so the module runs in about half a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests

from emulators.prometheus import PrometheusServer
from emulators.traffic import TrafficExporter
from rollout.analysis import (
    AnalysisTarget,
    Analyzer,
    Measurement,
    PrometheusProvider,
    QueryFailed,
    Series,
    Verdict,
    flavour_of,
    judge,
)
from rollout.analysis.provider import parse_result
from rollout.analysis.queries import FAMILIES, REQUESTS, Family
from rollout.analysis.templates import prometheus_duration
from rollout.config import Rule

pytestmark = pytest.mark.prometheus

WINDOW = timedelta(seconds=10)
RPS = 40.0
NS = "shop"
DESIGN_ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{ namespace }}",service="{{ service }}",'
    'track="{{ track }}",code=~"5.."}[{{ window }}])) / sum(rate(http_requests_total{'
    'namespace="{{ namespace }}",service="{{ service }}",track="{{ track }}"}[{{ window }}]))'
)


@dataclass(frozen=True)
class Svc:
    name: str
    strategy: str
    weight: float
    canary_errors: float
    canary_ms: float
    stable_ms: float
    ingress: str | None = None
    old_nginx: bool = False
    unlabelled_stable: bool = False  # stable pods labelled only `app`: no `track` on series


SERVICES = (
    Svc("checkout", "replicas", 25, 0.20, 300, 80),
    Svc("search", "istio", 50, 0.05, 150, 40),
    Svc("cart", "nginx", 10, 0.10, 700, 120, ingress="cart-web"),
    Svc("basket", "nginx", 40, 0.30, 60, 30, old_nginx=True),
    Svc("payments", "gateway", 30, 0.15, 250, 70, unlabelled_stable=True),
)
FILLER = [f"svc-{i:02d}" for i in range(18)]  # more rollouts for the batching test
IDLE = Svc("idle", "replicas", 0, 0.0, 50, 50)  # weight 0: the canary serves no request


def target(svc: Svc, *, custom: dict[str, str] | None = None, suffix: str = "") -> AnalysisTarget:
    return AnalysisTarget(
        rollout_id=f"rollout-{svc.name}{suffix}",
        service=svc.name,
        namespace=NS,
        deployment=f"{svc.name}-app",
        strategy=svc.strategy,
        ingress=svc.ingress,
        window=WINDOW,
        custom_metrics=custom or {},
    )


@pytest.fixture(scope="module")
def traffic(
    traffic_exporter: TrafficExporter, traffic_weights: dict[tuple[str, str], float]
) -> TrafficExporter:
    for svc in SERVICES:
        traffic_weights[(NS, svc.name)] = svc.weight
        traffic_exporter.add_service(
            NS,
            svc.name,
            deployment=f"{svc.name}-app",
            rps=RPS,
            ingress=svc.ingress,
            nginx_canary_ingress=svc.old_nginx,
            unlabelled_stable=svc.unlabelled_stable,
        )
        traffic_exporter.set_track(
            NS, svc.name, "canary", error_rate=svc.canary_errors, latency_ms=svc.canary_ms
        )
        traffic_exporter.set_track(NS, svc.name, "stable", latency_ms=svc.stable_ms)
    traffic_exporter.add_service(NS, IDLE.name, deployment=f"{IDLE.name}-app", rps=RPS)
    for i, name in enumerate(FILLER):
        traffic_weights[(NS, name)] = 5 * (i % 4 + 1)
        traffic_exporter.add_service(NS, name, deployment=f"{name}-app", rps=10)
    return traffic_exporter


@pytest.fixture(scope="module")
def provider(traffic: TrafficExporter, prometheus: PrometheusServer) -> PrometheusProvider:
    # The exporter has been scraped once; give Prometheus one window of samples, so rate()
    # covers the whole window instead of extrapolating from a few seconds.
    time.sleep(WINDOW.total_seconds() + 1)
    return PrometheusProvider(prometheus.url, timeout=timedelta(seconds=3))


def measure(provider: PrometheusProvider, targets: list[AnalysisTarget]) -> dict[str, Measurement]:
    return Analyzer(provider).measure(targets, now=datetime.now(UTC))


def test_every_flavour_measures_what_the_exporter_served(provider: PrometheusProvider) -> None:
    measured = measure(provider, [target(svc) for svc in SERVICES])
    for svc in SERVICES:
        values = measured[f"rollout-{svc.name}"].values
        rate = values["request_rate"]
        assert rate.canary is not None and rate.stable is not None, svc.name
        assert rate.canary + rate.stable == pytest.approx(RPS, rel=0.25), svc.name
        share = 100 * rate.canary / (rate.canary + rate.stable)
        assert share == pytest.approx(svc.weight, rel=0.25), svc.name
        assert values["error_rate"].canary == pytest.approx(svc.canary_errors, abs=0.02)
        assert values["error_rate"].stable == 0.0, svc.name
        assert values["success_rate"].canary == pytest.approx(1 - svc.canary_errors, abs=0.02)
        assert values["success_rate"].stable == 1.0, svc.name
        # The exporter's mean latency is exact; p99 is interpolated inside the bucket that
        # holds the slowest tenth (1.5x the latency).
        assert values["latency_avg_ms"].canary == pytest.approx(svc.canary_ms, rel=0.05)
        assert values["latency_avg_ms"].stable == pytest.approx(svc.stable_ms, rel=0.05)
        p99 = values["latency_p99_ms"].canary
        low, high = bucket_around(1.5 * svc.canary_ms)
        assert p99 is not None and low < p99 <= high, (svc.name, p99)
        # 0.1 core and 128 MiB per pod against limits of 0.5 core and 512 MiB.
        for track in ("canary", "stable"):
            assert values["cpu_saturation"].of(track) == pytest.approx(0.2, rel=0.25)
            assert values["memory_saturation"].of(track) == pytest.approx(0.25, rel=0.01)


class AtInstant:
    """The bot's provider protocol over Prometheus's query API, every query evaluated at one
    instant, so that two ways of asking for the same metric see the same samples."""

    def __init__(self, url: str, *, at: float) -> None:
        self._url, self._at = url, at

    def query(self, promql: str) -> list[Series]:
        form = {"query": promql, "time": f"{self._at:.3f}"}
        answer = requests.post(f"{self._url}/api/v1/query", data=form, timeout=10)
        answer.raise_for_status()
        return parse_result(answer.json()["data"]["result"])


def ratio_promql(family: Family, targets: list[AnalysisTarget]) -> dict[str, str]:
    """The request metrics as PromQL computes them (as the bot asked for them before it asked
    for one rate by status code): sums, and `(part or total * 0) / total`."""
    selector = family.selector(targets)
    window = prometheus_duration(WINDOW)
    by = ", ".join(family.group_by)

    def total(matcher: str = "") -> str:
        matchers = ",".join(part for part in (selector, matcher) if part)
        return f"sum by ({by}) ({family.build(family, REQUESTS, matchers, window)})"

    errors, successes = total(f'{family.code}=~"5.."'), total(f'{family.code}!~"5.."')
    return {
        "request_rate": total(),
        "error_rate": f"({errors} or {total()} * 0) / {total()}",
        "success_rate": f"({successes} or {total()} * 0) / {total()}",
    }


def test_request_metrics_are_what_the_promql_ratios_give(
    provider: PrometheusProvider, prometheus: PrometheusServer
) -> None:
    """The three request metrics derived from one rate per status code equal, on the same
    samples, what Prometheus computes for them: for every flavour, a canary with errors, a
    stable without (error rate 0, success rate 1), and a canary without traffic (no data).
    (`provider`: once Prometheus holds a window of samples.)"""
    at = AtInstant(prometheus.url, at=time.time() - 1)
    targets = [target(svc) for svc in (*SERVICES, IDLE)]
    measured = Analyzer(at).measure(targets, now=datetime.now(UTC))
    compared = 0
    for flavour in ("generic", "istio", "nginx"):
        family = FAMILIES[flavour][0]
        members = [t for t in targets if flavour_of(t.strategy) == flavour]
        for metric, promql in ratio_promql(family, members).items():
            answer = {family.series_key(one.labels): one.value for one in at.query(promql)}
            for t in members:
                for track in ("canary", "stable"):
                    expected = answer.get(family.key(t, track))
                    value = measured[t.rollout_id].values[metric].of(track)
                    where = (t.service, metric, track)
                    if expected is None:
                        assert value is None, where
                    else:
                        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), where
                        compared += 1
    assert compared >= 3 * 2 * len(SERVICES)
    idle = measured[f"rollout-{IDLE.name}"].values
    assert idle["request_rate"].canary == 0.0
    assert (idle["error_rate"].canary, idle["success_rate"].canary) == (None, None)
    assert (idle["error_rate"].stable, idle["success_rate"].stable) == (0.0, 1.0)


def test_custom_queries_override_add_and_fail_alone(provider: PrometheusProvider) -> None:
    checkout = SERVICES[0]
    custom = {
        "error_rate": DESIGN_ERROR_RATE,
        "ok_rate": 'sum(rate(http_requests_total{service="{{ service }}",'
        'track="{{ track }}",code="200"}[{{ window }}]))',
        "broken": "sum(rate(http_requests_total[{{ window }}]",
    }
    measured = measure(provider, [target(checkout), target(checkout, custom=custom, suffix="-c")])
    builtin, own = measured["rollout-checkout"].values, measured["rollout-checkout-c"].values
    assert own["error_rate"].canary == pytest.approx(checkout.canary_errors, abs=0.02)
    assert own["error_rate"].canary == pytest.approx(builtin["error_rate"].canary, abs=0.01)
    ok_rate, rate = own["ok_rate"].canary, builtin["request_rate"].canary
    assert ok_rate is not None and rate is not None
    assert ok_rate == pytest.approx(rate * (1 - checkout.canary_errors), rel=0.1)
    assert (own["broken"].canary, own["broken"].stable) == (None, None)
    assert own["request_rate"].canary == pytest.approx(rate, rel=0.1)
    with pytest.raises(QueryFailed):
        provider.query("sum(rate(http_requests_total[10s]")


def test_twenty_rollouts_cost_as_many_queries_as_two(provider: PrometheusProvider) -> None:
    def queries_for(targets: list[AnalysisTarget]) -> tuple[int, dict[str, Measurement]]:
        before = provider.queries_issued
        measured = measure(provider, targets)
        return provider.queries_issued - before, measured

    generic, istio = SERVICES[0], SERVICES[1]
    two, _ = queries_for([target(generic), target(istio)])
    fillers = [
        AnalysisTarget(
            rollout_id=f"rollout-{name}",
            service=name,
            namespace=NS,
            deployment=f"{name}-app",
            strategy="replicas" if i % 2 else "istio",
            ingress=None,
            window=WINDOW,
        )
        for i, name in enumerate(FILLER)
    ]
    twenty, measured = queries_for([target(generic), target(istio), *fillers])
    assert two == twenty == 3 + 3 + 2  # generic and istio traffic, shared saturation
    for i, name in enumerate(FILLER):
        rate = measured[f"rollout-{name}"].values["request_rate"]
        assert rate.canary is not None and rate.stable is not None, name
        weight = 5 * (i % 4 + 1)
        assert 100 * rate.canary / (rate.canary + rate.stable) == pytest.approx(weight, rel=0.25)


def test_an_outage_is_no_data_and_data_returns_with_prometheus(
    provider: PrometheusProvider, prometheus: PrometheusServer
) -> None:
    rules = [Rule.model_validate({"metric": "error_rate", "above": 0.5, "for": "0s"})]
    targets = [target(svc) for svc in SERVICES]
    interval = timedelta(seconds=1)

    def verdict(history: list[Measurement]) -> Verdict:
        now = history[-1].at
        return judge(rules=rules, history=history, now=now, analysis_interval=interval).verdict

    healthy = measure(provider, targets)["rollout-checkout"]
    assert verdict([healthy]) is Verdict.HEALTHY

    prometheus.stop()
    # A query timeout far beyond the bound below: a tick that waited out a query, or backed
    # off and retried, takes 30 s; failing fast on a refused connection takes milliseconds, so
    # 10 s cannot be missed by a loaded machine.
    patient = PrometheusProvider(prometheus.url, timeout=timedelta(seconds=30))
    try:
        started = time.monotonic()
        down = measure(patient, targets)
        assert time.monotonic() - started < 10
        assert patient.queries_issued == 1  # the rest of the tick is skipped
        for measurement in down.values():
            assert all(v.canary is None and v.stable is None for v in measurement.values.values())
        outage = down["rollout-checkout"]
        assert verdict([healthy, outage]) is Verdict.NO_DATA
    finally:
        prometheus.start()
    prometheus.wait_until_scraped()
    back = wait_for(lambda: measure(provider, targets)["rollout-checkout"], timeout=15)
    assert back.values["error_rate"].canary == pytest.approx(0.2, abs=0.03)
    assert verdict([healthy, outage, back]) is Verdict.HEALTHY


def wait_for(get: Callable[[], Measurement], *, timeout: float) -> Measurement:
    """Poll until every built-in value of the canary is measured again."""
    deadline = time.monotonic() + timeout
    while True:
        measurement = get()
        if all(v.canary is not None for v in measurement.values.values()):
            return measurement
        if time.monotonic() > deadline:
            pytest.fail(f"no data {timeout:g}s after Prometheus came back: {measurement}")
        time.sleep(0.5)


def bucket_around(ms: float) -> tuple[float, float]:
    bounds = [0.0] + [s * 1000 for s in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)]
    upper = next(i for i, b in enumerate(bounds) if ms <= b)
    return bounds[upper - 1], bounds[upper]
