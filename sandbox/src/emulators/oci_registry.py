"""A real OCI registry for tests: Debian's `docker-registry` on a free loopback port.

Digest pinning is only worth something if a real registry answers, so tests do not fake the
distribution API: they run `/usr/bin/docker-registry serve config.yml` with filesystem storage
in a temporary directory, push an image with the v2 API (blob uploads, then a manifest PUT) and
move tags the same way a CI pipeline's `docker push` would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

from emulators.prometheus import free_port

READY_TIMEOUT_S = 30.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def find_registry_binary() -> str | None:
    """`$DOCKER_REGISTRY_BINARY`, else `docker-registry` on PATH, else Debian's path."""
    candidates = [os.environ.get("DOCKER_REGISTRY_BINARY"), shutil.which("docker-registry")]
    candidates.append("/usr/bin/docker-registry")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def bcrypt_hash(password: str) -> str:
    """An htpasswd entry's hash: the registry accepts bcrypt only (libcrypt makes it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


class OciRegistry:
    """`login`: (user, password) turns on htpasswd (HTTP Basic) auth, pushes included.
    `tls`: serve HTTPS with a self-signed certificate for 127.0.0.1 (made by the `openssl`
    CLI); `ca_file` is then the PEM a client must trust."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        login: tuple[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.login = login
        self.tls = tls
        self.ca_file: str | None = None
        found = binary or find_registry_binary()
        if found is None:
            raise FileNotFoundError("no docker-registry binary: apt-get install docker-registry")
        self._binary = found
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def host(self) -> str:
        """`127.0.0.1:port`: the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def _verify(self) -> str | bool:
        return self.ca_file or True

    def start(self) -> OciRegistry:
        self._dir = Path(tempfile.mkdtemp(prefix="oci-registry-"))
        self.port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(self._dir / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        if self.login is not None:
            htpasswd = self._dir / "htpasswd"
            htpasswd.write_text(f"{self.login[0]}:{bcrypt_hash(self.login[1])}\n")
            config["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
        if self.tls:
            config["http"]["tls"] = self._certificate()
        path = self._dir / "config.yml"
        path.write_text(yaml.safe_dump(config))
        log = (self._dir / "registry.log").open("wb")
        self._process = subprocess.Popen(
            [self._binary, "serve", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_text()[-2000:]}")
            try:
                answer = requests.get(f"{self.url}/v2/", timeout=1, verify=self._verify)
                if answer.status_code in (200, 401):
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry not ready within {READY_TIMEOUT_S:.0f}s")

    def _certificate(self) -> dict[str, str]:
        assert self._dir is not None
        cert, key = self._dir / "cert.pem", self._dir / "key.pem"
        command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        command += ["-addext", "subjectAltName=IP:127.0.0.1"]
        subprocess.run(
            command,
            check=True,
            capture_output=True,
        )
        self.ca_file = str(cert)
        return {"certificate": str(cert), "key": str(key)}

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_text(self) -> str:
        assert self._dir is not None
        return (self._dir / "registry.log").read_text(errors="replace")

    def push(self, repository: str, tag: str, *, content: str) -> str:
        """Push a one-layer image whose layer holds `content`; tag it; return its digest."""
        layer = self._upload(repository, content.encode())
        config = self._upload(
            repository,
            json.dumps({"architecture": "amd64", "os": "linux", "label": content}).encode(),
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config[0],
                "size": config[1],
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer[0],
                    "size": layer[1],
                }
            ],
        }
        return self.tag(repository, tag, json.dumps(manifest).encode())

    def tag(self, repository: str, tag: str, manifest: bytes) -> str:
        """PUT `manifest` under `tag` (moving the tag if it existed); return its digest."""
        response = requests.put(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
            auth=self.login,
            verify=self._verify,
            timeout=10,
        )
        response.raise_for_status()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        assert response.headers["Docker-Content-Digest"] == digest
        return digest

    def _upload(self, repository: str, blob: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        started = requests.post(
            f"{self.url}/v2/{repository}/blobs/uploads/",
            auth=self.login,
            verify=self._verify,
            timeout=10,
        )
        started.raise_for_status()
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        separator = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{separator}digest={digest}",
            data=blob,
            headers={"Content-Type": "application/octet-stream"},
            auth=self.login,
            verify=self._verify,
            timeout=10,
        )
        done.raise_for_status()
        return digest, len(blob)

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
