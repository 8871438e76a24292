"""The `job` gate: a Kubernetes Job from the service's template, run against the canary before
its traffic is raised to `at_step` (a k6 load test against the canary's pods, say).

It is level-triggered from the ticks, like every other cluster action, so no tick ever waits
for it: each tick of a rollout whose `gate` is `job:<step>` reads the Job (creating it the first
time, under a name fixed by the rollout and step, so a restarted bot adopts the Job it already
made), and reports a result once the Job succeeded or failed, or the gate's timeout passed by
the rollout's clock. The Job carries the bot's label and the rollout's annotation, gets
`activeDeadlineSeconds` a minute past the timeout (so it stops itself should the bot go away),
and is deleted with its pods once its result is read; its last log lines go to the thread.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from rollout.config import Config
from rollout.gates.config import JobGate
from rollout.gates.run import fill, last_lines, placeholders
from rollout.kube import MANAGED_BY
from rollout.kube_call import BoundedCall
from rollout.model import GateResult, Rollout
from rollout.traffic.workloads import ROLLOUT_ANNOTATION

log = logging.getLogger(__name__)
LOG_LINES = 10
DEADLINE_GRACE_S = 60


class JobsApi:
    """Jobs and their pods' logs, each call bounded by the one Kubernetes deadline."""

    def __init__(self, api_client: k8s.ApiClient, *, request_timeout: float) -> None:
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._call = BoundedCall(request_timeout=request_timeout)

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job = self._call(
                "get",
                f"job {namespace}/{name}",
                lambda timeout: self._batch.read_namespaced_job(
                    name, namespace, _request_timeout=timeout
                ),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(job)
        return data

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            self._call(
                "create",
                f"job {namespace}/{body['metadata']['name']}",
                lambda timeout: self._batch.create_namespaced_job(
                    namespace, body, _request_timeout=timeout
                ),
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def delete(self, namespace: str, name: str) -> None:
        try:
            self._call(
                "delete",
                f"job {namespace}/{name}",
                lambda timeout: self._batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _request_timeout=timeout
                ),
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def logs(self, namespace: str, job: str) -> str:
        """The last log lines of the Job's newest pod ('' when it has none)."""
        pods = self._call(
            "list",
            f"pods of job {namespace}/{job}",
            lambda timeout: self._core.list_namespaced_pod(
                namespace, label_selector=f"job-name={job}", _request_timeout=timeout
            ),
        )
        if not pods.items:
            return ""
        newest = max(pods.items, key=lambda pod: pod.metadata.creation_timestamp or 0)
        text: str = self._call(
            "get",
            f"log of pod {namespace}/{newest.metadata.name}",
            lambda timeout: self._core.read_namespaced_pod_log(
                newest.metadata.name, namespace, tail_lines=LOG_LINES, _request_timeout=timeout
            ),
        )
        return text


class JobGates:
    def __init__(
        self, *, config: Config, api: JobsApi, audit: Callable[[Rollout, str], None]
    ) -> None:
        self._config = config
        self._api = api
        self._audit = audit

    def check(self, rollout: Rollout, *, now: datetime) -> GateResult | None:
        """One look at the running job gate: its result, or None while the Job runs."""
        key = rollout.gate or ""
        step = int(key.removeprefix("job:"))
        name = job_name(rollout, step)
        gate = self._gate(rollout, step)
        if gate is None:
            why = f"no job gate is configured at step {step} any more (config changed)"
            return GateResult(key=key, name=f"job {name}", passed=False, detail=why)
        job = self._api.read(rollout.namespace, name)
        if job is None:
            self._api.create(rollout.namespace, job_body(rollout, gate, name))
            self._audit(rollout, f"job gate {name} created (step {step})")
            return None
        status = job.get("status") or {}
        failed_condition = _condition(status, "Failed")
        if status.get("succeeded"):
            return self._done(rollout, name, key, passed=True, why="the Job succeeded")
        if status.get("failed") or failed_condition:
            why = "the Job failed" + (f" ({failed_condition})" if failed_condition else "")
            return self._done(rollout, name, key, passed=False, why=why)
        started = rollout.gate_started_at or now
        if now - started > gate.timeout:
            minutes = int(gate.timeout.total_seconds())
            why = f"the Job did not finish within {minutes}s"
            return self._done(rollout, name, key, passed=False, why=why)
        return None

    def discard(self, rollout: Rollout) -> None:
        """The rollout moved on while its Job ran (e.g. rolled back): the Job goes."""
        step = int((rollout.gate or "job:0").removeprefix("job:"))
        name = job_name(rollout, step)
        if self._api.read(rollout.namespace, name) is not None:
            self._api.delete(rollout.namespace, name)
            self._audit(rollout, f"job gate {name} deleted: the rollout is {rollout.phase.value}")

    def _done(self, rollout: Rollout, name: str, key: str, *, passed: bool, why: str) -> GateResult:
        try:
            lines = last_lines(self._api.logs(rollout.namespace, name), LOG_LINES)
        except Exception as error:  # the result stands without its logs
            log.warning("logs of job %s: %s", name, error)
            lines = ""
        self._api.delete(rollout.namespace, name)
        self._audit(rollout, f"job gate {name}: {why}; Job deleted")
        detail = why + (f"; last log lines:\n{lines}" if lines else "")
        return GateResult(key=key, name=f"job {name}", passed=passed, detail=detail)

    def _gate(self, rollout: Rollout, step: int) -> JobGate | None:
        """The job gate guarding `step` (a single-step strategy's one step: any)."""
        service = self._config.services.get(rollout.service)
        gates = [g.spec for g in service.policy.preflight] if service else []
        jobs = [gate for gate in gates if isinstance(gate, JobGate)]
        exact = [gate for gate in jobs if gate.at_step == step]
        single = len(rollout.plan.steps) == 1
        found = exact or (jobs if single else [])
        return found[0] if found else None


def job_name(rollout: Rollout, step: int) -> str:
    """`<deployment>-gate<step>-<hash of the rollout>`: fixed per rollout and step, ≤ 63."""
    suffix = hashlib.sha256(rollout.id.encode()).hexdigest()[:6]
    return f"{rollout.deployment[:40]}-gate{step}-{suffix}"


def job_body(rollout: Rollout, gate: JobGate, name: str) -> dict[str, Any]:
    """The template with placeholders filled, named and labelled as the bot's, bounded."""
    values = placeholders(rollout)
    body: dict[str, Any] = _fill_all(copy.deepcopy(gate.template), values)
    body["apiVersion"], body["kind"] = "batch/v1", "Job"
    metadata = body.setdefault("metadata", {})
    metadata["name"] = name
    metadata.pop("generateName", None)
    metadata["labels"] = {**(metadata.get("labels") or {}), **MANAGED_BY}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        ROLLOUT_ANNOTATION: rollout.id,
    }
    spec = body.setdefault("spec", {})
    spec.setdefault("backoffLimit", 0)
    # A backstop for a bot that went away: the gate's own timeout (by the rollout's clock) decides.
    spec["activeDeadlineSeconds"] = int(gate.timeout.total_seconds()) + DEADLINE_GRACE_S
    spec["template"].setdefault("spec", {}).setdefault("restartPolicy", "Never")
    return body


def _fill_all(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, list):
        return [_fill_all(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill_all(item, values) for key, item in value.items()}
    return value


def _condition(status: dict[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return str(condition.get("reason") or condition.get("message") or kind)
    return None
