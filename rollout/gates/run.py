"""Running one pre-flight gate: the digest pin, image_exists, webhook and command.

Each blocks for at most its timeout, so the engine runs them on its gate workers, never in a
tick. Every outcome is a `GateResult` whose detail says what was found and, on failure, how to
fix it; a gate never raises.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from typing import Any

import requests

from rollout.config import Config
from rollout.gates.config import PLACEHOLDER, CommandGate, ImageExistsGate, WebhookGate
from rollout.images import split_reference
from rollout.model import GateResult, Rollout
from rollout.oci import ImageRegistry, ManifestNotFound, RegistryError, pinned, short_digest

PIN = "pin_digest"
MESSAGE_MAX = 300
OUTPUT_LINES = 10


class GateRunner:
    def __init__(self, *, config: Config, registry: ImageRegistry | None) -> None:
        self._config = config
        self._registry = registry

    def run(self, rollout: Rollout, key: str) -> tuple[GateResult, str | None]:
        """(what the gate found, the pinned image when `key` is the digest pin). Never
        raises: a gate that cannot run fails with why."""
        try:
            return self._run(rollout, key)
        except Exception as error:
            detail = f"the gate could not run: {type(error).__name__}: {error}"
            return _failed(key, key, detail), None

    def _run(self, rollout: Rollout, key: str) -> tuple[GateResult, str | None]:
        if key == PIN:
            return self._pin(rollout)
        index = int(key.removeprefix("preflight:"))
        preflight = self._config.services[rollout.service].policy.preflight
        if index >= len(preflight):
            return _failed(key, key, "this gate is no longer configured (config changed)"), None
        spec = preflight[index].spec
        if isinstance(spec, ImageExistsGate):
            result = self._image_exists(rollout, key)
        elif isinstance(spec, WebhookGate):
            result = webhook(rollout, key, spec)
        elif isinstance(spec, CommandGate):
            result = command(rollout, key, spec)
        else:  # job gates run against the canary, from the ticks (rollout/gates/job.py)
            raise AssertionError(f"{key} is not a pre-flight gate")
        return result, None

    def _pin(self, rollout: Rollout) -> tuple[GateResult, str | None]:
        image = rollout.canary_image
        given = split_reference(image).digest
        try:
            digest = given or self._resolve(image)
        except RegistryError as error:
            return _failed(PIN, PIN, f"cannot resolve {image} to a digest: {error}"), None
        expected = rollout.expected_digest
        if expected is not None and expected != digest:
            return (
                _failed(
                    PIN,
                    PIN,
                    f"the registry has {digest} for {image}, but the pipeline built {expected} "
                    "(expected_digest): push the image the pipeline built, or start with the "
                    "digest it printed",
                ),
                None,
            )
        pinned_image = pinned(image, digest)
        detail = f"{image.partition('@')[0]} is {short_digest(digest)}; the canary runs it"
        return GateResult(key=PIN, name=PIN, passed=True, detail=detail), pinned_image

    def _image_exists(self, rollout: Rollout, key: str) -> GateResult:
        try:
            digest = self._resolve(rollout.canary_image)
        except ManifestNotFound as error:
            return _failed(key, "image_exists", f"{error}; push it first or fix the tag")
        except RegistryError as error:
            return _failed(key, "image_exists", str(error))
        return GateResult(
            key=key,
            name="image_exists",
            passed=True,
            detail=f"the registry has {rollout.canary_image.partition('@')[0]} "
            f"({short_digest(digest)})",
        )

    def _resolve(self, image: str) -> str:
        if self._registry is None:
            raise RegistryError("no registry client is configured")
        return self._registry.digest(image)


def placeholders(rollout: Rollout) -> dict[str, str]:
    """What `{{ name }}` stands for in a command's argv and a job's template."""
    reference = split_reference(rollout.canary_image)
    return {
        "image": rollout.canary_image,
        "tag": reference.tag or "",
        "digest": reference.digest or "",
        "service": rollout.service,
        "namespace": rollout.namespace,
        "deployment": rollout.deployment,
        "canary_deployment": f"{rollout.deployment}-canary",
        "rollout_id": rollout.id,
    }


def fill(text: str, values: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), text)


def rollout_json(rollout: Rollout) -> dict[str, Any]:
    """What a webhook receives: the rollout as a pipeline or a policy service reads it."""
    return {
        "id": rollout.id,
        "service": rollout.service,
        "namespace": rollout.namespace,
        "deployment": rollout.deployment,
        "phase": rollout.phase.value,
        "stable_image": rollout.stable_image,
        "canary_image": rollout.canary_image,
        "digest": split_reference(rollout.canary_image).digest,
        "steps": list(rollout.plan.steps),
        "started_by": rollout.started_by,
        "created_at": rollout.created_at.isoformat(),
    }


def webhook(rollout: Rollout, key: str, gate: WebhookGate) -> GateResult:
    seconds = gate.timeout.total_seconds()
    try:
        reply = requests.post(gate.url, json=rollout_json(rollout), timeout=seconds)
    except requests.Timeout:
        return _failed(key, "webhook", f"{gate.url} did not answer within {seconds:g}s")
    except requests.RequestException as error:
        return _failed(key, "webhook", f"{gate.url} could not be reached: {type(error).__name__}")
    if 200 <= reply.status_code < 300:
        return GateResult(key=key, name="webhook", passed=True, detail=f"HTTP {reply.status_code}")
    return _failed(key, "webhook", f"HTTP {reply.status_code}: {_message(reply)}")


def _message(reply: requests.Response) -> str:
    """The body's message: `message` or `error` of a JSON body, else its text; truncated."""
    text = reply.text.strip()
    try:
        data = reply.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        found = data.get("message") or data.get("error") or text
        if isinstance(found, dict):  # {error: {code, message}}
            found = found.get("message") or text
        text = str(found)
    text = text or "(no message)"
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


# What every tool needs to find itself, its files and the network; nothing of the bot's own
# (its Slack, database, API and registry secrets), because a gate's output goes to Slack.
BASE_ENV = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


def command_env(gate: CommandGate, env: Mapping[str, str]) -> dict[str, str]:
    """The environment a command gate runs with: BASE_ENV and the names its config lists."""
    return {name: env[name] for name in (*BASE_ENV, *gate.env) if name in env}


def command(rollout: Rollout, key: str, gate: CommandGate) -> GateResult:
    values = placeholders(rollout)
    argv = [fill(word, values) for word in gate.argv]
    seconds = gate.timeout.total_seconds()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=seconds,
            check=False,
            stdin=subprocess.DEVNULL,
            env=command_env(gate, os.environ),
        )
    except FileNotFoundError:
        return _failed(key, "command", f"`{argv[0]}` is not installed where the bot runs")
    except subprocess.TimeoutExpired:
        return _failed(key, "command", f"`{argv[0]}` did not finish within {seconds:g}s")
    output = last_lines(done.stdout + done.stderr)
    detail = f"`{argv[0]}` exited with {done.returncode}" + (f"\n{output}" if output else "")
    if done.returncode == 0:
        return GateResult(key=key, name="command", passed=True, detail=detail)
    return _failed(key, "command", detail)


def last_lines(text: str, count: int = OUTPUT_LINES) -> str:
    lines = [line[:200] for line in text.strip().splitlines()]
    return "\n".join(lines[-count:])


def _failed(key: str, name: str, detail: str) -> GateResult:
    return GateResult(key=key, name=name, passed=False, detail=detail)
