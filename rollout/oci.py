"""An image's digest from its registry, through the OCI distribution (Docker registry v2) API.

What was measured must be what is promoted, so at start the bot asks the registry which digest
a tag points to and runs `repo:tag@sha256:…` from then on: a tag moved later changes nothing.
`HEAD /v2/<repository>/manifests/<tag>` with the OCI and Docker manifest media types in
`Accept` answers with the digest in `Docker-Content-Digest`; a registry that omits it on HEAD
gets a GET, whose body is hashed. Authentication follows the registry's challenge: anonymous
first, then HTTP Basic, or the bearer-token flow (a token fetched from the challenge's `realm`
for `repository:<name>:pull`, with the configured credentials when there are any).

The engine sees only the `ImageRegistry` protocol, so it can be tested with any registry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import requests
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from rollout.images import DOCKER_HUB, registry_path, split_reference

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
ATTEMPTS = 3


class RegistryError(Exception):
    """The registry could not answer (unreachable, refused our credentials, broken reply)."""


class ManifestNotFound(RegistryError):
    """The registry answered: it has no manifest for this image."""


class ImageRegistry(Protocol):
    def digest(self, image: str) -> str:
        """`sha256:…` of the manifest `image` names; ManifestNotFound or RegistryError."""
        ...


@dataclass(frozen=True, kw_only=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True, kw_only=True)
class RegistrySettings:
    """How to reach registries: deadline per request, CA bundle, plain-HTTP hosts, logins."""

    timeout: float = 10.0
    ca_file: str | None = None
    # Registries spoken to over plain HTTP (`host:port`), such as a loopback test registry.
    plain_http: frozenset[str] = frozenset()
    logins: Mapping[str, Credentials] | None = None


class HttpRegistry:
    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self._settings = settings or RegistrySettings()

    def digest(self, image: str) -> str:
        host, path = registry_path(image)
        reference = split_reference(image)
        wanted = reference.digest or reference.tag or "latest"
        api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
        scheme = "http" if host in self._settings.plain_http else "https"
        url = f"{scheme}://{api_host}/v2/{'/'.join(path)}/manifests/{wanted}"
        try:
            return self._resolve(url, repository="/".join(path), host=host, image=image)
        except requests.RequestException as error:
            raise RegistryError(
                f"the registry {host} could not be reached ({type(error).__name__}: "
                f"{_short(str(error))}); check the image's registry and the network"
            ) from error

    @retry(
        retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout)),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.2, max=2),
        reraise=True,
    )
    def _resolve(self, url: str, *, repository: str, host: str, image: str) -> str:
        session = requests.Session()
        session.headers["Accept"] = MANIFEST_TYPES
        response = self._head(session, url)
        if response.status_code == 401:
            self._authenticate(session, response, repository=repository, host=host)
            response = self._head(session, url)
        if response.status_code == 404:
            raise ManifestNotFound(f"the registry {host} has no manifest for {image}")
        if response.status_code in (401, 403):
            raise RegistryError(
                f"the registry {host} refused access to {repository} (HTTP "
                f"{response.status_code}); give the bot pull credentials for it "
                "(config registry.logins)"
            )
        if response.status_code != 200:
            raise RegistryError(
                f"the registry {host} answered HTTP {response.status_code} for {image}"
            )
        found = response.headers.get("Docker-Content-Digest")
        if found is None:
            body = session.get(url, timeout=self._settings.timeout, verify=self._verify)
            body.raise_for_status()
            found = "sha256:" + hashlib.sha256(body.content).hexdigest()
        if not _DIGEST.match(found):
            raise RegistryError(f"the registry {host} gave a digest the bot cannot use: {found!r}")
        return found

    @property
    def _verify(self) -> str | bool:
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a
        # session's `verify`, which would quietly ignore the configured CA.
        return self._settings.ca_file or True

    def _head(self, session: requests.Session, url: str) -> requests.Response:
        return session.head(
            url, timeout=self._settings.timeout, allow_redirects=True, verify=self._verify
        )

    def _authenticate(
        self,
        session: requests.Session,
        challenge: requests.Response,
        *,
        repository: str,
        host: str,
    ) -> None:
        """Answer the registry's `WWW-Authenticate` challenge (Basic or Bearer)."""
        header = challenge.headers.get("WWW-Authenticate", "")
        scheme, _, rest = header.partition(" ")
        login = (self._settings.logins or {}).get(host)
        basic = (login.username, login.password) if login else None
        if scheme.lower() == "basic":
            if basic is None:
                raise RegistryError(
                    f"the registry {host} needs a login and none is configured "
                    "(config registry.logins)"
                )
            session.auth = basic
            return
        if scheme.lower() != "bearer":
            raise RegistryError(f"the registry {host} asks for unknown auth {scheme!r}")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        if "realm" not in params:
            raise RegistryError(f"the registry {host} sent a bearer challenge without a realm")
        query = {"scope": params.get("scope", f"repository:{repository}:pull")}
        if "service" in params:
            query["service"] = params["service"]
        reply = requests.get(
            params["realm"],
            params=query,
            auth=basic,
            timeout=self._settings.timeout,
            verify=self._verify,
        )
        if reply.status_code != 200:
            raise RegistryError(
                f"the token service of {host} refused a pull token (HTTP {reply.status_code})"
            )
        data = reply.json()
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str):
            raise RegistryError(f"the token service of {host} sent no token")
        session.headers["Authorization"] = f"Bearer {token}"


def pinned(image: str, digest: str) -> str:
    """`repo:tag@sha256:…`: the tag stays for people to read, the digest decides what runs."""
    return f"{image.partition('@')[0]}@{digest}"


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
