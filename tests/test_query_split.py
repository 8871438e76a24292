"""A batched answer split back per rollout and track, and the request metrics derived from
the one request-rate-by-status-code answer (pure: series in, values out; the PromQL itself is
checked against a real Prometheus in tests/integration/test_prometheus_analysis.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from rollout.analysis import AnalysisTarget, Series
from rollout.analysis.batch import BatchQuery, plan
from tests.test_queries import target


class TestSplit:
    def batch(self, *targets: AnalysisTarget, metric: str = "latency_avg_ms") -> BatchQuery:
        return next(b for b in plan(targets)[0] if metric in b.metrics)

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
            ("r-a", "latency_avg_ms", "canary"): 5.0,
            ("r-a", "latency_avg_ms", "stable"): 15.0,
            ("r-b", "latency_avg_ms", "stable"): 20.0,
        }

    def test_istio_and_nginx_series_are_keyed_by_their_own_labels(self) -> None:
        istio = self.batch(target("a", strategy="istio"))
        assert istio.split(
            [
                Series({"destination_workload_namespace": "shop", "destination_workload": w}, v)
                for w, v in (("a-deploy", 1.0), ("a-deploy-canary", 2.0))
            ]
        ) == {("r-a", "latency_avg_ms", "stable"): 1.0, ("r-a", "latency_avg_ms", "canary"): 2.0}
        nginx = self.batch(target("a", strategy="nginx", ingress="web"))
        assert nginx.split(
            [
                Series({"namespace": "shop", "ingress": "web"}, 1.0),
                Series({"namespace": "shop", "ingress": "web", "track": "canary"}, 2.0),
            ]
        ) == {("r-a", "latency_avg_ms", "stable"): 1.0, ("r-a", "latency_avg_ms", "canary"): 2.0}

    def test_two_series_for_one_track_are_ambiguous_not_added(self) -> None:
        batch = self.batch(target("a"), metric="latency_p99_ms")
        labels = {"namespace": "shop", "service": "a", "track": "canary"}
        split = batch.split([Series(labels, 0.1), Series(labels, 0.2)])
        assert split == {("r-a", "latency_p99_ms", "canary"): None}

    def test_targets_of_the_same_workload_each_get_the_value(self) -> None:
        twin = replace(target("a"), rollout_id="r-a-twin")
        batch = self.batch(target("a"), twin)
        labels = {"namespace": "shop", "service": "a", "track": "canary"}
        assert batch.split([Series(labels, 2.0)]) == {
            ("r-a", "latency_avg_ms", "canary"): 2.0,
            ("r-a-twin", "latency_avg_ms", "canary"): 2.0,
        }


def requests_of(canary: dict[str, float], *, strategy: str = "replicas") -> dict[str, object]:
    """The three request metrics of one canary whose request rate per status code is given."""
    batch = next(b for b in plan([target("a", strategy=strategy)])[0] if b.query == "requests")
    keys = {
        "replicas": {"namespace": "shop", "service": "a", "track": "canary"},
        "istio": {
            "destination_workload_namespace": "shop",
            "destination_workload": "a-deploy-canary",
        },
        "nginx": {"namespace": "shop", "ingress": "a", "track": "canary"},
    }[strategy]
    series = [Series({**keys, batch.family.code: code}, rate) for code, rate in canary.items()]
    split = batch.split(series)
    assert not {track for _, _, track in split} - {"canary"}
    return {metric: value for (_, metric, _), value in split.items()}


class TestRequestMetrics:
    """The request metrics derived from one rate per status code say what PromQL's
    `sum(rate(...))` and `(errors or total * 0) / total` said (checked against a real
    Prometheus in tests/integration/test_prometheus_analysis.py)."""

    def test_rates_and_ratios_by_status_code(self) -> None:
        measured = requests_of({"200": 6.0, "404": 1.0, "500": 2.0, "503": 1.0})
        assert measured == {
            "request_rate": 10.0,
            "error_rate": pytest.approx(0.3),
            "success_rate": pytest.approx(0.7),
        }

    @pytest.mark.parametrize("strategy", ["istio", "nginx"])
    def test_every_family_reads_its_own_code_label(self, strategy: str) -> None:
        measured = requests_of({"200": 3.0, "502": 1.0}, strategy=strategy)
        assert measured == {"request_rate": 4.0, "error_rate": 0.25, "success_rate": 0.75}

    def test_traffic_without_errors_is_an_error_rate_of_zero(self) -> None:
        assert requests_of({"200": 4.0}) == {
            "request_rate": 4.0,
            "error_rate": 0.0,
            "success_rate": 1.0,
        }

    def test_no_traffic_is_no_data_for_the_ratios(self) -> None:
        # Series still there, rate 0: PromQL's 0/0 is NaN, which is no data.
        assert requests_of({"200": 0.0, "500": 0.0}) == {
            "request_rate": 0.0,
            "error_rate": None,
            "success_rate": None,
        }
        assert requests_of({}) == {}  # no series: no value at all, no data

    @pytest.mark.parametrize("code", ["5", "50", "5000", "600", "", "x500", "500 "])
    def test_a_code_is_an_error_only_if_it_is_three_characters_from_5(self, code: str) -> None:
        # What `code=~"5.."` matches: anchored at both ends; a missing label is "".
        measured = requests_of({"200": 1.0, code: 1.0})
        assert measured["error_rate"] == 0.0

    @pytest.mark.parametrize("code", ["500", "599", "5xx", "5.."])
    def test_every_code_matching_5_dot_dot_is_an_error(self, code: str) -> None:
        assert requests_of({"200": 3.0, code: 1.0})["error_rate"] == 0.25

    def test_a_rate_that_is_not_a_number_makes_all_three_no_data(self) -> None:
        for code in ("200", "500"):
            measured = requests_of({"200": 1.0, "500": 1.0} | {code: math.nan})
            assert measured == dict.fromkeys(("request_rate", "error_rate", "success_rate"))

    def test_two_series_for_one_status_code_are_ambiguous(self) -> None:
        batch = next(b for b in plan([target("a")])[0] if b.query == "requests")
        labels = {"namespace": "shop", "service": "a", "track": "canary", "code": "200"}
        split = batch.split([Series(labels, 1.0), Series(labels, 2.0)])
        assert set(split.values()) == {None}
        assert len(split) == 3
