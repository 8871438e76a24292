"""Fault injection over HTTP, and the record of every write request."""

from __future__ import annotations

import json
import threading
import time

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from emulators.kube import KubeEmulator


def config_map(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "data": {"k": "v"}}


def test_error_rate_fails_writes_but_not_reads(
    api: client.ApiClient, kube: KubeEmulator, ns: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, config_map("kept"))
    kube.faults.error_rate = 1.0
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(ns, config_map("lost"))
    assert caught.value.status == 500
    assert json.loads(caught.value.body)["reason"] == "InternalError"
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map("kept", ns)
    assert caught.value.status == 500
    assert core.read_namespaced_config_map("kept", ns).data == {"k": "v"}
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["kept"]
    # An injected failure happens before anything is done.
    assert kube.get("v1", "ConfigMap", ns, "lost") is None

    records = [(w.method, w.status, w.kind, w.name) for w in kube.writes]
    assert records == [
        ("POST", 201, "ConfigMap", "kept"),
        ("POST", 500, "ConfigMap", "lost"),
        ("DELETE", 500, "ConfigMap", "kept"),
    ]
    assert kube.writes[1].body["data"] == {"k": "v"}
    assert kube.writes[1].path == f"/api/v1/namespaces/{ns}/configmaps"

    # seed() never meets faults.
    kube.seed(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seeded", "namespace": ns}}
    )
    kube.clear_writes()
    assert kube.writes == []


def test_conflict_rate_fails_updates_and_patches(
    api: client.ApiClient, kube: KubeEmulator, ns: str
) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(ns, config_map("cm"))
    kube.faults.conflict_rate = 1.0
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map("cm", ns, {"data": {"k": "w"}})
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("cm", ns, created)
    assert caught.value.status == 409
    core.create_namespaced_config_map(ns, config_map("creates-are-not-updates"))
    assert core.read_namespaced_config_map("cm", ns).data == {"k": "v"}
    assert [(w.method, w.status) for w in kube.writes][-3:] == [
        ("PATCH", 409),
        ("PUT", 409),
        ("POST", 201),
    ]


def test_partial_rates_are_deterministic_for_a_seed() -> None:
    def outcomes(seed: int) -> list[int]:
        with KubeEmulator(seed=seed) as emu:
            emu.faults.error_rate = 0.5
            api_client = emu.api_client()
            core = client.CoreV1Api(api_client)
            codes = []
            for i in range(12):
                try:
                    core.create_namespaced_config_map("default", config_map(f"cm{i}"))
                    codes.append(201)
                except ApiException as exc:
                    codes.append(exc.status)
            api_client.close()
            return codes

    first = outcomes(7)
    assert first == outcomes(7)
    assert set(first) == {201, 500}


def test_latency_and_timeouts(api: client.ApiClient, kube: KubeEmulator, ns: str) -> None:
    core = client.CoreV1Api(api)
    kube.faults.latency = 0.2
    started = time.monotonic()
    core.list_namespaced_config_map(ns)
    assert time.monotonic() - started >= 0.2  # a lower bound: load only lengthens it

    kube.faults.latency = 0.0
    kube.faults.timeout_rate = 1.0
    kube.faults.timeout_sleep = 1.0
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.create_namespaced_config_map(ns, config_map("slow"), _request_timeout=(1, 0.3))
    kube.faults.timeout_rate = 0.0
    # The write happened; only its answer was lost, as with a real timeout.
    assert core.read_namespaced_config_map("slow", ns).data == {"k": "v"}
    assert kube.writes[-1].status == 201


def test_stop_ends_every_thread_it_started() -> None:
    before = set(threading.enumerate())
    kube = KubeEmulator(ready_delay=0.01)
    kube.start()
    api_client = kube.api_client()
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", config_map("cm"))  # a kept-alive connection
    kube.faults.timeout_rate, kube.faults.timeout_sleep = 1.0, 30.0
    # urllib3 retries a timed-out GET, so several handler threads end up sleeping.
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.read_namespaced_config_map("cm", "default", _request_timeout=(1, 0.2))
    kube.stop()  # must not wait out the 30 s sleep
    # 10 s: a third of the injected sleep, so threads that waited it out still fail the test,
    # and far beyond the milliseconds an interrupted thread needs even on a loaded machine.
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) - before == set()
    api_client.close()
