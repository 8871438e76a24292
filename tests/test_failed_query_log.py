"""A query Prometheus refuses is logged in a bounded line (rollout/analysis/measure.py).

The built-in queries are batched across every rollout measured, so at 1,000 rollouts one of
them is tens of kilobytes of PromQL; logging it whole at every tick buried the log. The line
names the metric, its family and window, how many rollouts it measured, the error, and the
query's beginning. The bot's real Prometheus client asks an HTTP endpoint that refuses every
query as an overloaded Prometheus does.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from rollout.analysis import BUILTIN_METRICS, AnalysisTarget, Analyzer, PrometheusProvider

ROLLOUTS = 1_000
REFUSAL = "query processing would load too many samples into memory in query execution"
LINE_MAX = 1_000


class RefusingPrometheus:
    """`/api/v1/query` answering every query 422 with Prometheus's error body; keeps the
    queries it was sent."""

    def __init__(self, url: str, queries: list[str]) -> None:
        self.url = url
        self.queries = queries


@pytest.fixture
def refusing_prometheus() -> Iterator[RefusingPrometheus]:
    queries: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            queries.extend(parse_qs(form).get("query", []))
            body = {"status": "error", "errorType": "execution", "error": REFUSAL}
            self.send_response(422)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield RefusingPrometheus(f"http://127.0.0.1:{server.server_address[1]}", queries)
    finally:
        server.shutdown()
        server.server_close()


def targets() -> list[AnalysisTarget]:
    return [
        AnalysisTarget(
            rollout_id=f"r-{n:04d}",
            service=f"service-{n:04d}",
            namespace="shop",
            deployment=f"service-{n:04d}",
            strategy="replicas",
            ingress=None,
            window=timedelta(minutes=5),
        )
        for n in range(ROLLOUTS)
    ]


def test_a_failed_batched_query_over_many_rollouts_logs_a_bounded_line(
    refusing_prometheus: RefusingPrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    provider = PrometheusProvider(refusing_prometheus.url)
    with caplog.at_level(logging.WARNING, logger="rollout.analysis.measure"):
        Analyzer(provider).measure(targets(), now=datetime.now(UTC))

    sent = refusing_prometheus.queries
    assert min(len(query) for query in sent) > 10 * LINE_MAX  # what was logged whole
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("query failed")]
    assert len(failed) == len(sent) == provider.queries_issued  # each refused query, once
    assert max(len(line) for line in failed) < LINE_MAX, max(failed, key=len)
    for line in failed:
        assert re.search(rf"\((generic|cadvisor), 5m window\) for {ROLLOUTS} rollouts", line)
        assert any(metric in line for metric in BUILTIN_METRICS), line
        assert REFUSAL in line and "422" in line
        assert any(query[:100] in line for query in sent), line
