"""The configuration schema (DESIGN.md "Config file"), validated once into frozen objects.

The domain reads its policies from here; `bot/config_loader.py` reads the YAML file, keeps line
numbers and turns pydantic's errors into `key.path (line N): message` lines. Every `defaults`
key may be overridden per service: the per-service keys are merged over `defaults` into one
`Policy` per service before validation, so a service never sees a half-merged policy.

This module holds the policy, the services and the top-level `Config`; each self-contained
section has a module of its own (`slack:` in config_slack.py, `prometheus:` in
config_prometheus.py, `api:` in config_api.py, `store:` and `ha:` in config_ha.py, `preflight`
and `registry:` in gates/config.py), re-exported here so that callers import from one place.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rollout.config_api import ApiConfig, ApiToken, ApiVerb
from rollout.config_base import K8S_NAME, Duration, Frozen
from rollout.config_ha import HaConfig, StoreConfig
from rollout.config_prometheus import PrometheusAuth, PrometheusConfig, PrometheusTls
from rollout.config_slack import SlackConfig, SlackRateLimits
from rollout.gates.config import Gate, RegistryConfig, check_gate_steps
from rollout.images import parse_registry_rule
from rollout.traffic import registry

__all__ = [
    "OVERRIDES",
    "POLICY_KEYS",
    "AllowOverrides",
    "ApiConfig",
    "ApiToken",
    "ApiVerb",
    "Config",
    "Duration",
    "HaConfig",
    "KubernetesConfig",
    "Override",
    "Policy",
    "PrometheusAuth",
    "PrometheusConfig",
    "PrometheusTls",
    "RegistryConfig",
    "Rule",
    "ServerConfig",
    "ServiceConfig",
    "SlackConfig",
    "SlackRateLimits",
    "StoreConfig",
    "validate_steps",
]


class Rule(Frozen):
    """Roll back when `metric` of the canary is beyond one threshold for the whole `for`.

    Exactly one threshold: an absolute `above`/`below`, or one relative to stable
    (`above_stable_by`: canary minus stable; `above_stable_ratio`: canary divided by stable).
    `min_request_rate` (canary req/s) keeps a rule from being judged on too little traffic.
    """

    metric: str
    above: float | None = None
    below: float | None = None
    above_stable_by: float | None = None
    above_stable_ratio: float | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    min_request_rate: float | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> Rule:
        given = [
            name
            for name in ("above", "below", "above_stable_by", "above_stable_ratio")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a rule needs exactly one threshold: above, below, above_stable_by or "
                f"above_stable_ratio (found {', '.join(given) or 'none'})"
            )
        return self

    @property
    def threshold_key(self) -> str:
        for name in ("above", "below", "above_stable_by", "above_stable_ratio"):
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated rules always have a threshold")

    @property
    def threshold(self) -> float:
        value = getattr(self, self.threshold_key)
        assert isinstance(value, float | int)
        return float(value)


def _default_rules() -> tuple[Rule, ...]:
    return (
        Rule(metric="error_rate", above=0.01, for_=timedelta(minutes=2)),
        Rule(metric="latency_avg_ms", above=500, for_=timedelta(minutes=2)),
        Rule(metric="success_rate", below=0.999, for_=timedelta(0)),
    )


Override = Literal["steps", "interval", "no_approval", "promote"]
OVERRIDES: tuple[Override, ...] = ("steps", "interval", "no_approval", "promote")


class AllowOverrides(Frozen):
    """Who may change a rollout's policy for one rollout: `--steps`, `--interval`,
    `--no-approval` at start, and `/canary promote` (skip the remaining steps).

    A role left out (None) gets the environment's default: on production deployers get none
    and approvers `steps` and `interval`; elsewhere both get all four (`ServiceConfig.granted`).
    """

    deployers: tuple[Override, ...] | None = None
    approvers: tuple[Override, ...] | None = None


class Policy(Frozen):
    """How a rollout proceeds: the `defaults` section, overridable per service."""

    steps: tuple[int, ...] = (5, 25, 45, 65, 85)
    step_interval: Duration = timedelta(hours=1)
    analysis_interval: Duration = timedelta(seconds=30)
    analysis_window: Duration = timedelta(minutes=1)
    approval: bool = True
    approvals_required: int = Field(default=1, ge=1, le=10)
    approval_timeout: Duration = timedelta(hours=24)
    self_approval: bool = False
    on_no_data: Literal["hold", "rollback", "ignore"] = "hold"
    no_data_alert_after: Duration = timedelta(minutes=5)
    on_failure: Literal["rollback", "pause"] = "rollback"
    repage_interval: Duration = timedelta(minutes=15)
    # Image policy: canary images must come from one of these registries, each `host[:port]`
    # with an optional repository path, matched on whole parts (empty: any registry), and be
    # pinned by digest when required.
    allowed_registries: tuple[str, ...] = ()
    require_digest: bool = False
    # Resolve the tag to a digest at start; canary and promoted stable run that digest.
    pin_digest: bool = True
    # Checks before the canary exists (image_exists, webhook, command) or before a step's
    # traffic is raised (job): see rollout/gates/.
    preflight: tuple[Gate, ...] = ()
    progress_deadline: Duration = timedelta(minutes=10)
    # Stable not rolled out this long after promotion started: page on-call. None: the
    # progress_deadline.
    promotion_deadline: Duration | None = None
    rules: tuple[Rule, ...] = Field(default_factory=_default_rules)
    # Which start flags and `/canary promote` each role may use (see `AllowOverrides`), and
    # the shortest step interval any `--interval` may ask for, whoever grants it.
    allow_overrides: AllowOverrides = Field(default_factory=AllowOverrides)
    min_step_interval: Duration = timedelta(minutes=1)
    # On-demand snapshots (`/canary status <service>`) per service: at most one this often
    # (0s: no limit).
    snapshot_min_interval: Duration = timedelta(minutes=1)

    @field_validator("steps")
    @classmethod
    def _steps_rise_below_100(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        return validate_steps(steps)

    @field_validator("allow_overrides", mode="before")
    @classmethod
    def _override_names(cls, value: Any) -> Any:
        """Name the allowed values in the message, rather than pydantic's literal error."""
        if not isinstance(value, dict):
            return value
        for role, names in value.items():
            if role not in ("deployers", "approvers"):
                continue  # extra="forbid" reports it with the allowed keys
            for name in names if isinstance(names, list | tuple) else ():
                if name not in OVERRIDES:
                    raise ValueError(
                        f"{role}: {name!r} is not an override; use any of "
                        f"{', '.join(OVERRIDES)} (or [] for none)"
                    )
        return value

    @field_validator("allowed_registries")
    @classmethod
    def _registry_rules(cls, rules: tuple[str, ...]) -> tuple[str, ...]:
        for rule in rules:
            parse_registry_rule(rule)
        return rules

    @model_validator(mode="after")
    def _job_gates_at_a_step(self) -> Policy:
        check_gate_steps(self.preflight, self.steps)
        return self

    @field_validator("analysis_interval", "step_interval", "min_step_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value


POLICY_KEYS = frozenset(Policy.model_fields)


def validate_steps(steps: tuple[int, ...]) -> tuple[int, ...]:
    """Steps are canary weights in percent, strictly rising, each in 1..99 (100 is promotion)."""
    if not steps:
        raise ValueError("needs at least one step, like [5, 25, 50]")
    for weight in steps:
        if not 1 <= weight <= 99:
            raise ValueError(f"step {weight} is out of range: each step is a weight from 1 to 99")
    if list(steps) != sorted(set(steps)):
        raise ValueError(f"steps {list(steps)} must rise strictly, like [5, 25, 50]")
    return steps


class ServiceConfig(Frozen):
    """One entry of `services:`; `policy` is `defaults` with this service's overrides on top."""

    namespace: str
    deployment: str
    container: str | None = None
    # A name in rollout/traffic/registry.py, which says what else the strategy needs.
    strategy: str = "replicas"
    service: str | None = None
    ingress: str | None = None
    virtual_service: str | None = None
    destination_rule: str | None = None
    http_route: str | None = None
    # Which route of the VirtualService (http route name) or HTTPRoute (rule name or index)
    # carries the service's traffic; needed only when several reach the Service.
    route: str | None = None
    argo_rollout: str | None = None
    environment: str = "production"
    metrics: dict[str, str] = Field(default_factory=dict)
    policy: Policy = Field(default_factory=Policy)

    @field_validator("namespace", "deployment")
    @classmethod
    def _k8s_name(cls, value: str) -> str:
        if not K8S_NAME.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid Kubernetes name (lower-case, digits, '-')")
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        registry.strategy(value)  # raises, listing the strategies there are
        return value

    @field_validator("route", mode="before")
    @classmethod
    def _route_name_or_index(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _route_only_where_routes_are_split(self) -> ServiceConfig:
        if self.route is not None and not registry.strategy(self.strategy).splits_route:
            splitting = registry.names_with(lambda s: s.splits_route)
            raise ValueError(
                f"`route` names the route to split for strategies "
                f"{registry.listed(splitting, last='and')}; strategy "
                f"{self.strategy} splits no route, so remove `route: {self.route}`"
            )
        return self

    @property
    def canary_deployment(self) -> str:
        return f"{self.deployment}-canary"

    @property
    def is_production(self) -> bool:
        return self.environment.lower() in {"production", "prod"}

    def granted(self, role: Literal["deployers", "approvers"]) -> tuple[Override, ...]:
        """The overrides `allow_overrides` gives `role` here, environment defaults filled in."""
        given = getattr(self.policy.allow_overrides, role)
        if given is not None:
            return tuple(given)
        if not self.is_production:
            return OVERRIDES
        return ("steps", "interval") if role == "approvers" else ()


class KubernetesConfig(Frozen):
    context: str | None = None
    # One deadline per API call, retries included (DESIGN.md "Bounded calls").
    request_timeout: Duration = timedelta(seconds=10)
    # How many rollouts the loop works on at once: one whose calls hang holds one worker.
    parallel_rollouts: int = Field(default=8, ge=1, le=64)

    @field_validator("request_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("request_timeout must be longer than 0s, for example 10s")
        return value


class ServerConfig(Frozen):
    """`serve`'s two ports: the main one Slack and pipelines reach, the admin one for probes
    and Prometheus, which the public ingress never exposes (DESIGN.md "Command line")."""

    port: int = Field(default=3000, ge=1, le=65535)
    admin_port: int = Field(default=9100, ge=1, le=65535)

    @model_validator(mode="after")
    def _apart(self) -> ServerConfig:
        if self.port == self.admin_port:
            raise ValueError(
                f"port and admin_port are both {self.port}: the admin port (/metrics, "
                "/readyz) must differ from the port Slack reaches, like port: 3000, "
                "admin_port: 9100"
            )
        return self


class Config(Frozen):
    slack: SlackConfig = Field(default_factory=SlackConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    ha: HaConfig = Field(default_factory=HaConfig)
    cluster_name: str = "default"
    defaults: Policy = Field(default_factory=Policy)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults_into_services(cls, data: Any) -> Any:
        """Give each service one `policy`: the raw `defaults` with its own keys on top."""
        if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
            return data
        defaults = data.get("defaults")
        if not isinstance(defaults, dict):
            defaults = {}  # a non-mapping `defaults` is reported at `defaults` itself
        services: dict[str, Any] = {}
        for name, raw in data["services"].items():
            if isinstance(raw, dict):
                own = {key: value for key, value in raw.items() if key in POLICY_KEYS}
                rest = {key: value for key, value in raw.items() if key not in POLICY_KEYS}
                raw = {**rest, "policy": {**defaults, **own}}
            services[name] = raw
        return {**data, "services": services}

    @field_validator("services")
    @classmethod
    def _service_names(cls, services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        for name in services:
            if not K8S_NAME.match(name):
                raise ValueError(f"service name {name!r}: use lower-case letters, digits and '-'")
        return services

    @model_validator(mode="after")
    def _api_channel(self) -> Config:
        """API-started rollouts are announced in `api.channel` or the first release channel."""
        if self.api.tokens and self.api.channel is None and not self.slack.release_channels:
            raise ValueError(
                "api.tokens needs a channel to announce rollouts in: set api.channel "
                "(like C0RELEASES) or slack.release_channels"
            )
        channel, releases = self.api.channel, self.slack.release_channels
        if channel is not None and releases and channel not in releases:
            raise ValueError(
                f"api.channel {channel} is not one of slack.release_channels "
                f"({', '.join(releases)}): approvals there would be refused; add it to "
                "slack.release_channels, or leave api.channel out to use the first of them"
            )
        for token in self.api.tokens:
            unknown = sorted(set(token.services) - {"*", *self.services})
            if unknown:
                raise ValueError(
                    f"api token {token.name} names unknown service(s) {', '.join(unknown)}; "
                    f'known: {", ".join(sorted(self.services)) or "none"} (or "*" for all)'
                )
        return self

    @property
    def api_channel(self) -> str | None:
        return self.api.channel or next(iter(self.slack.release_channels), None)
