"""Which image the canary runs, and which images production refuses."""

from __future__ import annotations

import json
from functools import partial

import pytest

from bot.config_loader import ConfigError, load_config_text
from rollout.images import (
    image_problem,
    parse_registry_rule,
    policy_problem,
    registry_allows,
    resolve_image,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("stable", "given", "expected"),
    [
        ("shop/app:v1", "v2.3.5", "shop/app:v2.3.5"),
        ("registry:5000/shop/app:v1", "v2.3.5", "registry:5000/shop/app:v2.3.5"),
        ("registry:5000/shop/app", "v2", "registry:5000/shop/app:v2"),
        ("ghcr.io/a/b/c/app@" + DIGEST, "v2", "ghcr.io/a/b/c/app:v2"),
        ("ghcr.io/org/app:v1@" + DIGEST, "v2", "ghcr.io/org/app:v2"),
        ("[::1]:5000/app:v1", "v2", "[::1]:5000/app:v2"),
        ("nginx", "1.27", "nginx:1.27"),
        # A bare digest pins the stable repository.
        ("shop/app:v1", DIGEST, "shop/app@" + DIGEST),
        ("shop/app:v1", "@" + DIGEST, "shop/app@" + DIGEST),
        ("shop/app:v1", ":v2", "shop/app:v2"),
        ("shop/app:v1", "  v2  ", "shop/app:v2"),
        # Full references are used as they are.
        ("shop/app:v1", "other/app:v9", "other/app:v9"),
        ("shop/app:v1", "app:v9", "app:v9"),
        ("shop/app:v1", "registry:5000/x/y:z", "registry:5000/x/y:z"),
        ("shop/app:v1", "shop/app@" + DIGEST, "shop/app@" + DIGEST),
        ("shop/app:v1", "localhost/app", "localhost/app"),
    ],
)
def test_resolve_image(stable: str, given: str, expected: str) -> None:
    assert resolve_image(stable, given) == expected


@pytest.mark.parametrize(
    "image",
    [
        "shop/app:v2.3.5",
        "app:1",
        "registry:5000/shop/app:v2",
        "registry.example.com/team/sub/app:2024-05-01_rc.1",
        "Registry.Example.com:443/app:V2",
        "localhost/app:x",
        "[::1]:5000/app:v1",
        "shop/app@" + DIGEST,
        "shop/app:latest@" + DIGEST,
        "a__b/c-d--e.f:v" + "1" * 127,
    ],
)
def test_pinned_valid_references_pass_everywhere(image: str) -> None:
    assert image_problem(image, production=True) is None
    assert image_problem(image, production=False) is None


@pytest.mark.parametrize("image", ["shop/app:latest", "shop/app", "registry:5000/app:LATEST"])
def test_production_refuses_moving_images(image: str) -> None:
    problem = image_problem(image, production=True)
    assert problem is not None
    assert problem.startswith("production services need a pinned image")
    assert f"`{image}`" in problem
    assert "v2.3.5" in problem and "digest" in problem
    assert image_problem(image, production=False) is None


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("Shop/App:v1", "lower-case"),
        ("shop/App:v1", "lower-case"),
        ("shop//app:v1", "lower-case"),
        ("shop/app-:v1", "lower-case"),
        ("shop/app:.v1", "the tag"),
        ("shop/app:v" + "1" * 128, "the tag"),
        ("shop/app:v1!", "the tag"),
        ("shop/app:", "must be followed by a tag"),
        ("shop/app@sha256:abc", "64 lower-case hex"),
        ("shop/app@sha256:" + "A" * 64, "64 lower-case hex"),
        ("shop/app@md5:" + "a" * 64, "64 lower-case hex"),
        ("-bad.host:5000/app:v1", "registry host"),
        ("shop/app v1", "spaces"),
        ("", "empty"),
        ("a" * 256 + ":v1", "longer than 255"),
    ],
)
def test_invalid_references_are_refused_in_every_environment(image: str, fragment: str) -> None:
    for production in (True, False):
        problem = image_problem(image, production=production)
        assert problem is not None
        assert "is not a valid image reference" in problem
        assert fragment in problem
        assert len(problem) < 500


# --- allowed_registries: whole host (and path) parts, never a text prefix ---------------------


@pytest.mark.parametrize(
    ("rule", "image", "allowed"),
    [
        ("registry.example.com", "registry.example.com/shop/app:v1", True),
        ("registry.example.com/", "registry.example.com/shop/app:v1", True),
        ("Registry.Example.com", "registry.example.COM/shop/app:v1", True),
        # the defect: a text prefix let a look-alike host through
        ("registry.example.com", "registry.example.com.evil.io/app:v1", False),
        ("registry.example.com", "registry.example.comevil.io/app:v1", False),
        ("registry.example.com", "evil.io/registry.example.com/app:v1", False),
        # ports belong to the registry
        ("registry:5000", "registry:5000/shop/app:v1", True),
        ("registry:5000", "registry:50000/shop/app:v1", False),
        ("registry:5000", "registry/shop/app:v1", False),
        ("registry.example.com", "registry.example.com:5000/shop/app:v1", False),
        ("localhost:5000", "localhost:5000/app@" + DIGEST, True),
        ("[::1]:5000", "[::1]:5000/app:v1", True),
        # paths match on whole components
        ("ghcr.io/acme", "ghcr.io/acme/app:v1", True),
        ("ghcr.io/acme", "ghcr.io/acme/team/app:v1", True),
        ("ghcr.io/acme", "ghcr.io/acme-evil/app:v1", False),
        ("ghcr.io/acme", "ghcr.io/acmeco/app:v1", False),
        ("ghcr.io/acme/app", "ghcr.io/acme/app:v1", True),
        ("ghcr.io/acme/team", "ghcr.io/acme/app:v1", False),
        # Docker Hub: no host means docker.io, one-part names are under library/
        ("docker.io", "nginx:1.27", True),
        ("docker.io", "shop/app:v1", True),
        ("docker.io/library", "nginx:1.27", True),
        ("docker.io/library", "shop/app:v1", False),
        ("docker.io/shop", "shop/app:v1", True),
        ("docker.io/shop", "docker.io/shop/app:v1", True),
        ("index.docker.io/shop", "docker.io/shop/app:v1", True),
        ("docker.io", "index.docker.io/library/nginx:1", True),
        ("registry.example.com", "nginx:1.27", False),
        ("docker.io", "registry.example.com/nginx:1.27", False),
        ("docker.io", "docker.io.evil.io/nginx:1.27", False),
    ],
)
def test_allowed_registries_match_host_and_path_boundaries(
    rule: str, image: str, allowed: bool
) -> None:
    assert registry_allows(rule, image) is allowed
    problem = policy_problem(image, allowed_registries=(rule,), require_digest=False)
    assert (problem is None) is allowed, problem
    if not allowed:
        assert problem is not None and "not from an allowed registry" in problem


def test_any_allowed_registry_is_enough() -> None:
    rules = ("ghcr.io/acme", "registry.example.com")
    judge = partial(policy_problem, allowed_registries=rules, require_digest=False)
    assert judge("registry.example.com/a:v1") is None
    assert judge("ghcr.io/acme/a:v1") is None
    assert judge("ghcr.io/other/a:v1")


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("https://registry.example.com", "not a registry rule"),
        ("registry.example.com/app:v1", "not a registry rule"),
        ("registry.example.com/app@" + DIGEST, "not a registry rule"),
        ("shop", "reads 'shop' as a repository"),
        ("", "not a registry rule"),
        ("bad_host!.com", "must be a host name"),
        ("ghcr.io/Acme", "must be a host name"),
    ],
)
def test_a_bad_registry_rule_is_a_config_error(rule: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="not a registry rule") as raised:
        parse_registry_rule(rule)
    assert fragment in str(raised.value)
    text = f"defaults:\n  allowed_registries: [{json.dumps(rule)}]\n"
    with pytest.raises(ConfigError) as config_error:
        load_config_text(text)
    [problem] = config_error.value.problems
    assert problem.path == "defaults.allowed_registries"
    assert problem.line == 2
    assert fragment in problem.message
