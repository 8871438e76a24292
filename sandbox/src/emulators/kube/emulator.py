"""`KubeEmulator`: a Kubernetes API server for tests and `canary-bot demo`, reached over HTTP.

The bot talks to it with the official `kubernetes` client through the kubeconfig written by
`write_kubeconfig`, exactly as it talks to a real cluster; tests set up objects with `seed()`,
read them back with `get()`/`list()`, steer the Deployment controller with `hold_ready()`, turn
on failures through `faults`, and assert on the requests the bot sent through `writes` (every
request, reads too, is counted by `requests()`).

Where it knowingly differs from a real API server (v1.35):
- stricter: unknown fields are a 422 (a real server drops them silently); CEL
  `x-kubernetes-validations` of CRDs are not evaluated;
- Jobs run no container: a tiny rule reads the first container's script (emulators/kube/jobs.py);
- not served: watch (400), server-side apply (415), deletecollection (405), other kinds (404);
- deletion is immediate: no finalizers, no graceful deletion, dependents go at once;
- the controller owns Pods directly (no ReplicaSets), rolls out all new Pods at once, ignores
  `minReadySeconds` and does not scale a paused Deployment;
- core/v1 and events.k8s.io/v1 Events are two separate stores (no conversion between them);
- no `managedFields`; an emptied list stays `[]` where Go's `omitempty` would drop it.
"""

from __future__ import annotations

import builtins
import tempfile
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from emulators.kube import errors
from emulators.kube.api import KubeApi
from emulators.kube.argo_controller import ArgoRolloutController
from emulators.kube.controller import DeploymentController
from emulators.kube.faults import FaultDice, Faults
from emulators.kube.jobs import JobController
from emulators.kube.objects import ObjectStore
from emulators.kube.resources import BUILTIN_KINDS, Registry, ResourceKind, load_crds
from emulators.kube.routing import Router
from emulators.kube.server import Frontend, KubeHTTPServer, WriteRecord
from emulators.kube.validation import Validator

JSON = dict[str, Any]


class KubeEmulator:
    def __init__(
        self,
        *,
        crd_dir: Path | None = None,
        ready_delay: float = 0.2,
        validate: bool = True,
        seed: int = 0,
    ) -> None:
        kinds = list(BUILTIN_KINDS) + (load_crds(crd_dir) if crd_dir is not None else [])
        self.registry = Registry(kinds)
        self.store = ObjectStore(self.registry, seed=seed)
        for namespace in ("default", "kube-system", "kube-public"):  # as in a fresh cluster
            self.store.ensure_namespace(namespace)
        self.api = KubeApi(self.store, Validator(enabled=validate))
        self.controller = DeploymentController(self.store, ready_delay=ready_delay)
        self.argo = ArgoRolloutController.if_served(self.store, step_delay=ready_delay)
        self.jobs = JobController(self.store, start_delay=min(ready_delay, 0.05))
        self.faults = Faults()
        router = Router(self.api, self.registry, pod_log=self.jobs.pod_log)
        self._frontend = Frontend(router, faults=self.faults, dice=FaultDice(seed))
        self._server: KubeHTTPServer | None = None
        self.base_url = ""

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Serves on a free port of 127.0.0.1 and starts the controller; returns the base URL."""
        if self._server is not None:
            return self.base_url
        self._frontend.stopping.clear()
        self._server = KubeHTTPServer(self._frontend)
        self.base_url = f"http://127.0.0.1:{self._server.port}"
        self._frontend.router.address = f"127.0.0.1:{self._server.port}"
        self._server.start()
        self.controller.start()
        self.jobs.start()
        if self.argo is not None:
            self.argo.start()
        return self.base_url

    def stop(self) -> None:
        self.controller.stop()
        self.jobs.stop()
        if self.argo is not None:
            self.argo.stop()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, *, context: str = "emulator") -> Path:
        """A kubeconfig for `kubernetes.config.new_client_from_config` / `load_kube_config`."""
        if not self.base_url:
            raise RuntimeError("start() the emulator before writing its kubeconfig")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.base_url}}],
            "users": [{"name": context, "user": {"token": "emulator"}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": "default"},
                }
            ],
            "current-context": context,
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def api_client(self) -> Any:
        """A real `kubernetes.client.ApiClient` for this emulator (kubeconfig in a temp dir)."""
        from kubernetes import config

        with tempfile.TemporaryDirectory() as tmp:
            path = self.write_kubeconfig(Path(tmp) / "kubeconfig")
            return config.new_client_from_config(config_file=str(path))

    # --- direct access for tests ------------------------------------------------------------

    def _kind(self, api_version: str, kind: str) -> tuple[ResourceKind, str]:
        found = self.registry.by_kind(api_version, kind)
        if found is None:
            raise KeyError(f"the emulator does not serve {kind} in {api_version}")
        return found

    def seed(self, obj: JSON) -> JSON:
        """Creates `obj` directly: validated and defaulted, but no faults, no write record, and
        its `status` kept (so tests can start from any state). Raises `ApiError` if invalid."""
        rk, version = self._kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        namespace = None
        if rk.namespaced:
            namespace = (obj.get("metadata") or {}).get("namespace") or "default"
        return self.api.create(rk, version, namespace, obj, keep_status=True)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JSON | None:
        rk, version = self._kind(api_version, kind)
        try:
            return self.api.get(rk, version, namespace, name)
        except errors.ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[JSON]:
        rk, version = self._kind(api_version, kind)
        items: list[JSON] = self.api.list(rk, version, namespace, label_selector=label_selector)[
            "items"
        ]
        return items

    def hold_ready(self, namespace: str, name: str, held: bool = True) -> None:
        """While held, the controller never makes this Deployment's new pods ready."""
        self.controller.hold(namespace, name, held)

    @property
    def writes(self) -> builtins.list[WriteRecord]:
        """Every write request received over HTTP, in order (a copy: safe to iterate)."""
        return self.writes_snapshot()

    def writes_snapshot(self) -> builtins.list[WriteRecord]:
        with self._frontend.writes_lock:
            return list(self._frontend.writes)

    def requests(self) -> Counter[tuple[str, str]]:
        """Every request received over HTTP (reads too), counted by (method, path); a copy."""
        with self._frontend.writes_lock:
            return Counter(self._frontend.requests)

    def clear_requests(self) -> None:
        with self._frontend.writes_lock:
            self._frontend.requests.clear()

    def clear_writes(self) -> None:
        with self._frontend.writes_lock:
            self._frontend.writes.clear()
