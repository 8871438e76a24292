"""The emulator's Job controller: a Pod per attempt, success or failure by the container's
script, `backoffLimit`, `activeDeadlineSeconds`, the real controller's status and conditions,
pod logs, and the pods deleted with their Job."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube import KubeEmulator
from emulators.kube.jobs import Script, interpret


def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "check", "image": "busybox:1.36", "command": ["sh", "-c", script]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            **spec,
        },
    }


def ended(batch: client.BatchV1Api, name: str, ns: str) -> client.V1Job | None:
    found = batch.read_namespaced_job(name, ns)
    conditions = {c.type for c in (found.status and found.status.conditions) or []}
    return found if conditions & {"Complete", "Failed"} else None


def test_script_rule() -> None:
    assert interpret({"command": ["sh", "-c", "echo a b; sleep 2 && echo 'c d'; exit 4"]}) == (
        Script(("a b", "c d"), 2.0, 4)
    )
    assert interpret({"command": ["k6", "run", "test.js"]}) == Script((), 0.0, 0)
    assert interpret({}) == Script()


def test_job_succeeds_with_status_conditions_and_log(api: client.ApiClient, ns: str) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(ns, job("ok", "echo one; echo two; echo three; exit 0"))
    done = wait_for(lambda: ended(batch, "ok", ns))
    assert done.status.succeeded == 1 and not done.status.failed and not done.status.active
    assert [c.type for c in done.status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert done.status.start_time and done.status.completion_time
    pods = core.list_namespaced_pod(ns, label_selector="job-name=ok").items
    assert [p.status.phase for p in pods] == ["Succeeded"]
    assert pods[0].metadata.owner_references[0].kind == "Job"
    name = pods[0].metadata.name
    assert core.read_namespaced_pod_log(name, ns) == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log(name, ns, tail_lines=2) == "two\nthree\n"
    batch.delete_namespaced_job("ok", ns, propagation_policy="Background")
    assert core.list_namespaced_pod(ns, label_selector="job-name=ok").items == []


def test_job_retries_up_to_backoff_limit_then_fails(api: client.ApiClient, ns: str) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(ns, job("flaky", "echo no; exit 2", backoffLimit=2))
    done = wait_for(lambda: ended(batch, "flaky", ns))
    assert done.status.failed == 3 and not done.status.succeeded
    failed = next(c for c in done.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    pods = core.list_namespaced_pod(ns, label_selector="job-name=flaky").items
    assert [p.status.phase for p in pods] == ["Failed"] * 3
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert terminated.exit_code == 2


def test_job_past_its_active_deadline_fails(api: client.ApiClient, ns: str) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(ns, job("slow", "sleep 3600", activeDeadlineSeconds=1))
    done = wait_for(lambda: ended(batch, "slow", ns))
    reasons = {c.type: c.reason for c in done.status.conditions}
    assert reasons == {"FailureTarget": "DeadlineExceeded", "Failed": "DeadlineExceeded"}


def test_log_of_a_missing_pod_is_404(api: client.ApiClient, ns: str) -> None:
    with pytest.raises(ApiException) as error:
        client.CoreV1Api(api).read_namespaced_pod_log("nope", ns)
    assert error.value.status == 404


def test_kube_emulator_serves_jobs_in_discovery(kube: KubeEmulator) -> None:
    assert kube.registry.by_path("batch", "v1", "jobs") is not None
