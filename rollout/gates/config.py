"""The `preflight` gates and the `registry` section of the config (DESIGN.md "Config file").

Each `preflight` entry is a one-key mapping naming the gate: `image_exists: {}`,
`webhook: {url, timeout}`, `command: {argv, timeout}` or `job: {template, at_step, timeout}`.
Errors name the entry (`defaults.preflight.1.webhook.url`) and say how to write it right.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from rollout.durations import parse_duration

GATE_KINDS = ("image_exists", "webhook", "command", "job")
# What `{{ name }}` may stand for in a command's argv (and is filled in from the rollout).
PLACEHOLDERS = (
    "image",
    "tag",
    "digest",
    "service",
    "namespace",
    "deployment",
    "canary_deployment",
    "rollout_id",
)
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_MAX_TIMEOUT = timedelta(hours=2)


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool | int | float):
        raise ValueError(f"{value!r} is not a duration: write it like 30s, 2m or 1h")
    return value


def _timeout(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= _MAX_TIMEOUT:
        raise ValueError("a gate's timeout must be more than 0s and at most 2h, like 30s or 10m")
    return value


Timeout = Annotated[timedelta, BeforeValidator(_duration)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageExistsGate(_Frozen):
    """The registry has a manifest for the canary's image."""


class WebhookGate(_Frozen):
    """POST the rollout as JSON; 2xx passes, anything else refuses with the body's message."""

    url: str
    timeout: Timeout = timedelta(seconds=30)

    _check_timeout = field_validator("timeout")(_timeout)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL, like https://ci.example.com/hook")
        return value


class CommandGate(_Frozen):
    """Run argv (no shell) with placeholders filled in; exit 0 passes."""

    argv: tuple[str, ...] = Field(min_length=1)
    timeout: Timeout = timedelta(minutes=2)
    # Names of the bot's environment variables the command also gets (e.g. COSIGN_PASSWORD),
    # beyond the few every tool needs (rollout/gates/run.py, BASE_ENV): the bot's own secrets
    # never reach a command unless named here, since its output is posted in the thread.
    env: tuple[str, ...] = ()

    _check_timeout = field_validator("timeout")(_timeout)

    @field_validator("argv")
    @classmethod
    def _known_placeholders(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        for word in argv:
            for name in PLACEHOLDER.findall(word):
                if name not in PLACEHOLDERS:
                    known = ", ".join(f"{{{{ {n} }}}}" for n in PLACEHOLDERS)
                    raise ValueError(
                        f"unknown placeholder {{{{ {name} }}}} in {word!r}: use {known}"
                    )
        return argv


class JobGate(_Frozen):
    """A Kubernetes Job run against the canary before its traffic is raised to `at_step`."""

    template: dict[str, Any]
    at_step: int = Field(ge=1)
    timeout: Timeout = timedelta(minutes=10)

    _check_timeout = field_validator("timeout")(_timeout)

    @field_validator("template")
    @classmethod
    def _has_pod(cls, template: dict[str, Any]) -> dict[str, Any]:
        spec = template.get("spec", {}).get("template", {}).get("spec", {})
        if not isinstance(spec, dict) or not spec.get("containers"):
            raise ValueError(
                "the Job template needs spec.template.spec.containers (a Job spec as in "
                "`kubectl create job --dry-run=client -o yaml`)"
            )
        return template


GateSpec = ImageExistsGate | WebhookGate | CommandGate | JobGate


class Gate(_Frozen):
    """One `preflight` entry: exactly one of the gate kinds."""

    image_exists: ImageExistsGate | None = None
    webhook: WebhookGate | None = None
    command: CommandGate | None = None
    job: JobGate | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_named_gate(cls, data: Any) -> Any:
        example = "like `- webhook: {url: https://..., timeout: 30s}`"
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(
                f"each preflight entry names one gate ({', '.join(GATE_KINDS)}), {example}"
            )
        (name, spec), *_ = data.items()
        if name not in GATE_KINDS:
            raise ValueError(f"unknown gate {name!r}: use one of {', '.join(GATE_KINDS)}")
        return {name: {} if spec is None else spec}

    @property
    def kind(self) -> Literal["image_exists", "webhook", "command", "job"]:
        for name in GATE_KINDS:
            if getattr(self, name) is not None:
                return name  # type: ignore[return-value]
        raise AssertionError("a gate always names one kind")

    @property
    def spec(self) -> GateSpec:
        spec: GateSpec = getattr(self, self.kind)
        return spec


def check_gate_steps(gates: tuple[Gate, ...], steps: tuple[int, ...]) -> None:
    """A job gate's `at_step` must be one of the policy's steps (counted from 1)."""
    for gate in gates:
        if isinstance(gate.spec, JobGate) and gate.spec.at_step > len(steps):
            raise ValueError(
                f"preflight job at_step {gate.spec.at_step}: there are only {len(steps)} "
                f"steps {list(steps)}; use a step number from 1 to {len(steps)}"
            )


class RegistryLogin(_Frozen):
    """Pull credentials for one registry; the password comes from an environment variable
    (set it from a Secret), never from the config file."""

    registry: str
    username: str
    password_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class RegistryConfig(_Frozen):
    timeout: Timeout = timedelta(seconds=10)
    ca_file: str | None = None  # a PEM bundle of CAs to trust; default: the system's
    # Registries reached over plain HTTP (`host:port`), e.g. one on loopback; all others: TLS.
    plain_http: tuple[str, ...] = ()
    logins: tuple[RegistryLogin, ...] = ()

    _check_timeout = field_validator("timeout")(_timeout)
