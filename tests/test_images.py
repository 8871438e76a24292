"""Which image the canary runs, and which images production refuses."""

from __future__ import annotations

import pytest

from rollout.images import image_problem, resolve_image

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
