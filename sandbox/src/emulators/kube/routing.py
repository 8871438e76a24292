"""URL to operation: parses API paths the way the API server's router does and dispatches.

`/api/v1/...` is the core group and `/apis/{group}/{version}/...` the named groups; below that,
`[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`. Collections answer GET (list) and POST
(create); objects answer GET, PUT, PATCH and DELETE; `status` and `scale` subresources answer
GET, PUT and PATCH. Anything else is a 404 or 405 `Status`, as on a real server. Discovery
(`/api`, `/apis`, `/version`, resource lists) is minimal but well-formed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulators.kube import errors, patching, scale
from emulators.kube.api import KubeApi
from emulators.kube.resources import Registry, ResourceKind
from emulators.kube.schemas import KUBERNETES_VERSION

JSON = dict[str, Any]
log = logging.getLogger(__name__)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: bytes


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a resource URL names; `rk` is None for discovery and unknown paths."""

    rk: ResourceKind | None
    group: str = ""
    version: str = ""
    namespace: str | None = None
    plural: str = ""
    name: str | None = None
    subresource: str | None = None
    extra: bool = False  # segments beyond {name}/{subresource}


def parse_target(registry: Registry, path: str) -> Target:
    segments = [s for s in path.split("?")[0].strip("/").split("/") if s]
    if segments[:1] == ["api"] and len(segments) >= 2:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 3:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return Target(rk=None)
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return Target(rk=None, group=group, version=version)
    rk = registry.by_path(group, version, rest[0])
    return Target(
        rk=rk,
        group=group,
        version=version,
        namespace=namespace,
        plural=rest[0],
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
        extra=len(rest) > 3,
    )


