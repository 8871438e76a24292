"""Sandboxes whose services have pre-flight gates, a pipeline's webhook (`Hook`) and a real OCI
registry (Debian's `docker-registry`) on loopback. Without the registry binary its tests skip
locally with the install command and FAIL under CI (`CI` set, where scripts/test installs it):
a registry test must never silently not run."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary_sandbox.sandbox import RELEASE_CHANNEL, SANDBOX_CONFIG, Sandbox
from emulators.oci_registry import OciRegistry, find_registry_binary
from emulators.slack import Message
from rollout.model import Rollout

MakeSandbox = Callable[..., Sandbox]


@pytest.fixture(scope="session")
def registry_binary() -> str:
    binary = find_registry_binary()
    if binary is None:
        message = "no docker-registry binary: apt-get install docker-registry"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture
def oci_registry(registry_binary: str) -> Iterator[OciRegistry]:
    registry = OciRegistry(binary=registry_binary).start()
    try:
        yield registry
    finally:
        registry.stop()


def gate_config(
    *, preflight: list[dict[str, Any]], steps: list[int] | None = None, **defaults: Any
) -> str:
    """The sandbox's config with `preflight` gates, one step at 50% and no approval."""
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["defaults"].update(
        {"steps": steps or [50], "approval": False, "preflight": preflight, **defaults}
    )
    config["defaults"].setdefault("pin_digest", False)
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[MakeSandbox]:
    boxes: list[Sandbox] = []

    def make(config_text: str) -> Sandbox:
        box = Sandbox(workdir=tmp_path / f"sandbox{len(boxes)}", config_text=config_text)
        boxes.append(box)
        box.start()
        box.start_bot()
        return box

    yield make
    for box in boxes:
        box.stop()


def wait_until(probe: Callable[[], Any], *, timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settle(box: Sandbox) -> None:
    """Wait for the work after the acknowledgements, then for the gates it launched (each
    gate's end ticks its rollout, which may launch the next)."""
    box.drain()
    assert box.runtime is not None
    box.runtime.engine.drain()


def only_rollout(box: Sandbox) -> Rollout:
    assert box.runtime is not None
    rollouts = box.runtime.store.history("checkout")
    assert len(rollouts) == 1
    return rollouts[0]


def thread_texts(box: Sandbox) -> list[str]:
    roots = box.slack.messages(RELEASE_CHANNEL)
    if not roots:
        return []
    replies: list[Message] = box.slack.thread(RELEASE_CHANNEL, roots[0].ts)
    return [reply.text for reply in replies]


def wait_for_reply(box: Sandbox, needle: str) -> str:
    found = wait_until(
        lambda: next((t for t in thread_texts(box) if needle in t), None),
        what=f"a thread reply with {needle!r}",
    )
    return str(found)


def canary_exists(box: Sandbox) -> bool:
    return box.kube.get("apps/v1", "Deployment", "shop", "checkout-canary") is not None


def container_image(box: Sandbox, name: str) -> str:
    deployment = box.kube.get("apps/v1", "Deployment", "shop", name)
    assert deployment is not None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


class Hook:
    """A pipeline's webhook on loopback: answers `status` with `body`, or hangs until the
    test ends (`hang`), and keeps what it was sent."""

    def __init__(self) -> None:
        self.status, self.body, self.hang = 200, b"{}", False
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                hook.received.append(json.loads(self.rfile.read(length)))
                if hook.hang:
                    hook.release.wait(timeout=30)
                self.send_response(hook.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(hook.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pre-rollout"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    try:
        yield server
    finally:
        server.close()
