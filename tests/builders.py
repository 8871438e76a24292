"""One set of test builders: the rollouts and Deployments tests start from.

Each builder gives a complete, valid object with the values most tests share, and a test names
only what it is about (`progressing_rollout(phase=Phase.PAUSED)`), so a new field of `Rollout`
or of the Deployment manifest is added in one place. The manifest itself is the sandbox's
(`canary_sandbox.sandbox.stable_deployment`), which the demo and the benchmarks seed too.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from canary_sandbox.sandbox import stable_deployment
from rollout.model import Phase, Rollout, RolloutPlan

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rollout_plan(**changes: Any) -> RolloutPlan:
    """Steps 5, 25, 50 % half an hour apart, analysed every 30 s, then one approval, which the
    starter may not give."""
    plan = RolloutPlan(
        steps=(5, 25, 50),
        step_interval=timedelta(minutes=30),
        analysis_interval=timedelta(seconds=30),
        approval=True,
        approvals_required=1,
        self_approval=False,
        progress_deadline=timedelta(minutes=10),
        approval_timeout=timedelta(hours=24),
    )
    return replace(plan, **changes)


def rollout(*, at: datetime = NOW, **changes: Any) -> Rollout:
    """A pending `replicas` rollout of shop/checkout from v1 to v2, started by U01ALICE in the
    release channel and last changed at `at`; `changes` are any other Rollout fields."""
    fields: dict[str, Any] = {
        "id": "r-123",
        "service": "checkout",
        "namespace": "shop",
        "deployment": "checkout",
        "container": "app",
        "strategy": "replicas",
        "stable_image": "registry:5000/shop/checkout:v1",
        "canary_image": "registry:5000/shop/checkout:v2",
        "plan": rollout_plan(),
        "channel": "C0RELEASES",
        "started_by": "U01ALICE",
        "created_at": at,
        "updated_at": at,
    }
    return Rollout(**{**fields, **changes})


def progressing_rollout(*, now: datetime = NOW, **changes: Any) -> Rollout:
    """The same rollout at step 2 of 3 (25 %), started an hour before `now`."""
    progressing: dict[str, Any] = {
        "created_at": now - timedelta(hours=1),
        "updated_at": now,
        "phase": Phase.PROGRESSING,
        "step_index": 1,
        "weight": 25.0,
    }
    return rollout(**{**progressing, **changes})


def deployment(
    name: str,
    *,
    replicas: int = 2,
    image: str = "web:v1",
    track: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A Deployment for the emulator's own tests: small, and with no namespace in its metadata,
    so a test creates it through the API in a namespace of its own."""
    return stable_deployment(name, namespace=namespace, replicas=replicas, image=image, track=track)


def many_services_config(services: list[str], **defaults: Any) -> str:
    """A config for many services in one namespace, each its own Deployment on the replicas
    strategy, 30 s analysis and 30 min steps; `defaults` adds to or overrides the defaults."""
    return yaml.safe_dump(
        {
            "slack": {"release_channels": ["C0RELEASES"]},
            "defaults": {
                "steps": [5, 25, 50],
                "step_interval": "30m",
                "analysis_interval": "30s",
                **defaults,
            },
            "services": {
                name: {"namespace": "shop", "deployment": name, "strategy": "replicas"}
                for name in services
            },
        }
    )
