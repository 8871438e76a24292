"""Fixtures for tests against a real Prometheus scraping the synthetic traffic exporter.

Per module: one exporter and one Prometheus scraping it every second. The exporter reads canary
weights through `weight_of`: by default from `traffic_weights`, a dict the test fills; a module
that drives the Kubernetes emulator overrides `weight_of` to read the weights it really set.
Without the binary these tests skip locally with the install command, and fail in CI (`CI` set),
where `.ci/run` installs it: a real-Prometheus test must never silently not run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from emulators.prometheus import PrometheusServer, find_prometheus_binary
from emulators.traffic import TrafficExporter


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    binary = find_prometheus_binary()
    if binary is None:
        message = "no prometheus binary: apt-get install prometheus (or set PROMETHEUS_BINARY)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="module")
def traffic_weights() -> dict[tuple[str, str], float]:
    """Canary weight in percent per (namespace, service); absent means 0."""
    return {}


@pytest.fixture(scope="module")
def weight_of(traffic_weights: dict[tuple[str, str], float]) -> Callable[[str, str], float]:
    """Where the exporter reads canary weights; override it to follow the Kubernetes emulator."""
    return lambda namespace, service: traffic_weights.get((namespace, service), 0.0)


@pytest.fixture(scope="module")
def traffic_exporter(weight_of: Callable[[str, str], float]) -> Iterator[TrafficExporter]:
    exporter = TrafficExporter(weight_of=weight_of)
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, traffic_exporter: TrafficExporter
) -> Iterator[PrometheusServer]:
    """A running Prometheus that has scraped the exporter at least once."""
    server = PrometheusServer(
        targets=[traffic_exporter.address], scrape_interval="1s", binary=prometheus_binary
    )
    try:
        server.start()
        server.wait_until_scraped()
        yield server
    finally:
        server.close()
