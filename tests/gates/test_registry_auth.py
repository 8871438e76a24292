"""Registry authentication: HTTP Basic against a real `docker-registry` with htpasswd, and the
bearer-token flow through a token service in front of one (the way Docker Hub, GHCR and
Harbor answer: a 401 challenge naming the realm, a token fetched there with the login)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from emulators.oci_registry import OciRegistry
from rollout.oci import Credentials, HttpRegistry, RegistryError, RegistrySettings

LOGIN = ("ci-bot", "s3cret-pull-password")
REPOSITORY = "shop/checkout"


def client(host: str, *, login: tuple[str, str] | None) -> HttpRegistry:
    logins = {host: Credentials(username=login[0], password=login[1])} if login else {}
    return HttpRegistry(RegistrySettings(plain_http=frozenset({host}), logins=logins))


@pytest.fixture
def basic_registry(registry_binary: str) -> Iterator[OciRegistry]:
    registry = OciRegistry(binary=registry_binary, login=LOGIN).start()
    try:
        yield registry
    finally:
        registry.stop()


def test_basic_auth_uses_the_configured_login(basic_registry: OciRegistry) -> None:
    digest = basic_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    image = f"{basic_registry.host}/{REPOSITORY}:v2.3.5"
    assert client(basic_registry.host, login=LOGIN).digest(image) == digest
    with pytest.raises(RegistryError, match="needs a login and none is configured"):
        client(basic_registry.host, login=None).digest(image)
    with pytest.raises(RegistryError, match="refused access"):
        client(basic_registry.host, login=(LOGIN[0], "wrong")).digest(image)


class TokenFront:
    """A registry front that wants bearer tokens from its own token service (same port):
    `/token` hands one out for the right Basic login; `/v2/...` forwards to the registry."""

    TOKEN = "t0ken-for-pull"

    def __init__(self, backend: str) -> None:
        self.scopes: list[str] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    return self._token()
                self._forward("GET")

            def do_HEAD(self) -> None:
                self._forward("HEAD")

            def _token(self) -> None:
                good = "Basic " + base64.b64encode(":".join(LOGIN).encode()).decode()
                front.scopes.append(self.path)
                ok = self.headers.get("Authorization") == good
                self._reply(200 if ok else 401, b'{"token": "%s"}' % front.TOKEN.encode())

            def _forward(self, method: str) -> None:
                if self.headers.get("Authorization") != f"Bearer {front.TOKEN}":
                    realm = f"http://{front.host}/token"
                    scope = f"repository:{REPOSITORY}:pull"
                    challenge = f'Bearer realm="{realm}",service="front",scope="{scope}"'
                    return self._reply(401, b"", {"WWW-Authenticate": challenge})
                answer = requests.request(
                    method,
                    f"{backend}{self.path}",
                    headers={"Accept": self.headers.get("Accept", "")},
                    timeout=5,
                )
                digest = answer.headers.get("Docker-Content-Digest", "")
                self._reply(answer.status_code, answer.content, {"Docker-Content-Digest": digest})

            def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bearer_token_flow_fetches_a_pull_token(oci_registry: OciRegistry) -> None:
    digest = oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    front = TokenFront(oci_registry.url)
    try:
        image = f"{front.host}/{REPOSITORY}:v2.3.5"
        assert client(front.host, login=LOGIN).digest(image) == digest
        assert "scope=repository%3Ashop%2Fcheckout%3Apull" in front.scopes[0]
        assert "service=front" in front.scopes[0]
        with pytest.raises(RegistryError, match="refused a pull token"):
            client(front.host, login=(LOGIN[0], "wrong")).digest(image)
    finally:
        front.close()


def test_tls_is_verified_against_the_configured_ca(registry_binary: str) -> None:
    registry = OciRegistry(binary=registry_binary, tls=True).start()
    try:
        digest = registry.push(REPOSITORY, "v2.3.5", content="build 1")
        image = f"{registry.host}/{REPOSITORY}:v2.3.5"
        trusted = HttpRegistry(RegistrySettings(ca_file=registry.ca_file))
        assert trusted.digest(image) == digest
        # The system's CAs do not know the registry's self-signed certificate: refused.
        with pytest.raises(RegistryError, match=r"could not be reached \(SSLError"):
            HttpRegistry(RegistrySettings()).digest(image)
    finally:
        registry.stop()