class Router:
    def __init__(
        self,
        api: KubeApi,
        registry: Registry,
        *,
        address: str = "",
        pod_log: Callable[[str, str, int | None], str | None] | None = None,
    ) -> None:
        self.api = api
        self.registry = registry
        self.address = address
        # A Pod's log (`GET .../pods/{name}/log`): only Job pods have one (emulators/kube/jobs.py).
        self.pod_log = pod_log or (lambda namespace, name, tail: None)

    def handle(self, request: Request) -> tuple[int, Any]:
        """The HTTP code and JSON body for a request; failures become `Status` bodies."""
        try:
            return self._handle(request)
        except errors.ApiError as exc:
            return exc.code, exc.status()
        except Exception as exc:  # a bug in the emulator: answer as a server would, and say so
            log.exception("kube emulator failed on %s %s", request.method, request.path)
            failure = errors.internal(f"emulator bug: {exc!r}")
            return failure.code, failure.status()

    def _handle(self, request: Request) -> tuple[int, Any]:
        path = request.path.split("?")[0].rstrip("/") or "/"
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, "ok"
        if path == "/version":
            return 200, self._version()
        if path in ("/api", "/apis") or (path.startswith("/apis/") and path.count("/") == 2):
            found = self._discovery(path)
            if found is None:
                raise errors.path_not_found()
            return 200, found
        target = parse_target(self.registry, path)
        if target.rk is None:
            if target.version and not target.plural:
                return 200, self._resource_list(target.group, target.version)
            raise errors.path_not_found()
        if request.query.get("watch") in ("true", "1") or target.plural == "watch":
            raise errors.bad_request("watch is not supported by the emulator")
        return self._dispatch(request, target, target.rk)

    def _dispatch(self, request: Request, target: Target, rk: ResourceKind) -> tuple[int, Any]:
        if (
            target.extra
            or (rk.namespaced and target.name and target.namespace is None)
            or (not rk.namespaced and target.namespace is not None)
        ):
            raise errors.path_not_found()
        method, query = request.method, request.query
        dry_run = query.get("dryRun") == "All"
        version, namespace = target.version, target.namespace
        if target.name is None:
            if method == "GET":
                limit = query.get("limit")
                return 200, self.api.list(
                    rk,
                    version,
                    namespace,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                    limit=int(limit) if limit and limit.isdigit() else None,
                    continue_token=query.get("continue"),
                )
            if method == "POST":
                if rk.namespaced and namespace is None:
                    raise errors.method_not_allowed(
                        f"create of {rk.resource_name()} needs a namespace in the URL"
                    )
                body = self._json_body(request)
                return 201, self.api.create(rk, version, namespace, body, dry_run=dry_run)
            raise errors.method_not_allowed(
                f"the server does not allow this method on the requested resource ({method})"
            )
        name = target.name
        sub = target.subresource
        if sub == "scale":
            return self._scale(request, rk, version, namespace, name, dry_run=dry_run)
        if sub == "log" and rk.kind == "Pod" and not rk.group and method == "GET":
            self.api.get(rk, version, namespace, name)  # 404 when there is no such Pod
            tail = request.query.get("tailLines")
            text = self.pod_log(
                namespace or "", name, int(tail) if tail and tail.isdigit() else None
            )
            return 200, text or ""
        if sub not in (None, "status") or (sub == "status" and not rk.status_subresource):
            raise errors.path_not_found()
        if method == "GET":
            return 200, self.api.get(rk, version, namespace, name)
        if method == "PUT":
            body = self._json_body(request)
            return 200, self.api.replace(
                rk, version, namespace, name, body, subresource=sub, dry_run=dry_run
            )
        if method == "PATCH":
            patch = self._patch_body(request)
            return 200, self.api.patch(
                rk,
                version,
                namespace,
                name,
                patch,
                content_type=request.content_type,
                subresource=sub,
                dry_run=dry_run,
            )
        if method == "DELETE" and sub is None:
            options = self._decode(request) if request.body.strip() else None
            return 200, self.api.delete(
                rk,
                version,
                namespace,
                name,
                options,
                propagation=query.get("propagationPolicy"),
                dry_run=dry_run,
            )
        raise errors.method_not_allowed(
            f"the server does not allow this method on the requested resource ({method})"
        )

    def _scale(
        self,
        request: Request,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        name: str,
        *,
        dry_run: bool,
    ) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, scale.get_scale(self.api, rk, namespace, name)
        if request.method == "PUT":
            body = self._json_body(request)
            return 200, scale.replace_scale(
                self.api, rk, version, namespace, name, body, dry_run=dry_run
            )
        if request.method == "PATCH":
            patch = self._patch_body(request)
            return 200, scale.patch_scale(
                self.api,
                rk,
                version,
                namespace,
                name,
                patch,
                content_type=request.content_type,
                dry_run=dry_run,
            )
        raise errors.method_not_allowed(
            f"the server does not allow this method on the requested resource ({request.method})"
        )

    @staticmethod
    def _decode(request: Request) -> Any:
        if not request.body.strip():
            raise errors.bad_request("the request body is empty")
        try:
            return json.loads(request.body)
        except ValueError as exc:
            raise errors.bad_request(f"couldn't decode the request body as JSON: {exc}") from exc

    def _json_body(self, request: Request) -> Any:
        if request.content_type not in ("application/json", ""):
            raise errors.unsupported_media_type(
                request.content_type, accepted=("application/json",)
            )
        return self._decode(request)

    def _patch_body(self, request: Request) -> Any:
        known = (patching.MERGE_PATCH, patching.JSON_PATCH, patching.STRATEGIC_MERGE_PATCH)
        if request.content_type not in known:
            raise errors.unsupported_media_type(request.content_type, accepted=known)
        return self._decode(request)

    # --- discovery --------------------------------------------------------------------------

    @staticmethod
    def _version() -> JSON:
        major, minor, _ = KUBERNETES_VERSION.split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{KUBERNETES_VERSION}",
            "gitCommit": "emulator",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _group(self, name: str, versions: list[str]) -> JSON:
        listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": listed, "preferredVersion": listed[0]}

    def _discovery(self, path: str) -> JSON | None:
        groups = self.registry.group_versions()
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}
                ],
            }
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group(name, versions) for name, versions in groups.items()],
            }
        name = path.split("/")[2]
        if name not in groups:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group(name, groups[name])}

    def _resource_list(self, group: str, version: str) -> JSON:
        kinds = self.registry.in_group_version(group, version)
        if not kinds:
            raise errors.path_not_found()
        verbs = ["create", "delete", "get", "list", "patch", "update"]
        resources: list[JSON] = []
        for rk in kinds:
            resources.append(
                {
                    "name": rk.plural,
                    "singularName": rk.singular,
                    "namespaced": rk.namespaced,
                    "kind": rk.kind,
                    "verbs": verbs,
                    "shortNames": list(rk.short_names),
                }
            )
            if rk.status_subresource:
                resources.append(
                    {
                        "name": f"{rk.plural}/status",
                        "singularName": "",
                        "namespaced": rk.namespaced,
                        "kind": rk.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if rk.scale is not None:
                resources.append(
                    {
                        "name": f"{rk.plural}/scale",
                        "singularName": "",
                        "namespaced": rk.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }
