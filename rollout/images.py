"""Which image a canary runs, and whether that image may be released.

`/canary start checkout v2.3.5` names only a tag: the canary keeps the registry and repository
of the stable container's image. A production release must be reproducible, so a moving tag
(`latest`, or none at all) is refused there before anything changes in the cluster.

The syntax check follows the container image reference grammar (the one Docker and containerd
accept) closely enough to catch typos before the cluster does, with one deliberate difference:
a first path component without `.`, `:` or `localhost` is read as a repository, so an
upper-case `Shop/app` is refused instead of being taken for a registry host named `Shop`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_NAME_MAX = 255
_EXAMPLE = "`registry.example.com/shop/app:v2.3.5`"


@dataclass(frozen=True)
class _Reference:
    """An image reference's parts: `name[:tag][@digest]`."""

    name: str
    tag: str | None
    digest: str | None


def _split(reference: str) -> _Reference:
    rest, at, digest = reference.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return _Reference(rest[:colon], rest[colon + 1 :], digest if at else None)
    return _Reference(rest, None, digest if at else None)


def split_reference(reference: str) -> _Reference:
    """(name, tag, digest) of an image reference; tag and digest None when absent."""
    return _split(reference.strip())


def _is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text.removeprefix("@")) is not None


def resolve_image(stable_image: str, tag_or_image: str) -> str:
    """The canary image: a bare tag or digest applies to the stable image's repository."""
    given = tag_or_image.strip()
    repository = _split(stable_image.strip()).name
    if _is_digest(given):
        return f"{repository}@{given.removeprefix('@')}"
    is_reference = "/" in given or "@" in given or (":" in given and not given.startswith(":"))
    if is_reference:
        return given
    return f"{repository}:{given.removeprefix(':')}"


def image_problem(image: str, *, production: bool) -> str | None:
    """Why `image` may not be released (one sentence with the fix), or None when it may."""
    syntax = _syntax_problem(image)
    if syntax is not None:
        return f"`{_clip(image)}` is not a valid image reference: {syntax}"
    if not production:
        return None
    reference = _split(image)
    if reference.digest is None and (reference.tag is None or reference.tag.lower() == "latest"):
        return (
            f"production services need a pinned image: `{_clip(image)}` "
            f"{'has no tag' if reference.tag is None else 'uses the moving tag `latest`'}, "
            "so what runs could change under you; use a version tag like `v2.3.5` "
            "or a digest (`@sha256:…`)."
        )
    return None


def _syntax_problem(image: str) -> str | None:
    if not image:
        return f"it is empty; give a tag like `v2.3.5` or a full reference like {_EXAMPLE}."
    if image != image.strip() or any(char.isspace() for char in image):
        return "it contains spaces; write the reference as one word, like " + _EXAMPLE + "."
    reference = _split(image)
    if reference.digest is not None and _DIGEST.fullmatch(reference.digest) is None:
        return "a digest is `sha256:` followed by 64 lower-case hex digits."
    if reference.tag == "":
        return "a `:` must be followed by a tag, like `:v2.3.5`."
    if reference.tag is not None and _TAG.fullmatch(reference.tag) is None:
        return (
            f"the tag `{_clip(reference.tag)}` may hold only letters, digits, `_`, `.` and `-`, "
            "must not start with `.` or `-`, and is at most 128 characters."
        )
    return _name_problem(reference.name)


def _name_problem(name: str) -> str | None:
    if len(name) > _NAME_MAX:
        return f"the repository name is longer than {_NAME_MAX} characters."
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        if _DOMAIN.fullmatch(first) is None:
            return f"`{_clip(first)}` is not a valid registry host (with an optional `:port`)."
        components = components[1:]
    if not all(_PATH_COMPONENT.fullmatch(part) for part in components):
        return (
            "repository names are lower-case letters and digits, separated by `/`, `.`, `_` "
            f"or `-`, like {_EXAMPLE}."
        )
    return None


def _clip(text: str, limit: int = 120) -> str:
    flat = text.replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def policy_problem(
    image: str, *, allowed_registries: tuple[str, ...], require_digest: bool
) -> str | None:
    """The optional policies (config `allowed_registries`, `require_digest`) for a full image
    reference; a bare tag is judged after it is resolved against the stable image."""
    if allowed_registries and not any(registry_allows(rule, image) for rule in allowed_registries):
        allowed = ", ".join(f"`{rule}`" for rule in allowed_registries)
        return (
            f"`{_clip(image)}` is not from an allowed registry; images must come from {allowed} "
            "(a registry host, with its port if it has one, and optionally a repository path)."
        )
    if require_digest and "@sha256:" not in image:
        return (
            f"`{_clip(image)}` is not pinned by digest, which this service requires: use "
            "`registry/app@sha256:<64 hex digits>` (or `sha256:<digest>` alone)."
        )
    return None


# Docker's defaults: a reference without a registry host is on Docker Hub, and a one-part
# repository there lives under `library/` (`nginx` is `docker.io/library/nginx`).
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def registry_path(reference: str) -> tuple[str, tuple[str, ...]]:
    """(registry host with port, repository path components) of an image reference or a rule.

    Host names compare case-insensitively (DNS); a port is part of the registry, so
    `registry:5000` and `registry` are different registries.
    """
    name = _split(reference.strip()).name
    components = [part for part in name.split("/") if part]
    first = components[0] if components else ""
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        host, path = first.lower(), components[1:]
    else:
        host, path = DOCKER_HUB, components
    if host in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
        if len(path) == 1:
            path = ["library", *path]
    return host, tuple(path)


def parse_registry_rule(rule: str) -> tuple[str, tuple[str, ...]]:
    """A rule of `allowed_registries`: `host[:port][/path...]`, without scheme, tag or digest."""
    text = rule.strip().rstrip("/")
    host, _, path = text.partition("/")
    if not text or "://" in rule or "@" in text or ":" in path:
        raise ValueError(
            f"{rule!r} is not a registry rule: write a registry host with an optional port "
            "and repository path, like registry.example.com, registry:5000 or ghcr.io/acme"
        )
    if _DOMAIN.fullmatch(host) is None or not all(
        _PATH_COMPONENT.fullmatch(part) for part in path.split("/") if path
    ):
        raise ValueError(
            f"{rule!r} is not a registry rule: {host!r} must be a host name (with an optional "
            ":port) and the path lower-case components separated by /, like ghcr.io/acme"
        )
    if not ("." in host or ":" in host or host.lower() == "localhost"):
        raise ValueError(
            f"{rule!r} is not a registry rule: an image reference reads {host!r} as a "
            "repository, not a registry; name the registry host, like docker.io or "
            f"registry.example.com/{host}"
        )
    host = host.lower()
    parts = tuple(path.split("/")) if path else ()
    if host in _DOCKER_HUB_ALIASES:
        return DOCKER_HUB, parts
    return host, parts


def registry_allows(rule: str, image: str) -> bool:
    """Whether `image` comes from the registry (and path) `rule` names.

    The comparison is on whole parts, never on text: `registry.example.com` does not allow
    `registry.example.com.evil.io/app`, and `ghcr.io/acme` does not allow `ghcr.io/acme-evil`.
    """
    rule_host, rule_path = parse_registry_rule(rule)
    host, path = registry_path(image)
    return host == rule_host and path[: len(rule_path)] == rule_path
