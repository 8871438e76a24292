"""The kinds the emulator serves: built-in ones, and every CRD found in a directory.

One `ResourceKind` describes a resource once for all its served versions, the way the API
server's REST mapping does: the URL segment (plural), scope, subresources, and, for custom
resources, the openAPIV3Schema of each version. Objects of a CRD are stored once and served in
any of its versions (the CRD "None" conversion: only `apiVersion` changes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

JSON = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ScalePaths:
    """Where a kind keeps what its `/scale` subresource shows (dotted paths, as in a CRD)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    # None: the selector is rendered from `spec.selector` (Deployment, ReplicaSet).
    label_selector: str | None = None


@dataclass(frozen=True, kw_only=True)
class ResourceKind:
    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    singular: str
    namespaced: bool = True
    status_subresource: bool = False
    scale: ScalePaths | None = None
    short_names: tuple[str, ...] = ()
    # DELETE answers with the deleted object (pods, services) instead of a Success Status.
    delete_returns_object: bool = False
    # version -> openAPIV3Schema; empty for built-in kinds (validated by kubernetes-validate).
    crd_schemas: Mapping[str, JSON] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return not self.crd_schemas

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version

    def resource_name(self) -> str:
        """`deployments.apps`, as the API server names a resource in its messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_WORKLOAD_SCALE = ScalePaths()

BUILTIN_KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        group="",
        versions=("v1",),
        kind="Namespace",
        plural="namespaces",
        singular="namespace",
        namespaced=False,
        status_subresource=True,
        short_names=("ns",),
    ),
    ResourceKind(
        group="",
        versions=("v1",),
        kind="Pod",
        plural="pods",
        singular="pod",
        status_subresource=True,
        delete_returns_object=True,
        short_names=("po",),
    ),
    ResourceKind(
        group="",
        versions=("v1",),
        kind="Service",
        plural="services",
        singular="service",
        status_subresource=True,
        delete_returns_object=True,
        short_names=("svc",),
    ),
    ResourceKind(
        group="",
        versions=("v1",),
        kind="ConfigMap",
        plural="configmaps",
        singular="configmap",
        short_names=("cm",),
    ),
    ResourceKind(group="", versions=("v1",), kind="Event", plural="events", singular="event"),
    ResourceKind(
        group="apps",
        versions=("v1",),
        kind="Deployment",
        plural="deployments",
        singular="deployment",
        status_subresource=True,
        scale=_WORKLOAD_SCALE,
        short_names=("deploy",),
    ),
    ResourceKind(
        group="apps",
        versions=("v1",),
        kind="ReplicaSet",
        plural="replicasets",
        singular="replicaset",
        status_subresource=True,
        scale=_WORKLOAD_SCALE,
        short_names=("rs",),
    ),
    ResourceKind(
        group="batch",
        versions=("v1",),
        kind="Job",
        plural="jobs",
        singular="job",
        status_subresource=True,
    ),
    ResourceKind(
        group="networking.k8s.io",
        versions=("v1",),
        kind="Ingress",
        plural="ingresses",
        singular="ingress",
        status_subresource=True,
        short_names=("ing",),
    ),
    # Leader election (canary-bot's HA installs): an update carrying an old resourceVersion
    # is a 409 Conflict, which is what makes two candidates' takeovers exclusive.
    ResourceKind(
        group="coordination.k8s.io",
        versions=("v1",),
        kind="Lease",
        plural="leases",
        singular="lease",
    ),
    ResourceKind(
        group="events.k8s.io",
        versions=("v1",),
        kind="Event",
        plural="events",
        singular="event",
        short_names=("ev",),
    ),
)


def kind_from_crd(crd: JSON) -> ResourceKind:
    """A `ResourceKind` for one apiextensions.k8s.io/v1 CustomResourceDefinition."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    # The storage version first: objects are kept in it, as etcd would keep them.
    served.sort(key=lambda v: not v.get("storage", False))
    status = any("status" in (v.get("subresources") or {}) for v in served)
    scale = None
    for version in served:
        declared = (version.get("subresources") or {}).get("scale")
        if declared:
            scale = ScalePaths(
                spec_replicas=declared["specReplicasPath"],
                status_replicas=declared["statusReplicasPath"],
                label_selector=declared.get("labelSelectorPath"),
            )
    return ResourceKind(
        group=spec["group"],
        versions=tuple(v["name"] for v in served),
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular", names["kind"].lower()),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        status_subresource=status,
        scale=scale,
        short_names=tuple(names.get("shortNames", ())),
        crd_schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in served},
    )


# The CustomResourceDefinitions this package carries (Istio, Gateway API, Argo Rollouts), copied
# from their upstream projects; crds/README.md names each one's source, version and licence.
BUNDLED_CRDS = Path(__file__).resolve().parent / "crds"


def load_crds(directory: Path) -> list[ResourceKind]:
    kinds = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        with path.open() as f:
            # libyaml when present: the Argo Rollouts CRD alone takes seconds in pure Python.
            for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    kinds.append(kind_from_crd(doc))
    return kinds


class Registry:
    """Finds a kind by URL (group, version, plural) or by (apiVersion, kind)."""

    def __init__(self, kinds: Iterable[ResourceKind]) -> None:
        self.kinds = list(kinds)
        self._by_path: dict[tuple[str, str, str], ResourceKind] = {}
        self._by_kind: dict[tuple[str, str, str], ResourceKind] = {}
        for rk in self.kinds:
            for version in rk.versions:
                self._by_path[(rk.group, version, rk.plural)] = rk
                self._by_kind[(rk.group, version, rk.kind)] = rk

    def by_path(self, group: str, version: str, plural: str) -> ResourceKind | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> tuple[ResourceKind, str] | None:
        group, _, version = api_version.rpartition("/")
        rk = self._by_kind.get((group, version, kind))
        return (rk, version) if rk else None

    def group_versions(self) -> dict[str, list[str]]:
        """Named groups and their versions, preferred (storage) version first."""
        groups: dict[str, list[str]] = {}
        for rk in self.kinds:
            if rk.group:
                versions = groups.setdefault(rk.group, [])
                versions.extend(v for v in rk.versions if v not in versions)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceKind]:
        return [rk for rk in self.kinds if rk.group == group and version in rk.versions]
