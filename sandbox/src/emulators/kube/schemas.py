"""Where each kind's JSON schema comes from, and how a CRD schema becomes a JSON schema.

Built-in kinds use the Kubernetes v1.35 schemas shipped by the `kubernetes-validate` package (the
version matching the `kubernetes` 35.x client), in their "strict" flavour: unknown fields are
rejected. A real server would silently drop them, which hides a typo in the bot; the emulator
would rather fail the test. Validators are built once per kind and cached, because
`kubernetes_validate.validate()` re-reads 1.5 MB of definitions on every call.

Custom resources use their CRD's openAPIV3Schema, translated for `jsonschema`: `nullable`,
`x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields` are honoured, other
`x-kubernetes-*` keys (CEL validations, list types) are ignored, and objects that list their
properties reject unknown ones (the strict choice again). `metadata` is not validated, since a
CRD schema does not describe it. Before validation, custom objects get the API server's
structural treatment: nulls of non-nullable fields are pruned and schema defaults applied.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

JSON = dict[str, Any]

KUBERNETES_VERSION = "1.35.0"
_SCHEMA_DIR = f"v{KUBERNETES_VERSION}-local-strict"


def _schema_file(name: str) -> Any:
    ref = resources.files("kubernetes_validate") / "kubernetes-json-schema" / _SCHEMA_DIR / name
    return json.loads(ref.read_text())


@cache
def builtin_definitions() -> dict[str, JSON]:
    defs: dict[str, JSON] = _schema_file("_definitions.json")["$defs"]
    return defs


@cache
def _definitions_resource() -> Resource[Any]:
    return Resource.from_contents(_schema_file("_definitions.json"))


def builtin_schema_name(group: str, version: str, kind: str) -> str:
    """`deployment-apps-v1.json`: kubernetes-validate drops the group's domain."""
    prefix = group.split(".")[0]
    return f"{kind.lower()}-{prefix}-{version}.json" if group else f"{kind.lower()}-{version}.json"


@cache
def builtin_schema(group: str, version: str, kind: str) -> JSON:
    schema: JSON = _schema_file(builtin_schema_name(group, version, kind))
    return schema


@cache
def builtin_validator(group: str, version: str, kind: str) -> Any:
    schema = builtin_schema(group, version, kind)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = _definitions_resource() @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def resolve(node: JSON) -> JSON:
    """Follows `$ref` (and single-element `allOf` wrappers) into the built-in definitions."""
    while True:
        if "$ref" in node:
            node = builtin_definitions()[node["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in node and len(node["allOf"]) == 1 and "properties" not in node:
            node = node["allOf"][0]
        else:
            return node


def prune_nulls(value: Any) -> Any:
    """Drops null map values: for a built-in kind, a JSON null decodes to "unset"."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


# --- custom resources -------------------------------------------------------------------------

_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def _translate(node: JSON, *, in_junctor: bool) -> JSON:
    out: JSON = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {k: _translate(v, in_junctor=in_junctor) for k, v in value.items()}
        elif key in ("items", "not") and isinstance(value, dict):
            out[key] = _translate(value, in_junctor=in_junctor or key == "not")
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = _translate(value, in_junctor=in_junctor)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_translate(v, in_junctor=True) for v in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" in out:
            out.setdefault("allOf", []).append({"anyOf": _INT_OR_STRING})
        else:
            out["anyOf"] = _INT_OR_STRING
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        for junctor in ("anyOf", "oneOf"):
            if junctor in out:
                out[junctor] = [*out[junctor], {"type": "null"}]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if (
        not in_junctor
        and not preserve
        and "properties" in out
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def translate_crd_schema(schema: JSON) -> JSON:
    """A CRD openAPIV3Schema as a draft-4 JSON schema for the object minus its metadata."""
    out = _translate(schema, in_junctor=False)
    properties = out.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    out.setdefault("type", "object")
    if not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


class CrdSchema:
    """One CRD version's schema: structural defaulting and pruning, then validation."""

    def __init__(self, schema: JSON) -> None:
        self.raw = schema
        self._validator = jsonschema.Draft4Validator(translate_crd_schema(schema))

    def normalize(self, obj: JSON) -> JSON:
        """Prunes nulls of non-nullable fields, then applies defaults, in place."""
        _prune_and_default(obj, self.raw, top=True)
        return obj

    def iter_errors(self, obj: JSON) -> Any:
        return self._validator.iter_errors(obj)


def _prune_and_default(value: Any, node: JSON, *, top: bool = False) -> None:
    if isinstance(value, dict):
        props: dict[str, JSON] = node.get("properties") or {}
        for key in list(value):
            if top and key in ("apiVersion", "kind", "metadata"):
                continue
            child = props.get(key)
            if child is None and isinstance(node.get("additionalProperties"), dict):
                child = node["additionalProperties"]
            if value[key] is None and child is not None and not child.get("nullable"):
                del value[key]
        for key, child in props.items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
        for key, item in value.items():
            child = props.get(key)
            if child is None and isinstance(node.get("additionalProperties"), dict):
                child = node["additionalProperties"]
            if child is not None and not (top and key == "metadata"):
                _prune_and_default(item, child)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _prune_and_default(item, node["items"])
