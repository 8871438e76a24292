"""A Job controller for the emulator: each Job gets a Pod that runs to success or failure.

A real kubelet runs the container; the emulator reads what it would do from the first
container's `command` + `args`, interpreted by a tiny rule that covers what tests write:
a shell script (`[sh, -c, "..."]`) of `;`/`&&`/newline-separated statements where
`echo TEXT` prints a log line, `sleep N` takes N seconds and `exit N` ends with code N
(anything else is a no-op; no script at all exits 0). The Job then does what the real
controller does: `status.active`, a new Pod per failure up to `backoffLimit`, `succeeded` or
`failed` counts, conditions `SuccessCriteriaMet`/`Complete` or `FailureTarget`/`Failed`
(`BackoffLimitExceeded`, or `DeadlineExceeded` past `activeDeadlineSeconds`), and the Pod's
output is served as its log (`GET .../pods/{name}/log`, with `tailLines`).
"""

from __future__ import annotations

import heapq
import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from emulators.kube.objects import ObjectStore, clone, timestamp
from emulators.kube.reconcile_loop import ControllerThread
from emulators.kube.resources import ResourceKind

JSON = dict[str, Any]
Key = tuple[str, str]
log = logging.getLogger(__name__)
_DEADLINE = "Job was active longer than specified deadline"
_BACKOFF = "Job has reached the specified backoff limit"
_STATEMENT = re.compile(r"\s*(?:;|&&|\n)\s*")


@dataclass(frozen=True)
class Script:
    """What the Pod's container does: its output lines, how long it runs, its exit code."""

    lines: tuple[str, ...] = ()
    seconds: float = 0.0
    exit_code: int = 0


def interpret(container: JSON) -> Script:
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    if len(words) >= 3 and words[0].rsplit("/", 1)[-1] in ("sh", "bash") and words[1] == "-c":
        text = words[2]
    else:
        text = " ".join(shlex.quote(w) for w in words)
    lines: list[str] = []
    seconds = 0.0
    for statement in _STATEMENT.split(text.strip()):
        try:
            parts = shlex.split(statement)
        except ValueError:
            continue
        if not parts:
            continue
        verb, rest = parts[0], parts[1:]
        if verb == "echo":
            lines.append(" ".join(rest))
        elif verb == "sleep" and rest:
            seconds += float(rest[0])
        elif verb == "exit":
            return Script(tuple(lines), seconds, int(rest[0]) if rest else 0)
    return Script(tuple(lines), seconds, 0)


@dataclass
class _Run:
    failed: int = 0
    pod: str | None = None
    started: float = 0.0
    done: bool = False
    logs: dict[str, str] = field(default_factory=dict)


