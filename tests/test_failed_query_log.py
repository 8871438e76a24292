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
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rollout.analysis import AnalysisTarget, Analyzer
from rollout.analysis.provider import PrometheusProvider
from rollout.analysis.queries import plan

ROLLOUTS = 1_000
REFUSAL = "query processing would load too many samples into memory in query execution"
LINE_MAX = 1_000


@pytest.fixture
def refusing_prometheus() -> Iterator[str]:
    """`/api/v1/query` answering every query 422 with Prometheus's error body."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
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
        yield f"http://127.0.0.1:{server.server_address[1]}"
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
    refusing_prometheus: str, caplog: pytest.LogCaptureFixture
) -> None:
    measured = targets()
    batches, _ = plan(measured)
    assert min(len(batch.promql) for batch in batches) > 10 * LINE_MAX  # what was logged whole

    with caplog.at_level(logging.WARNING, logger="rollout.analysis.measure"):
        Analyzer(PrometheusProvider(refusing_prometheus)).measure(measured, now=datetime.now(UTC))

    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("query failed")]
    assert len(failed) == len(batches)  # one line per refused query, every one bounded
    assert max(len(line) for line in failed) < LINE_MAX, max(failed, key=len)
    for batch in batches:
        (line,) = [line for line in failed if line.startswith(f"query failed: {batch.metric} (")]
        assert f"({batch.family.name}, 5m window) for {ROLLOUTS} rollouts" in line
        assert REFUSAL in line and "422" in line
        assert batch.promql[:100] in line
