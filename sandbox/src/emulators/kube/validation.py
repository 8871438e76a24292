"""Normalizes and validates every object before it is stored, as the API server does.

Order, as on a real server: decode (nulls dropped), apply defaults, then validate against the
kind's schema (see `schemas`) and the hand-written rules (see `semantics`). Any failure becomes
one 422 Invalid `Status` listing a cause per field, and nothing is stored. Normalization always
runs; `enabled=False` only skips the (slower) validation, for benchmarks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from emulators.kube import errors, schemas
from emulators.kube.defaults import apply_defaults
from emulators.kube.resources import ResourceKind
from emulators.kube.semantics import Cause, semantic_causes

JSON = dict[str, Any]
_MAX_CAUSES = 25


def field_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _causes(error: Any) -> list[Cause]:
    """One jsonschema error as apiserver-style causes."""
    where = field_path(error.absolute_path)
    kind = error.validator
    if kind == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = [p for p in error.validator_value if p not in instance]
        return [
            {"reason": "FieldValueRequired", "message": "Required value", "field": _join(where, p)}
            for p in missing
        ]
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema.get("properties") or {}).keys())
        extra = sorted(k for k in error.instance if k not in known)
        return [
            {
                "reason": "FieldValueInvalid",
                "message": "field not declared in schema",
                "field": _join(where, k),
            }
            for k in extra
        ]
    if kind == "type":
        wanted = error.validator_value
        wanted = [t for t in wanted if t != "null"] if isinstance(wanted, list) else [wanted]
        return [
            {
                "reason": "FieldValueTypeInvalid",
                "message": f"Invalid value: {_short(error.instance)}: must be of type "
                + " or ".join(wanted),
                "field": where,
            }
        ]
    if kind == "enum":
        allowed = ", ".join(json.dumps(v) for v in error.validator_value)
        value = _short(error.instance)
        return [
            {
                "reason": "FieldValueNotSupported",
                "message": f"Unsupported value: {value}: supported values: {allowed}",
                "field": where,
            }
        ]
    return [
        {
            "reason": "FieldValueInvalid",
            "message": f"Invalid value: {_short(error.instance)}: {error.message}",
            "field": where,
        }
    ]


class Validator:
    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._crd: dict[tuple[str, str, str], schemas.CrdSchema] = {}

    def _crd_schema(self, rk: ResourceKind, version: str) -> schemas.CrdSchema:
        key = (rk.group, version, rk.kind)
        if key not in self._crd:
            self._crd[key] = schemas.CrdSchema(rk.crd_schemas[version])
        return self._crd[key]

    def normalize(self, rk: ResourceKind, version: str, obj: JSON) -> JSON:
        """Drops nulls and applies defaults; returns the (possibly new) object."""
        if rk.builtin:
            obj = schemas.prune_nulls(obj)
            apply_defaults(rk.group, rk.kind, obj)
            return obj
        if isinstance(obj.get("metadata"), dict):
            obj["metadata"] = schemas.prune_nulls(obj["metadata"])
        return self._crd_schema(rk, version).normalize(obj)

    def check(self, rk: ResourceKind, version: str, obj: JSON, *, old: JSON | None) -> None:
        """Raises a 422 `ApiError` listing every problem with `obj` (`old`: stored version)."""
        if not self.enabled:
            return
        if rk.builtin:
            found = schemas.builtin_validator(rk.group, version, rk.kind).iter_errors(obj)
        else:
            found = self._crd_schema(rk, version).iter_errors(obj)
        causes: list[Cause] = []
        for error in sorted(found, key=lambda e: list(map(str, e.absolute_path))):
            causes += _causes(error)
        causes += semantic_causes(rk, obj, old)
        _raise(causes, kind=rk.kind, group=rk.group, obj=obj)

    def check_builtin(self, group: str, version: str, kind: str, obj: JSON) -> None:
        """Schema validation only, for objects that are not stored (a `Scale`)."""
        if not self.enabled:
            return
        causes: list[Cause] = []
        for error in schemas.builtin_validator(group, version, kind).iter_errors(obj):
            causes += _causes(error)
        _raise(causes, kind=kind, group=group, obj=obj)


def _raise(causes: list[Cause], *, kind: str, group: str, obj: JSON) -> None:
    if causes:
        unique = list({json.dumps(c, sort_keys=True): c for c in causes}.values())
        meta = obj.get("metadata")
        name = (meta.get("name") if isinstance(meta, dict) else None) or ""
        raise errors.invalid(kind=kind, group=group, name=name, causes=unique[:_MAX_CAUSES])
