"""Overrides stay inside the service's policy: who may change steps, interval and approval.

`--steps`, `--interval`, `--no-approval` and `/canary promote` each loosen a rollout's policy
for one rollout. `allow_overrides` grants them per role (deployers, approvers; a person in
both roles gets both grants), and `min_step_interval` is a floor no grant goes below. This
module only judges: the caller says which roles the person holds (from config and cached
group membership) and gets back a refusal text naming the policy key, or None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from rollout.config import Override, ServiceConfig
from rollout.durations import format_duration

FLAG = {
    "steps": "--steps",
    "interval": "--interval",
    "no_approval": "--no-approval",
    "promote": "/canary promote",
}


@dataclass(frozen=True, kw_only=True)
class Roles:
    deployer: bool
    approver: bool


def used_at_start(
    *, steps: Sequence[int] | None, interval: timedelta | None, approval: bool | None
) -> tuple[Override, ...]:
    """The overrides a `/canary start` asks for."""
    used: list[Override] = []
    if steps is not None:
        used.append("steps")
    if interval is not None:
        used.append("interval")
    if approval is False:
        used.append("no_approval")
    return tuple(used)


def granted(service: ServiceConfig, roles: Roles) -> frozenset[Override]:
    grants: set[Override] = set()
    if roles.deployer:
        grants |= set(service.granted("deployers"))
    if roles.approver:
        grants |= set(service.granted("approvers"))
    return frozenset(grants)


def override_problem(
    name: str,
    service: ServiceConfig,
    *,
    used: Sequence[Override],
    roles: Roles,
    interval: timedelta | None = None,
) -> str | None:
    """Why `used` is not allowed for a person with `roles` on service `name`, or None."""
    allowed = granted(service, roles)
    refused = [override for override in used if override not in allowed]
    if refused:
        flags = ", ".join(f"`{FLAG[o]}`" for o in refused)
        where = f"{service.environment} service `{name}`"
        return (
            f"{flags} {'is' if len(refused) == 1 else 'are'} not allowed for you on the {where}: "
            f"policy key `allow_overrides` (in `services.{name}` or `defaults`) grants "
            f"deployers {_names(service.granted('deployers'))} and approvers "
            f"{_names(service.granted('approvers'))}. " + _how_instead(refused, name=name)
        )
    floor = service.policy.min_step_interval
    if interval is not None and interval < floor:
        return (
            f"`--interval {format_duration(interval)}` is shorter than the floor for `{name}`: "
            f"policy key `min_step_interval` is {format_duration(floor)}. "
            f"Use `--interval {format_duration(floor)}` or longer, or leave it out."
        )
    return None


def _names(overrides: Sequence[Override]) -> str:
    return "[" + ", ".join(overrides) + "]" if overrides else "none"


def _how_instead(refused: Sequence[Override], *, name: str) -> str:
    if refused == ["promote"]:
        return (
            "Let the steps run (`/canary status` shows the next one), or ask someone the policy "
            "allows to promote."
        )
    return (
        f"Start without {', '.join(f'`{FLAG[o]}`' for o in refused)} to use the policy's "
        f"settings (`/canary start {name} <tag>`), or ask someone the policy allows."
    )
