"""Query templates and batching, and the Analyzer over a scripted provider (splitting an
answer back per rollout: tests/test_query_split.py).

The PromQL itself is checked against a real Prometheus in tests/integration; here the provider
is a script, because what is tested is pure: which queries are built, and where each returned
series ends up.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from emulators.prometheus import free_port
from rollout.analysis import (
    BUILTIN_METRICS,
    AnalysisTarget,
    Analyzer,
    MetricsUnavailable,
    PrometheusProvider,
    QueryFailed,
    Series,
    TemplateError,
    TrackValues,
    check_template,
    flavour_of,
)
from rollout.analysis.batch import plan
from rollout.analysis.queries import TRAFFIC_QUERIES
from rollout.analysis.templates import prometheus_duration, render

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# One generic rollout's built-in queries: requests by code, mean latency, p99, CPU, memory.
QUERIES_PER_TICK = 5


def target(
    name: str,
    *,
    strategy: str = "replicas",
    namespace: str = "shop",
    window: timedelta = MINUTE,
    custom: dict[str, str] | None = None,
    ingress: str | None = None,
) -> AnalysisTarget:
    return AnalysisTarget(
        rollout_id=f"r-{name}",
        service=name,
        namespace=namespace,
        deployment=f"{name}-deploy",
        strategy=strategy,
        ingress=ingress,
        window=window,
        custom_metrics=custom or {},
    )


class ScriptedProvider:
    """Answers by the first rule whose predicate matches the PromQL; records every query."""

    def __init__(self, *rules: tuple[Callable[[str], bool], list[Series] | Exception]) -> None:
        self.rules = rules
        self.queries: list[str] = []

    def query(self, promql: str) -> list[Series]:
        self.queries.append(promql)
        for matches, answer in self.rules:
            if matches(promql):
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return []


class TestTemplates:
    def test_every_placeholder_is_rendered(self) -> None:
        text = render(
            'rate(x{ns="{{ namespace }}",s="{{service}}",d="{{  deployment }}",'
            't="{{ track }}"}[{{ window }}])',
            namespace="shop",
            service="checkout",
            deployment="checkout-canary",
            track="canary",
            window=timedelta(seconds=90),
        )
        assert text == 'rate(x{ns="shop",s="checkout",d="checkout-canary",t="canary"}[90s])'

    @pytest.mark.parametrize(
        ("window", "text"),
        [
            (timedelta(minutes=1), "1m"),
            (timedelta(seconds=90), "90s"),
            (timedelta(hours=2), "2h"),
            (timedelta(minutes=90), "90m"),
            (timedelta(milliseconds=1500), "1500ms"),
        ],
    )
    def test_windows_are_prometheus_durations(self, window: timedelta, text: str) -> None:
        assert prometheus_duration(window) == text

    def test_a_zero_window_is_refused(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            prometheus_duration(timedelta(0))

    def test_unknown_placeholders_are_named(self) -> None:
        with pytest.raises(TemplateError, match=r"unknown placeholder \{\{ pod \}\}"):
            check_template('up{pod="{{ pod }}"}')
        check_template('up{namespace="{{ namespace }}"} and on() vector(1){a="{b}"}')


class TestBatching:
    def test_five_queries_give_the_seven_builtin_metrics_however_many_rollouts(self) -> None:
        two, _ = plan([target(f"s{i}") for i in range(2)])
        twenty, _ = plan([target(f"s{i}") for i in range(20)])
        assert len(two) == len(twenty) == QUERIES_PER_TICK
        assert all(len(batch.targets) == 20 for batch in twenty)
        assert sorted(m for batch in twenty for m in batch.metrics) == sorted(BUILTIN_METRICS)

    def test_windows_and_flavours_batch_apart_saturation_is_shared(self) -> None:
        batches, _ = plan(
            [
                target("a"),
                target("b", window=timedelta(minutes=5)),
                target("c", strategy="istio"),
                target("d", strategy="nginx"),
                target("e", strategy="gateway"),
            ]
        )
        keys = {(b.family.name, b.query, b.window) for b in batches}
        # Traffic: 4 (family, window) pairs of 3 queries; saturation: 2 windows of 2 queries.
        assert len(batches) == len(keys) == 3 * 4 + 2 * 2
        cpu = [b for b in batches if b.query == "cpu_saturation" and b.window == MINUTE]
        assert [t.service for t in cpu[0].targets] == ["a", "c", "d", "e"]

    def test_generic_queries_group_by_namespace_service_and_track(self) -> None:
        batch = self.batch([target("a"), target("b", namespace="pay")], "latency_avg_ms")
        assert batch.count("sum by (namespace, service, track) (") == 2
        assert 'namespace=~"pay|shop",service=~"a|b"' in batch
        assert "[1m]" in batch

    def test_the_request_metrics_are_one_rate_by_status_code(self) -> None:
        """request_rate, error_rate and success_rate come from one query: each request
        series' rate is evaluated once, not five times (three ratios over the total)."""
        queries = {
            "replicas": ("namespace, service, track, code", "http_requests_total"),
            "istio": (
                "destination_workload_namespace, destination_workload, response_code",
                "istio_requests_total",
            ),
            "nginx": ("namespace, ingress, track, status", "nginx_ingress_controller_requests"),
        }
        for strategy, (by, series) in queries.items():
            batches, _ = plan([target("a", strategy=strategy)])
            asked = [b for b in batches if set(b.metrics) & set(TRAFFIC_QUERIES["requests"])]
            assert len(asked) == 1, strategy
            (requests,) = asked
            assert set(requests.metrics) == {"request_rate", "error_rate", "success_rate"}
            assert requests.promql.startswith(f"sum by ({by}) ("), strategy
            assert requests.promql.count(f"rate({series}{{") == 1, strategy
            assert "5.." not in requests.promql

    def test_p99_keeps_the_bucket_label(self) -> None:
        batch = self.batch([target("a")], "latency_p99_ms")
        assert batch.startswith("1000 * histogram_quantile(0.99, sum by (namespace, service, ")
        assert "track, le) (label_replace(rate(http_request_duration_seconds_bucket{" in batch

    def test_generic_series_without_a_track_label_count_as_stable(self) -> None:
        # Stable pods as teams label them (`app` only) report no `track`; only canary pods do.
        batch = self.batch([target("a")], "request_rate")
        assert batch == (
            "sum by (namespace, service, track, code) (label_replace("
            'rate(http_requests_total{namespace=~"shop",service=~"a"}[1m]), '
            '"track", "stable", "track", ""))'
        )

    def test_istio_groups_by_destination_workload_of_both_tracks(self) -> None:
        batch = self.batch([target("a", strategy="istio")], "request_rate")
        assert batch == (
            "sum by (destination_workload_namespace, destination_workload, response_code) "
            '(rate(istio_requests_total{reporter="destination",'
            'destination_workload_namespace=~"shop",'
            'destination_workload=~"a-deploy|a-deploy-canary"}[1m]))'
        )

    def test_nginx_tells_tracks_apart_by_the_canary_label_or_ingress(self) -> None:
        batch = self.batch([target("a", strategy="nginx", ingress="web")], "request_rate")
        assert batch.startswith("sum by (namespace, ingress, track, status) (label_replace(")
        assert 'ingress=~"web|web-canary"' in batch
        assert '"track", "canary", "canary", ".+"' in batch
        assert '"ingress", "$1", "ingress", "(.+)-canary"' in batch

    def test_saturation_matches_pods_of_both_deployments(self) -> None:
        batch = self.batch([target("a"), target("b")], "memory_saturation")
        pods = 'pod=~"(a-deploy|a-deploy-canary|b-deploy|b-deploy-canary)-[a-z0-9]+-[a-z0-9]+"'
        assert batch.count(pods) == 2
        assert 'container!="",container!="POD"' in batch
        assert 'resource="memory"' in batch

    def test_regex_characters_in_names_are_escaped(self) -> None:
        batch = self.batch([target("a.b")], "request_rate")
        assert 'service=~"a\\\\.b"' in batch

    def test_a_custom_metric_replaces_the_builtin_of_that_name(self) -> None:
        custom = {
            "error_rate": 'sum(rate(errs{d="{{ deployment }}",t="{{ track }}"}[{{ window }}]))',
            "queue_depth": 'max(queue{ns="{{ namespace }}",svc="{{ service }}"})',
        }
        batches, customs = plan([target("a", custom=custom), target("b")])
        # `a` still needs the request query for its request and success rates.
        requests = next(b for b in batches if "error_rate" in b.metrics)
        assert [t.service for t in requests.targets] == ["a", "b"]
        labels = {"namespace": "shop", "service": "a", "track": "canary", "code": "500"}
        split = requests.split([Series(labels, 1.0)])
        assert ("r-a", "error_rate", "canary") not in split
        assert split[("r-a", "request_rate", "canary")] == 1.0
        assert [(c.metric, c.track, c.promql) for c in customs] == [
            ("error_rate", "canary", 'sum(rate(errs{d="a-deploy-canary",t="canary"}[1m]))'),
            ("error_rate", "stable", 'sum(rate(errs{d="a-deploy",t="stable"}[1m]))'),
            ("queue_depth", "canary", 'max(queue{ns="shop",svc="a"})'),
            ("queue_depth", "stable", 'max(queue{ns="shop",svc="a"})'),
        ]

    def test_strategies_map_to_flavours(self) -> None:
        assert [flavour_of(s) for s in ("replicas", "service", "gateway", "argo")] == [
            "generic"
        ] * 4
        assert (flavour_of("istio"), flavour_of("nginx")) == ("istio", "nginx")
        with pytest.raises(ValueError, match="linkerd"):
            flavour_of("linkerd")

    def test_a_target_whose_own_queries_replace_a_whole_query_is_left_out_of_it(self) -> None:
        own = dict.fromkeys(TRAFFIC_QUERIES["requests"], "sum(up)")
        batches, _ = plan([target("a", custom=own), target("b")])
        requests = next(b for b in batches if b.query == "requests")
        assert [t.service for t in requests.targets] == ["b"]

    @staticmethod
    def batch(targets: list[AnalysisTarget], metric: str) -> str:
        return next(b for b in plan(targets)[0] if metric in b.metrics).promql


