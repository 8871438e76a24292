"""Prometheus over TLS: verified by default, a CA bundle from config, credentials sent.

A real TLS endpoint on 127.0.0.1 with a certificate from a throw-away CA made by the openssl
CLI in the test. It speaks Prometheus' instant-query API (`/api/v1/query`) with a fixed answer
and records the `Authorization` header of each request, which is what these tests are about:
whether the bot trusts a certificate and what it sends. The provider is built the way
`serve` builds it, from a config section and an environment.
"""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import InsecureRequestWarning

from bot.config_loader import load_config_text
from bot.prometheus import PrometheusSetupError, prometheus_access
from rollout.analysis import MetricsUnavailable, PrometheusProvider, Series

ANSWER = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [{"metric": {"track": "canary"}, "value": [1700000000, "0.25"]}],
    },
}


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path


@dataclass
class TlsPrometheus:
    url: str
    authorizations: list[str | None] = field(default_factory=list)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 signed by it (valid one day)."""
    where = tmp_path_factory.mktemp("tls")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-subj", "/CN=canary-bot test CA", "-days", "1", cwd=where,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=where,
    )  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext", cwd=where,
    )  # fmt: skip
    return Certificates(ca=where / "ca.pem", cert=where / "server.pem", key=where / "server.key")


@pytest.fixture
def prometheus(certificates: Certificates) -> Iterator[TlsPrometheus]:
    seen: list[str | None] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the bot POSTs its queries (rollout/analysis/provider.py)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.headers.get("Authorization"))
            body = json.dumps(ANSWER).encode()
            code = 200 if self.path == "/api/v1/query" else 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TlsPrometheus(
            url=f"https://127.0.0.1:{server.server_address[1]}", authorizations=seen
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def provider(url: str, section: str, env: dict[str, str] | None = None) -> PrometheusProvider:
    """What `serve` builds from a config file's `prometheus:` section and its environment."""
    config = load_config_text(f"prometheus:\n  url: {url}\n{section}")
    access = prometheus_access(config.prometheus, env or {})
    return PrometheusProvider(config.prometheus.url, access=access)


def test_an_unknown_certificate_is_refused_by_default(prometheus: TlsPrometheus) -> None:
    with pytest.raises(MetricsUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        provider(prometheus.url, "").query("up")
    assert prometheus.authorizations == []  # no request got through the handshake


def test_the_configured_ca_bundle_is_trusted(
    prometheus: TlsPrometheus, certificates: Certificates
) -> None:
    metrics = provider(prometheus.url, f"  tls: {{ca_file: {certificates.ca}}}\n")
    assert metrics.query("up") == [Series({"track": "canary"}, 0.25)]


def test_insecure_skip_verify_works_and_warns_at_start(
    prometheus: TlsPrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.prometheus"):
        metrics = provider(prometheus.url, "  tls: {insecure_skip_verify: true}\n")
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert "insecure_skip_verify" in warning.getMessage()
    assert "NOT verified" in warning.getMessage()
    with pytest.warns(InsecureRequestWarning):  # urllib3's own word that nothing was checked
        assert metrics.query("up") == [Series({"track": "canary"}, 0.25)]


def test_verification_on_quietly_logs_nothing(
    prometheus: TlsPrometheus, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.prometheus"):
        provider(prometheus.url, f"  tls: {{ca_file: {certificates.ca}}}\n")
    assert caplog.records == []


def test_bearer_token_from_the_named_variable_is_sent(
    prometheus: TlsPrometheus, certificates: Certificates
) -> None:
    section = f"  tls: {{ca_file: {certificates.ca}}}\n  auth: {{bearer_token_env: PROM_TOKEN}}\n"
    metrics = provider(prometheus.url, section, {"PROM_TOKEN": "s3cret-token"})
    metrics.query("up")
    assert prometheus.authorizations == ["Bearer s3cret-token"]


def test_basic_auth_password_from_the_named_variable_is_sent(
    prometheus: TlsPrometheus, certificates: Certificates
) -> None:
    section = (
        f"  tls: {{ca_file: {certificates.ca}}}\n"
        "  auth: {username: canary-bot, password_env: PROM_PASSWORD}\n"
    )
    metrics = provider(prometheus.url, section, {"PROM_PASSWORD": "hunter2"})
    metrics.query("up")
    # base64("canary-bot:hunter2")
    assert prometheus.authorizations == ["Basic Y2FuYXJ5LWJvdDpodW50ZXIy"]


def test_without_auth_no_authorization_header_is_sent(
    prometheus: TlsPrometheus, certificates: Certificates
) -> None:
    provider(prometheus.url, f"  tls: {{ca_file: {certificates.ca}}}\n").query("up")
    assert prometheus.authorizations == [None]


@pytest.mark.parametrize(
    ("section", "env", "message"),
    [
        (
            "  auth: {bearer_token_env: PROM_TOKEN}\n",
            {},
            "prometheus.auth.bearer_token_env names PROM_TOKEN, but that environment "
            "variable is not set",
        ),
        (
            "  auth: {username: bot, password_env: PROM_PASSWORD}\n",
            {"PROM_PASSWORD": ""},
            "prometheus.auth.password_env names PROM_PASSWORD",
        ),
        (
            "  tls: {ca_file: /nonexistent/ca.pem}\n",
            {},
            "prometheus.tls.ca_file: /nonexistent/ca.pem does not exist",
        ),
    ],
)
def test_a_missing_secret_or_ca_file_stops_start_up(
    section: str, env: dict[str, str], message: str
) -> None:
    config = load_config_text(f"prometheus:\n  url: https://prometheus.example\n{section}")
    with pytest.raises(PrometheusSetupError, match=message):
        prometheus_access(config.prometheus, env)
