"""`preflight` and `registry` config: clear messages with their location; RBAC for job gates."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from bot.config_loader import ConfigError, load_config_text
from bot.registry import RegistryLoginMissing, registry_settings
from rollout.gates.config import CommandGate, JobGate, WebhookGate
from rollout.oci import Credentials
from rollout.start import StartRequest, draft
from tests.install_support import role_grants

REPO = Path(__file__).resolve().parents[2]
SERVICE = """\
services:
  checkout:
    namespace: shop
    deployment: checkout
    steps: [10, 50]
    preflight:
"""


def load(entries: str) -> object:
    return load_config_text(SERVICE + textwrap.indent(entries, "      "), source="config.yaml")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("- trivy: {}\n", "preflight[0] (line 7): unknown gate 'trivy': use one of image_exists"),
        ("- webhook: {timeout: 5s}\n", "preflight[0].webhook.url (line 7): required"),
        ("- webhook: {url: ftp://x}\n", "is not an http(s) URL"),
        ("- command: {argv: []}\n", "preflight[0].command.argv (line 7)"),
        ("- command: {argv: [x], timeout: 30}\n", "30 is not a duration: write it like 30s"),
        ("- command: {argv: [x], timeout: 0s}\n", "more than 0s and at most 2h"),
        ("- command: {argv: [cosign, '{{ img }}']}\n", "unknown placeholder {{ img }}"),
        (
            "- {webhook: {url: 'http://a'}, command: {argv: [x]}}\n",
            "each preflight entry names one",
        ),
        (
            "- job: {at_step: 3, template: {spec: {template: {spec: {containers: [{}]}}}}}\n",
            "at_step 3: there are only 2 steps",
        ),
        ("- job: {at_step: 1, template: {}}\n", "needs spec.template.spec.containers"),
    ],
)
def test_bad_preflight_entries_say_where_and_how(entries: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(entries)
    assert message in str(error.value)
    assert "services.checkout" in str(error.value)


def test_preflight_entries_load_in_order_and_defaults_are_overridable() -> None:
    config = load_config_text(
        textwrap.dedent(
            """\
            defaults:
              preflight:
                - image_exists: {}
              pin_digest: false
            services:
              checkout:
                namespace: shop
                deployment: checkout
                pin_digest: true
                preflight:
                  - webhook: {url: 'https://ci.example.com/hook', timeout: 5s}
                  - command: {argv: [cosign, verify, '{{ image }}']}
                  - job:
                      at_step: 2
                      template: {spec: {template: {spec: {containers: [{name: k6}]}}}}
              cart:
                namespace: shop
                deployment: cart
            registry:
              plain_http: ['127.0.0.1:5000']
              logins: [{registry: ghcr.io, username: bot, password_env: GHCR_TOKEN}]
            """
        ),
        source="config.yaml",
    )
    checkout = config.services["checkout"].policy
    assert [gate.kind for gate in checkout.preflight] == ["webhook", "command", "job"]
    assert isinstance(checkout.preflight[0].spec, WebhookGate)
    assert isinstance(checkout.preflight[1].spec, CommandGate)
    assert isinstance(checkout.preflight[2].spec, JobGate) and checkout.pin_digest
    cart = config.services["cart"].policy
    assert [gate.kind for gate in cart.preflight] == ["image_exists"] and not cart.pin_digest
    # The plan fixes the order: digest first, then the non-job gates; job gates by step.
    rollout = draft(
        StartRequest(service="checkout", image="v2", by="U1", channel="C1"),
        config.services["checkout"],
        now=__import__("datetime").datetime(2026, 1, 1),
    )
    assert rollout.plan.preflight == ("pin_digest", "preflight:0", "preflight:1")
    assert rollout.plan.gate_steps == (2,)


def test_role_grants_what_job_gates_call() -> None:
    """Each client call in rollout/gates/job.py maps to a verb the Role grants."""
    source = (REPO / "rollout" / "gates" / "job.py").read_text()
    calls = set(re.findall(r"self\._\w+\.(read|create|delete|list)_namespaced_(\w+)", source))
    assert calls == {
        ("read", "job"),
        ("create", "job"),
        ("delete", "job"),
        ("list", "pod"),
        ("read", "pod_log"),
    }
    granted = role_grants()
    assert {"get", "create", "delete"} <= granted[("batch", "jobs")]
    assert "list" in granted[("", "pods")]
    assert "get" in granted[("", "pods/log")]


def test_registry_logins_read_their_password_from_the_named_variable() -> None:
    config = load_config_text(
        "registry:\n  logins: [{registry: GHCR.io, username: ci-bot, password_env: GHCR_PULL}]\n",
        source="config.yaml",
    )
    missing = r"GHCR_PULL \(the password for GHCR.io\) is not set"
    with pytest.raises(RegistryLoginMissing, match=missing):
        registry_settings(config, {})
    settings = registry_settings(config, {"GHCR_PULL": "s3cret"})
    assert settings.logins == {"ghcr.io": Credentials(username="ci-bot", password="s3cret")}
    with pytest.raises(ConfigError, match="password_env"):
        load_config_text(
            "registry:\n  logins: [{registry: ghcr.io, username: u, password_env: 'a b'}]\n",
            source="config.yaml",
        )
