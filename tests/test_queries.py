"""Query templates, batching and splitting, and the Analyzer over a scripted provider.

The PromQL itself is checked against a real Prometheus in tests/integration; here the provider
is a script, because what is tested is pure: which queries are built, and where each returned
series ends up.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace
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
from rollout.analysis.queries import BatchQuery, plan
from rollout.analysis.templates import prometheus_duration, render

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


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
    def test_one_query_per_builtin_metric_however_many_rollouts(self) -> None:
        two, _ = plan([target(f"s{i}") for i in range(2)])
        twenty, _ = plan([target(f"s{i}") for i in range(20)])
        assert len(two) == len(twenty) == len(BUILTIN_METRICS)
        assert all(len(batch.targets) == 20 for batch in twenty)

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
        keys = {(b.family.name, b.metric, b.window) for b in batches}
        # Traffic: 4 (family, window) pairs of 5 metrics; saturation: 2 windows of 2 metrics.
        assert len(batches) == len(keys) == 5 * 4 + 2 * 2
        cpu = [b for b in batches if b.metric == "cpu_saturation" and b.window == MINUTE]
        assert [t.service for t in cpu[0].targets] == ["a", "c", "d", "e"]

    def test_generic_queries_group_by_namespace_service_and_track(self) -> None:
        batch = self.batch([target("a"), target("b", namespace="pay")], "error_rate")
        assert batch.count("sum by (namespace, service, track) (") == 3
        assert 'namespace=~"pay|shop",service=~"a|b"' in batch
        assert 'code=~"5.."' in batch
        assert "[1m]" in batch

    def test_p99_keeps_the_bucket_label(self) -> None:
        batch = self.batch([target("a")], "latency_p99_ms")
        assert batch.startswith("1000 * histogram_quantile(0.99, sum by (namespace, service, ")
        assert "track, le) (label_replace(rate(http_request_duration_seconds_bucket{" in batch

    def test_generic_series_without_a_track_label_count_as_stable(self) -> None:
        # Stable pods as teams label them (`app` only) report no `track`; only canary pods do.
        batch = self.batch([target("a")], "request_rate")
        assert batch == (
            "sum by (namespace, service, track) (label_replace("
            'rate(http_requests_total{namespace=~"shop",service=~"a"}[1m]), '
            '"track", "stable", "track", ""))'
        )

    def test_istio_groups_by_destination_workload_of_both_tracks(self) -> None:
        batch = self.batch([target("a", strategy="istio")], "request_rate")
        assert batch == (
            "sum by (destination_workload_namespace, destination_workload) "
            '(rate(istio_requests_total{reporter="destination",'
            'destination_workload_namespace=~"shop",'
            'destination_workload=~"a-deploy|a-deploy-canary"}[1m]))'
        )

    def test_nginx_tells_tracks_apart_by_the_canary_label_or_ingress(self) -> None:
        batch = self.batch([target("a", strategy="nginx", ingress="web")], "request_rate")
        assert batch.startswith("sum by (namespace, ingress, track) (label_replace(")
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
        error_batch = next(b for b in batches if b.metric == "error_rate")
        assert [t.service for t in error_batch.targets] == ["b"]
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

    @staticmethod
    def batch(targets: list[AnalysisTarget], metric: str) -> str:
        return next(b for b in plan(targets)[0] if b.metric == metric).promql


class TestSplit:
    def batch(self, *targets: AnalysisTarget, metric: str = "request_rate") -> BatchQuery:
        return next(b for b in plan(targets)[0] if b.metric == metric)

    def test_each_series_goes_to_its_rollout_and_track(self) -> None:
        batch = self.batch(target("a"), target("b", namespace="pay"))
        series = [
            Series({"namespace": "shop", "service": "a", "track": "canary"}, 5.0),
            Series({"namespace": "shop", "service": "a", "track": "stable"}, 15.0),
            Series({"namespace": "pay", "service": "b", "track": "stable"}, 20.0),
            # A service of the same name in another namespace, and an unknown track.
            Series({"namespace": "pay", "service": "a", "track": "canary"}, 99.0),
            Series({"namespace": "shop", "service": "a", "track": "blue"}, 99.0),
        ]
        assert batch.split(series) == {
            ("r-a", "canary"): 5.0,
            ("r-a", "stable"): 15.0,
            ("r-b", "stable"): 20.0,
        }

    def test_istio_and_nginx_series_are_keyed_by_their_own_labels(self) -> None:
        istio = self.batch(target("a", strategy="istio"))
        assert istio.split(
            [
                Series({"destination_workload_namespace": "shop", "destination_workload": w}, v)
                for w, v in (("a-deploy", 1.0), ("a-deploy-canary", 2.0))
            ]
        ) == {("r-a", "stable"): 1.0, ("r-a", "canary"): 2.0}
        nginx = self.batch(target("a", strategy="nginx", ingress="web"))
        assert nginx.split(
            [
                Series({"namespace": "shop", "ingress": "web"}, 1.0),
                Series({"namespace": "shop", "ingress": "web", "track": "canary"}, 2.0),
            ]
        ) == {("r-a", "stable"): 1.0, ("r-a", "canary"): 2.0}

    def test_two_series_for_one_track_are_ambiguous_not_added(self) -> None:
        batch = self.batch(target("a"), metric="error_rate")
        labels = {"namespace": "shop", "service": "a", "track": "canary"}
        split = batch.split([Series(labels, 0.1), Series(labels, 0.2)])
        assert split == {("r-a", "canary"): None}

    def test_targets_of_the_same_workload_each_get_the_value(self) -> None:
        twin = replace(target("a"), rollout_id="r-a-twin")
        batch = self.batch(target("a"), twin)
        labels = {"namespace": "shop", "service": "a", "track": "canary"}
        assert batch.split([Series(labels, 2.0)]) == {
            ("r-a", "canary"): 2.0,
            ("r-a-twin", "canary"): 2.0,
        }


class TestAnalyzer:
    def test_batched_results_become_one_measurement_per_rollout(self) -> None:
        def rate(service: str, track: str, value: float) -> Series:
            return Series({"namespace": "shop", "service": service, "track": track}, value)

        provider = ScriptedProvider(
            (
                lambda q: q.startswith(
                    "sum by (namespace, service, track) (label_replace(rate(http_requests"
                ),
                [rate("a", "canary", 1.0), rate("a", "stable", 9.0), rate("b", "canary", 3.0)],
            ),
            (lambda q: "5.." in q, [rate("a", "canary", math.nan), rate("b", "canary", 0.5)]),
        )
        measured = Analyzer(provider).measure([target("a"), target("b")], now=NOW)
        assert set(measured) == {"r-a", "r-b"}
        a, b = measured["r-a"], measured["r-b"]
        assert a.at == NOW
        assert set(a.values) == set(BUILTIN_METRICS)
        assert a.values["request_rate"] == TrackValues(1.0, 9.0)
        assert b.values["request_rate"] == TrackValues(3.0, None)
        assert a.values["error_rate"] == TrackValues(None, None)  # NaN is no data
        assert b.values["error_rate"] == TrackValues(0.5, None)
        assert len(provider.queries) == len(BUILTIN_METRICS)

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
        assert len(provider.queries) == len(BUILTIN_METRICS) - 1 + 4

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
        assert len(asked) == len(BUILTIN_METRICS)
        assert set(measured["r-a"].values) == set(BUILTIN_METRICS)

    def test_a_custom_query_with_an_unknown_placeholder_is_no_data(self) -> None:
        provider = ScriptedProvider()
        measured = Analyzer(provider).measure([target("a", custom={"x": "up{{{ pod }}}"})], now=NOW)
        assert measured["r-a"].values["x"] == TrackValues(None, None)
        assert len(provider.queries) == len(BUILTIN_METRICS)  # the built-ins only


def test_prometheus_provider_maps_a_refused_connection_to_metrics_unavailable() -> None:
    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MetricsUnavailable) as raised:
        provider.query("up")
    assert not isinstance(raised.value, QueryFailed)
    assert provider.queries_issued == 1
