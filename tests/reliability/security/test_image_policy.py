"""Production services release only pinned images (a version tag or a digest); staging may use
`latest`, and the optional registry and digest policies refuse what they do not allow.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from bot.config_loader import load_config_text
from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from tests.reliability.security.conftest import nothing_happened, refusals
from tests.reliability.support import active_rollout, sandbox_config, wait_for

# --------------------------------------------------------------------------- image policy


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "image",
    [
        "latest",
        "LATEST",
        "registry.example.com/shop/checkout",
        "registry.example.com/shop/checkout:latest",
        "other.example.org/shop/checkout",
    ],
)
def test_production_refuses_moving_images(sandbox: Sandbox, image: str) -> None:
    reply = sandbox.driver.command(f"start checkout {image}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.json and reply.json["response_type"] == "ephemeral"
    assert "pinned image" in reply.body, reply.body
    assert refusals(sandbox) == [(BOB, "refused: start")]
    nothing_happened(sandbox)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("service", "image"),
    [
        ("checkout", "registry.example.com/shop/checkout@sha256:" + "ab" * 32),
        ("checkout", "v2.3.5"),
        ("web", "latest"),
    ],
)
def test_pinned_images_and_staging_services_may_start(
    sandbox: Sandbox, service: str, image: str
) -> None:
    reply = sandbox.driver.command(f"start {service} {image}", user=BOB, channel=RELEASE_CHANNEL)
    assert "Starting a canary" in reply.body, reply.body
    wait_for(partial(active_rollout, sandbox, service), what="the rollout")
    assert refusals(sandbox) == []


@pytest.mark.parametrize(
    ("policy", "image", "why"),
    [
        (
            "allowed_registries: [registry.example.com/]",
            "evil.example.org/x/checkout:v1",
            "registr",
        ),
        (  # a host that merely starts with the allowed one is another registry
            "allowed_registries: [registry.example.com]",
            "registry.example.com.evil.io/shop/checkout:v1",
            "not from an allowed registry",
        ),
        ("require_digest: true", "v2.3.5", "digest"),
    ],
)
def test_optional_registry_and_digest_policies(
    tmp_path: Path, policy: str, image: str, why: str
) -> None:
    text = sandbox_config(services=["checkout"], steps=[50]).replace(
        "defaults:\n", f"defaults:\n  {policy}\n"
    )
    load_config_text(text)  # today: an unknown key
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=text)
    box.start()
    try:
        box.start_bot()
        reply = box.driver.command(f"start checkout {image}", user=BOB, channel=RELEASE_CHANNEL)
        assert why in reply.body, reply.body
    finally:
        box.stop()
