"""Rules the API server enforces that no JSON schema expresses (`pkg/apis/*/validation`).

These catch the bot's likeliest mistakes: a canary Deployment whose selector does not match its
template labels, a changed (immutable) selector, duplicate or nameless containers, an image-less
container, a malformed name or label, a Service without ports, an Ingress path without
`pathType` (the schema catches that one). Each rule returns causes in the apiserver's shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

from emulators.kube.resources import ResourceKind
from emulators.kube.selectors import from_label_selector_object

JSON = dict[str, Any]
Cause = dict[str, str]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Kinds whose names must be DNS labels rather than subdomains.
_LABEL_NAMED = {("", "Namespace"), ("", "Service")}


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def invalid(field: str, value: Any, detail: str) -> Cause:
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {_show(value)}: {detail}",
        "field": field,
    }


def required(field: str) -> Cause:
    return {"reason": "FieldValueRequired", "message": "Required value", "field": field}


def _name_causes(field: str, name: str, *, label: bool) -> list[Cause]:
    if label and (len(name) > 63 or not _DNS_LABEL.match(name)):
        return [
            invalid(
                field,
                name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                "characters or '-', and must start and end with an alphanumeric character",
            )
        ]
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [
            invalid(
                field,
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    return []


def _qualified_key_causes(field: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))
    if prefix:
        ok = ok and len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix))
    if ok:
        return []
    return [
        invalid(
            field,
            key,
            "name part must consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character",
        )
    ]


def label_causes(field: str, labels: Any) -> list[Cause]:
    causes: list[Cause] = []
    if not isinstance(labels, dict):
        return causes
    for key, value in labels.items():
        causes += _qualified_key_causes(field, key)
        if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.match(value)):
            causes.append(
                invalid(
                    f"{field}",
                    value,
                    "a valid label must be an empty string or "
                    "consist of alphanumeric characters, '-', '_' or '.'",
                )
            )
    return causes


def metadata_causes(rk: ResourceKind, obj: JSON) -> list[Cause]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        return [required("metadata.name")]
    causes = _name_causes("metadata.name", name, label=(rk.group, rk.kind) in _LABEL_NAMED)
    causes += label_causes("metadata.labels", meta.get("labels"))
    for key in (meta.get("annotations") or {}) if isinstance(meta.get("annotations"), dict) else {}:
        causes += _qualified_key_causes("metadata.annotations", key)
    return causes


def pod_spec_causes(field: str, spec: Any) -> list[Cause]:
    if not isinstance(spec, dict):
        return []
    causes: list[Cause] = []
    containers = spec.get("containers")
    if not containers:
        return [required(f"{field}.containers")]
    seen: set[str] = set()
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            continue
        path = f"{field}.containers[{i}]"
        name = container.get("name")
        if isinstance(name, str) and name:
            causes += _name_causes(f"{path}.name", name, label=True)
            if name in seen:
                causes.append(
                    {
                        "reason": "FieldValueDuplicate",
                        "message": f"Duplicate value: {_show(name)}",
                        "field": f"{path}.name",
                    }
                )
            seen.add(name)
        if not container.get("image"):
            causes.append(required(f"{path}.image"))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort") if isinstance(port, dict) else None
            if isinstance(number, int) and not 0 < number < 65536:
                causes.append(
                    invalid(
                        f"{path}.ports[{j}].containerPort",
                        number,
                        "must be between 1 and 65535, inclusive",
                    )
                )
    return causes


def _workload_causes(obj: JSON, old: JSON | None, *, what: str) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    causes: list[Cause] = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    selector = spec.get("selector")
    parsed = from_label_selector_object(selector if isinstance(selector, dict) else None)
    template: JSON = spec["template"] if isinstance(spec.get("template"), dict) else {}
    template_meta = template.get("metadata")
    labels = (template_meta.get("labels") if isinstance(template_meta, dict) else None) or {}
    if not isinstance(labels, dict):
        labels = {}
    if parsed.empty:
        causes.append(invalid("spec.selector", selector, f"empty selector is invalid for {what}"))
    elif not parsed.matches(labels):
        causes.append(
            invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    causes += label_causes("spec.template.metadata.labels", labels)
    pod_spec = template.get("spec")
    if isinstance(pod_spec, dict) and pod_spec.get("restartPolicy", "Always") != "Always":
        causes.append(
            {
                "reason": "FieldValueNotSupported",
                "field": "spec.template.spec.restartPolicy",
                "message": f"Unsupported value: {_show(pod_spec['restartPolicy'])}: "
                'supported values: "Always"',
            }
        )
    causes += pod_spec_causes("spec.template.spec", pod_spec)
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        causes.append(invalid("spec.selector", selector, "field is immutable"))
    return causes


def _service_causes(obj: JSON, old: JSON | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    causes: list[Cause] = []
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(
            {
                "reason": "FieldValueNotSupported",
                "field": "spec.type",
                "message": f"Unsupported value: {_show(kind)}: supported values: "
                '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            }
        )
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        number = port.get("port")
        if isinstance(number, int) and not 0 < number < 65536:
            causes.append(
                invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive")
            )
        name = port.get("name")
        if len(ports) > 1 and not name:
            causes.append(required(f"spec.ports[{i}].name"))
        if name:
            if name in names:
                causes.append(
                    {
                        "reason": "FieldValueDuplicate",
                        "field": f"spec.ports[{i}].name",
                        "message": f"Duplicate value: {_show(name)}",
                    }
                )
            names.add(name)
    old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
    if old is not None and old_ip and spec.get("clusterIP") not in (None, old_ip):
        causes.append(invalid("spec.clusterIP", spec.get("clusterIP"), "field is immutable"))
    return causes


def semantic_causes(rk: ResourceKind, obj: JSON, old: JSON | None) -> list[Cause]:
    """Every rule for this kind; `old` is the stored object on an update, else None."""
    causes = metadata_causes(rk, obj)
    key = (rk.group, rk.kind)
    if key == ("apps", "Deployment"):
        causes += _workload_causes(obj, old, what="deployment")
    elif key == ("apps", "ReplicaSet"):
        causes += _workload_causes(obj, old, what="replicaset")
    elif key == ("", "Pod"):
        causes += pod_spec_causes("spec", obj.get("spec"))
    elif key == ("", "Service"):
        causes += _service_causes(obj, old)
    return causes
