"""A real Prometheus server for tests: the Debian binary on a free loopback port.

The bot's queries are only worth something if a real Prometheus evaluates them, so tests do
not fake the HTTP API: they run `/usr/bin/prometheus` with a temporary config and TSDB,
scraping the synthetic traffic exporter. `stop()` keeps the data and the port so `start()` can
bring the same server back, which is how outage tests take Prometheus away mid-rollout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def find_prometheus_binary() -> str | None:
    """`$PROMETHEUS_BINARY`, else `prometheus` on PATH, else the Debian package's path."""
    candidates = [os.environ.get("PROMETHEUS_BINARY"), shutil.which("prometheus")]
    candidates.append("/usr/bin/prometheus")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusServer:
    def __init__(
        self,
        *,
        targets: Sequence[str],
        scrape_interval: str = "1s",
        binary: str | None = None,
        slow_targets: Sequence[str] = (),
        slow_interval: str = "5s",
    ) -> None:
        """`slow_targets` are scraped every `slow_interval` instead (a big exporter that
        cannot be rendered every second beside a small one that is)."""
        found = binary or find_prometheus_binary()
        if found is None:
            raise FileNotFoundError("no prometheus binary: apt-get install prometheus")
        self._binary = found
        self._targets = list(targets)
        self._scrape_interval = scrape_interval
        self._slow_targets = list(slow_targets)
        self._slow_interval = slow_interval
        self._dir: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("Prometheus was never started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start (or start again, same port and data); returns the URL once ready."""
        if self.running:
            return self.url
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="canary-bot-prometheus-"))
            self._port = free_port()
            self._write_config()
        assert self._dir is not None
        with (self._dir / "prometheus.log").open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    f"--config.file={self._dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self._dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self._port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()
        return self.url

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers); data and port are kept for start()."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        """Stop and remove the temporary config and data."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def wait_until_scraped(self, *, timeout: float = 20.0) -> None:
        """Block until every target has been scraped successfully since the last start.

        Prometheus hands new targets to its scrapers only every 5 s, so the first sample
        arrives some seconds after `/-/ready`; tests that need data wait here first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"{self.url}/api/v1/targets", timeout=1).json()
                active = answer["data"]["activeTargets"]
                if len(active) == len(self._targets) + len(self._slow_targets) and all(
                    target["health"] == "up" for target in active
                ):
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Prometheus did not scrape {self._targets} within {timeout:g}s")

    def _write_config(self) -> None:
        assert self._dir is not None
        interval = self._scrape_interval
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                # Prometheus refuses a timeout longer than the interval (default 10s).
                "scrape_timeout": interval,
            },
            "scrape_configs": [
                {"job_name": "traffic", "static_configs": [{"targets": self._targets}]}
            ],
        }
        if self._slow_targets:
            config["scrape_configs"].append(
                {
                    "job_name": "traffic-slow",
                    "scrape_interval": self._slow_interval,
                    "scrape_timeout": self._slow_interval,
                    "static_configs": [{"targets": self._slow_targets}],
                }
            )
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"Prometheus exited at start-up:\n{self._log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Prometheus not ready after {READY_TIMEOUT_S:g}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        assert self._dir is not None
        lines = (self._dir / "prometheus.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-20:])