class JobController(ControllerThread):
    def __init__(self, store: ObjectStore, *, start_delay: float = 0.05) -> None:
        super().__init__(name="kube-jobs")
        self.store = store
        self.start_delay = start_delay
        found_job = store.registry.by_kind("batch/v1", "Job")
        found_pod = store.registry.by_kind("v1", "Pod")
        assert found_job is not None and found_pod is not None
        self._jobs: ResourceKind = found_job[0]
        self._pods: ResourceKind = found_pod[0]
        self._timers: list[tuple[float, str, Key]] = []
        self._runs: dict[Key, _Run] = {}
        self._logs: dict[Key, str] = {}  # pod (namespace, name) -> its output
        store.listeners.append(self._on_change)

    def pod_log(self, namespace: str, name: str, tail_lines: int | None = None) -> str | None:
        with self._cond:
            text = self._logs.get((namespace, name))
        if text is None or tail_lines is None:
            return text
        kept = text.splitlines()[-tail_lines:] if tail_lines > 0 else []
        return "".join(f"{line}\n" for line in kept)

    def _on_change(self, rk: ResourceKind, old: JSON | None, new: JSON | None) -> None:
        """Store listener (store lock held): a new Job is scheduled to start."""
        if rk is not self._jobs or old is not None or new is None:
            return
        key = (new["metadata"]["namespace"], new["metadata"]["name"])
        self._at(time.monotonic() + self.start_delay, "start", key)

    def _at(self, when: float, what: str, key: Key) -> None:
        with self._cond:
            heapq.heappush(self._timers, (when, what, key))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    wait = self._timers[0][0] - time.monotonic() if self._timers else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(timeout=wait)
                if self._stopping:
                    return
                _, what, key = heapq.heappop(self._timers)
            with self.store.lock:
                try:
                    self._step(what, key)
                except Exception:
                    log.exception("kube emulator: job %s/%s (%s) failed", *key, what)

    def _step(self, what: str, key: Key) -> None:
        job = self.store.get(self._jobs, *key)
        if job is None:
            self._runs.pop(key, None)
            return
        run = self._runs.setdefault(key, _Run())
        if run.done:
            return
        if what == "start":
            self._start_pod(job, run)
        elif what == "finish":
            self._finish_pod(job, run)
        elif what == "deadline":
            self._fail(
                job, run, "DeadlineExceeded", "Job was active longer than specified deadline"
            )

    def _start_pod(self, job: JSON, run: _Run) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        template = spec.get("template") or {}
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "job-name": meta["name"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
        }
        now = time.monotonic()
        if not run.started:
            run.started = now
            deadline = spec.get("activeDeadlineSeconds")
            if deadline:
                self._at(now + float(deadline), "deadline", (meta["namespace"], meta["name"]))
        name = f"{meta['name']}-{self.store.random_suffix()}"
        pod_spec = clone(template.get("spec") or {})
        pod_spec["nodeName"] = "emulator-node"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [_owner(job)],
            },
            "spec": pod_spec,
            "status": {"phase": "Running", "startTime": timestamp()},
        }
        self.store.create(self._pods, pod)
        run.pod = name
        script = interpret((pod_spec.get("containers") or [{}])[0])
        self._write(job, active=1, start=True)
        self._at(
            now + self.start_delay + script.seconds, "finish", (meta["namespace"], meta["name"])
        )

    def _finish_pod(self, job: JSON, run: _Run) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        pod = self.store.get(self._pods, meta["namespace"], run.pod or "")
        if pod is None:
            return
        script = interpret(((pod.get("spec") or {}).get("containers") or [{}])[0])
        with self._cond:
            self._logs[(meta["namespace"], pod["metadata"]["name"])] = "".join(
                f"{line}\n" for line in script.lines
            )
        succeeded = script.exit_code == 0
        new = clone(pod)
        new["status"] = {
            "phase": "Succeeded" if succeeded else "Failed",
            "startTime": pod["status"].get("startTime"),
            "containerStatuses": [_terminated(pod, script.exit_code)],
        }
        self.store.update(self._pods, pod, new)
        if succeeded:
            self._write(job, active=0, succeeded=1, conditions=_ended(True, "CompletionsReached"))
            run.done = True
            return
        run.failed += 1
        if run.failed > int(spec.get("backoffLimit", 6)):
            self._fail(
                job, run, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
            return
        self._write(job, active=0, failed=run.failed)
        self._start_pod(job, run)

    def _fail(self, job: JSON, run: _Run, reason: str, message: str) -> None:
        meta = job["metadata"]
        pod = self.store.get(self._pods, meta["namespace"], run.pod or "")
        if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
            self.store.delete(self._pods, pod)
        run.done = True
        conditions = _ended(False, reason, message)
        self._write(job, active=0, failed=max(run.failed, 1), conditions=conditions)

    def _write(
        self,
        job: JSON,
        *,
        active: int,
        start: bool = False,
        succeeded: int | None = None,
        failed: int | None = None,
        conditions: list[JSON] | None = None,
    ) -> None:
        current = self.store.get(self._jobs, job["metadata"]["namespace"], job["metadata"]["name"])
        if current is None:
            return
        new = clone(current)
        status = new.setdefault("status", {})
        if start:
            status.setdefault("startTime", timestamp())
        status["active"] = active
        if not active:
            status.pop("active")
        if succeeded is not None:
            status["succeeded"] = succeeded
            status["completionTime"] = timestamp()
        if failed is not None:
            status["failed"] = failed
        if conditions is not None:
            status["conditions"] = conditions
        self.store.update(self._jobs, current, new)


def _owner(job: JSON) -> JSON:
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _terminated(pod: JSON, code: int) -> JSON:
    container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
    return {
        "name": container.get("name", "job"),
        "ready": False,
        "restartCount": 0,
        "image": container.get("image", ""),
        "imageID": "",
        "state": {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "finishedAt": timestamp(),
            }
        },
    }


def _ended(success: bool, reason: str, message: str = "") -> list[JSON]:
    """The conditions the real controller (v1.31+) writes when a Job ends."""
    now = timestamp()
    kinds = ("SuccessCriteriaMet", "Complete") if success else ("FailureTarget", "Failed")
    return [
        {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message or "Reached expected number of succeeded pods",
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
        for kind in kinds
    ]
