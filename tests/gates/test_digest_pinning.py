"""What was measured is what is promoted: digests resolved by a real OCI registry at start.

The registry is Debian's `docker-registry` on loopback; the test pushes images with the v2 API
and moves tags the way a pipeline's `docker push` does. The bot is driven over signed Slack
requests in a sandbox (Kubernetes and Slack emulators).
"""

from __future__ import annotations

import contextlib

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from emulators.oci_registry import OciRegistry
from rollout.engine import StartRefused, StartRequest
from rollout.model import Phase
from rollout.oci import HttpRegistry, ManifestNotFound, RegistrySettings
from tests.gates.conftest import (
    MakeSandbox,
    canary_exists,
    container_image,
    gate_config,
    only_rollout,
    settle,
    thread_texts,
    wait_for_reply,
    wait_until,
)

REPOSITORY = "shop/checkout"


def pinning_config(registry_host: str, **defaults: object) -> str:
    return gate_config(
        preflight=[{"image_exists": {}}],
        pin_digest=True,
        **defaults,  # type: ignore[arg-type]
    ) + (f"registry:\n  plain_http: ['{registry_host}']\n  timeout: 5s\n")


def start(box: Sandbox, image: str) -> None:
    reply = box.driver.command(f"start checkout {image}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    settle(box)  # the start's work after the acknowledgement, and its gates


def test_client_resolves_tags_and_follows_a_moved_tag(oci_registry: OciRegistry) -> None:
    client = HttpRegistry(RegistrySettings(plain_http=frozenset({oci_registry.host})))
    first = oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    image = f"{oci_registry.host}/{REPOSITORY}:v2.3.5"
    assert client.digest(image) == first
    second = oci_registry.push(REPOSITORY, "v2.3.5", content="build 2")
    assert second != first and client.digest(image) == second
    assert client.digest(f"{oci_registry.host}/{REPOSITORY}@{first}") == first
    with pytest.raises(ManifestNotFound, match="no manifest"):
        client.digest(f"{oci_registry.host}/{REPOSITORY}:v9.9.9")


@pytest.mark.timeout(90)
def test_moved_tag_does_not_change_what_is_promoted(
    oci_registry: OciRegistry, make_sandbox: MakeSandbox
) -> None:
    measured = oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    box = make_sandbox(pinning_config(oci_registry.host, step_interval="1h"))
    image = f"{oci_registry.host}/{REPOSITORY}:v2.3.5"
    start(box, image)

    pinned = f"{image}@{measured}"
    wait_until(lambda: canary_exists(box), what="the canary")
    assert container_image(box, "checkout-canary") == pinned
    assert only_rollout(box).canary_image == pinned
    assert "pin_digest" in wait_for_reply(box, "pin_digest")
    assert "passed" in wait_for_reply(box, "image_exists")
    # The card shows the tag and the short digest.
    short = measured.removeprefix("sha256:")[:12]
    card = wait_until(
        lambda: [m for m in box.slack.messages(RELEASE_CHANNEL) if short in str(m.blocks)],
        what="the card with the short digest",
    )
    assert f"`{image}` @ `{short}`" in str(card[0].blocks)

    # The pipeline pushes another build under the same tag while the canary is measured.
    moved = oci_registry.push(REPOSITORY, "v2.3.5", content="build 2")
    assert moved != measured
    box.driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: only_rollout(box).phase == Phase.SUCCEEDED, what="the promotion")
    assert container_image(box, "checkout") == pinned  # the digest measured, not the tag's
    assert not canary_exists(box)


@pytest.mark.timeout(60)
def test_missing_image_is_refused_with_nothing_created(
    oci_registry: OciRegistry, make_sandbox: MakeSandbox
) -> None:
    oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    box = make_sandbox(pinning_config(oci_registry.host))
    start(box, f"{oci_registry.host}/{REPOSITORY}:v2.3.6")

    rollout = only_rollout(box)
    assert rollout.phase == Phase.ROLLED_BACK
    assert "no manifest" in (rollout.reason or "")
    assert not canary_exists(box)
    assert box.kube.writes == []  # nothing changed in the cluster
    assert "no manifest" in wait_for_reply(box, "pin_digest")