class TestAnalyzer:
    def test_batched_results_become_one_measurement_per_rollout(self) -> None:
        def rate(service: str, track: str, value: float, code: str = "200") -> Series:
            labels = {"namespace": "shop", "service": service, "track": track, "code": code}
            return Series(labels, value)

        provider = ScriptedProvider(
            (
                lambda q: q.startswith(
                    "sum by (namespace, service, track, code) (label_replace(rate(http_requests"
                ),
                [
                    rate("a", "canary", 1.0),
                    rate("a", "canary", math.nan, "500"),
                    rate("a", "stable", 9.0),
                    rate("b", "canary", 1.5),
                    rate("b", "canary", 1.5, "500"),
                ],
            ),
            (lambda q: "_sum" in q, [rate("b", "stable", 120.0)]),
        )
        measured = Analyzer(provider).measure([target("a"), target("b")], now=NOW)
        assert set(measured) == {"r-a", "r-b"}
        a, b = measured["r-a"], measured["r-b"]
        assert a.at == NOW
        assert set(a.values) == set(BUILTIN_METRICS)
        assert a.values["request_rate"] == TrackValues(None, 9.0)  # NaN is no data
        assert b.values["request_rate"] == TrackValues(3.0, None)
        assert a.values["error_rate"] == TrackValues(None, 0.0)
        assert b.values["error_rate"] == TrackValues(0.5, None)
        assert b.values["success_rate"] == TrackValues(0.5, None)
        assert b.values["latency_avg_ms"] == TrackValues(None, 120.0)
        assert len(provider.queries) == QUERIES_PER_TICK

    def test_unreachable_prometheus_gives_no_data_and_stops_querying(self) -> None:
        provider = ScriptedProvider((lambda q: True, MetricsUnavailable("connection refused")))
        targets = [target("a"), target("b", strategy="istio", custom={"x": "up"})]
        measured = Analyzer(provider).measure(targets, now=NOW)
        assert len(provider.queries) == 1
        for measurement in measured.values():
            assert measurement.at == NOW
            assert all(v == TrackValues(None, None) for v in measurement.values.values())
        assert set(measured["r-b"].values) == {*BUILTIN_METRICS, "x"}

    def test_a_failing_custom_query_costs_only_its_metric(self) -> None:
        custom = {"error_rate": "broken(", "queue": 'queue{t="{{ track }}"}'}
        provider = ScriptedProvider(
            (lambda q: q == "broken(", QueryFailed("parse error")),
            (lambda q: q == 'queue{t="canary"}', [Series({}, 7.0)]),
            (lambda q: q == 'queue{t="stable"}', [Series({"pod": "1"}, 1.0), Series({}, 2.0)]),
            (
                lambda q: "http_requests_total" in q,
                [Series({"namespace": "shop", "service": "a", "track": "canary"}, 4.0)],
            ),
        )
        measured = Analyzer(provider).measure([target("a", custom=custom)], now=NOW)["r-a"]
        assert measured.values["error_rate"] == TrackValues(None, None)
        # Several series for one track cannot be merged safely: no data, not a guess.
        assert measured.values["queue"] == TrackValues(7.0, None)
        assert measured.values["request_rate"] == TrackValues(4.0, None)
        # error_rate is replaced, but request_rate and success_rate need the request query.
        assert len(provider.queries) == QUERIES_PER_TICK + 4

    def test_the_queries_after_the_first_run_side_by_side(self) -> None:
        """Every query after the first waits at a barrier for a second one under way at the
        same time: one after the other, each would wait out the barrier and fail."""
        pair = threading.Barrier(2, timeout=30)
        asked: list[str] = []

        class Paired:
            def query(self, promql: str) -> list[Series]:
                asked.append(promql)
                if len(asked) > 1:
                    pair.wait()
                return []

        measured = Analyzer(Paired(), concurrency=2).measure([target("a")], now=NOW)
        assert len(asked) == QUERIES_PER_TICK
        assert set(measured["r-a"].values) == set(BUILTIN_METRICS)

    def test_a_custom_query_with_an_unknown_placeholder_is_no_data(self) -> None:
        provider = ScriptedProvider()
        measured = Analyzer(provider).measure([target("a", custom={"x": "up{{{ pod }}}"})], now=NOW)
        assert measured["r-a"].values["x"] == TrackValues(None, None)
        assert len(provider.queries) == QUERIES_PER_TICK  # the built-ins only


def test_prometheus_provider_maps_a_refused_connection_to_metrics_unavailable() -> None:
    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MetricsUnavailable) as raised:
        provider.query("up")
    assert not isinstance(raised.value, QueryFailed)
    assert provider.queries_issued == 1
