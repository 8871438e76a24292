"""Fixtures of the failover tests: a real PostgreSQL database (tests/conftest.py), a real
Prometheus scraping the synthetic traffic exporter, and three `canary-bot serve` replicas
(tests/ha/harness.py) that are always stopped, whatever the test did.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.kube import KubeEmulator
from emulators.prometheus import PrometheusServer, find_prometheus_binary
from emulators.traffic import TrafficExporter
from tests.ha.harness import HaWorld, Settings, ha_world
from tests.postgres_server import PostgresServer


class FollowedCluster:
    """The exporter's `weight_of`: the canary's share of ready pods in the test's cluster."""

    def __init__(self) -> None:
        self.weight_of: Callable[[str, str], float] | None = None

    def __call__(self, namespace: str, service: str) -> float:
        weight_of = self.weight_of
        return weight_of(namespace, service) if weight_of is not None else 0.0

    def follow(self, kube: KubeEmulator) -> None:
        self.weight_of = canary_weight_from_cluster(kube)


@pytest.fixture(scope="module")
def followed() -> FollowedCluster:
    return FollowedCluster()


@pytest.fixture(scope="module")
def prometheus(followed: FollowedCluster) -> Iterator[PrometheusServer]:
    binary = find_prometheus_binary()
    if binary is None:
        message = "no prometheus binary: apt-get install prometheus (or set PROMETHEUS_BINARY)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    exporter = TrafficExporter(weight_of=followed)
    exporter.add_service("shop", "checkout", deployment="checkout", rps=40.0)
    exporter.start()
    server = PrometheusServer(targets=[exporter.address], scrape_interval="1s", binary=binary)
    try:
        server.start()
        server.wait_until_scraped()
        yield server
    finally:
        server.close()
        exporter.stop()


def relayed(url: str, server: PostgresServer) -> str:
    """The database URL with `{port}` where each replica's relay port goes."""
    where = f"@127.0.0.1:{server.port}/"
    assert where in url
    return url.replace(where, "@127.0.0.1:{port}/")


@pytest.fixture
def world(
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    prometheus: PrometheusServer,
    followed: FollowedCluster,
) -> Iterator[HaWorld]:
    with ha_world(
        tmp_path,
        database=("127.0.0.1", postgres_server.port),
        store_url_template=relayed(postgres_url, postgres_server),
        prometheus_url=prometheus.url,
        settings=Settings(),
    ) as built:
        followed.follow(built.sandbox.kube)
        built.store_url = postgres_url
        yield built