@pytest.mark.timeout(60)
def test_unreachable_registry_refuses_the_start(
    oci_registry: OciRegistry, make_sandbox: MakeSandbox
) -> None:
    box = make_sandbox(pinning_config(oci_registry.host))
    oci_registry.stop()  # the registry goes away before the start
    start(box, f"{oci_registry.host}/{REPOSITORY}:v2.3.5")
    rollout = only_rollout(box)
    assert rollout.phase == Phase.ROLLED_BACK
    assert "could not be reached" in (rollout.reason or "")
    assert not canary_exists(box)
    assert "could not be reached" in wait_for_reply(box, "pin_digest")


@pytest.mark.timeout(60)
def test_expected_digest_must_match(oci_registry: OciRegistry, make_sandbox: MakeSandbox) -> None:
    built = oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    other = oci_registry.push(REPOSITORY, "v2.3.5", content="someone else's build")
    box = make_sandbox(pinning_config(oci_registry.host))
    assert box.runtime is not None
    engine = box.runtime.engine
    request = StartRequest(
        service="checkout",
        image=f"{oci_registry.host}/{REPOSITORY}:v2.3.5",
        by="ci:pipeline",
        channel=RELEASE_CHANNEL,
        expected_digest=built,
    )
    accepted = engine.accept(request)
    assert accepted is not None
    # The gate runs on a gate worker: when it has already failed by the time `begin` reads
    # the record, `begin` reports the refusal itself; otherwise the thread does (below).
    with contextlib.suppress(StartRefused):
        engine.begin(accepted.id)
    settle(box)
    rollout = only_rollout(box)
    assert rollout.phase == Phase.ROLLED_BACK
    assert built in (rollout.reason or "") and other in (rollout.reason or "")
    assert not canary_exists(box)
    assert other in wait_for_reply(box, "pin_digest")

    with pytest.raises(StartRefused, match="not a digest"):
        engine.accept(StartRequest(**{**request.__dict__, "expected_digest": "sha256:abc"}))


@pytest.mark.timeout(60)
def test_expected_digest_that_matches_starts_the_canary_on_it(
    oci_registry: OciRegistry, make_sandbox: MakeSandbox
) -> None:
    built = oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    box = make_sandbox(pinning_config(oci_registry.host, step_interval="1h"))
    assert box.runtime is not None
    image = f"{oci_registry.host}/{REPOSITORY}:v2.3.5"
    engine = box.runtime.engine
    accepted = engine.accept(
        StartRequest(
            service="checkout",
            image=image,
            by="ci:pipeline",
            channel=RELEASE_CHANNEL,
            expected_digest=built,
        )
    )
    assert accepted is not None
    engine.begin(accepted.id)
    settle(box)
    assert only_rollout(box).canary_image == f"{image}@{built}"
    assert container_image(box, "checkout-canary") == f"{image}@{built}"
    assert "passed" in wait_for_reply(box, "pin_digest")


@pytest.mark.timeout(60)
def test_image_exists_gate_passes_and_fails_on_the_registry(
    oci_registry: OciRegistry, make_sandbox: MakeSandbox
) -> None:
    """Without pinning, `image_exists` alone asks the registry for the manifest."""
    oci_registry.push(REPOSITORY, "v2.3.5", content="build 1")
    config = gate_config(preflight=[{"image_exists": {}}], step_interval="1h") + (
        f"registry:\n  plain_http: ['{oci_registry.host}']\n"
    )
    missing = make_sandbox(config)
    start(missing, f"{oci_registry.host}/{REPOSITORY}:v2.3.6")
    assert only_rollout(missing).phase == Phase.ROLLED_BACK
    assert "image_exists failed" in (only_rollout(missing).reason or "")
    assert not canary_exists(missing)
    assert "no manifest" in wait_for_reply(missing, "image_exists")

    present = make_sandbox(config)
    image = f"{oci_registry.host}/{REPOSITORY}:v2.3.5"
    start(present, image)
    wait_until(lambda: canary_exists(present), what="the canary")
    assert container_image(present, "checkout-canary") == image  # not pinned: as given
    assert "passed" in wait_for_reply(present, "image_exists")
    assert thread_texts(present)
