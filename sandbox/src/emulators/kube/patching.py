"""The three PATCH formats the official client sends, applied to a stored object.

- `application/merge-patch+json`: RFC 7386, complete.
- `application/json-patch+json`: RFC 6902 through the `jsonpatch` package (add, remove,
  replace, move, copy, test). A malformed patch is a 400; one that does not apply is a 422.
- `application/strategic-merge-patch+json` (built-in kinds only; a custom resource answers
  415, as on a real server). The subset implemented, guided by the `x-kubernetes-patch-strategy`
  and `x-kubernetes-patch-merge-key` annotations of the kind's real OpenAPI schema:
  maps merge recursively and `null` deletes a key; lists whose strategy is `merge` merge by their
  merge key (`containers`/`env`/`volumes` by `name`, container `ports` by `containerPort`,
  `volumeMounts` by `mountPath`, conditions by `type`...), keeping the original order and
  appending new items; merge lists of scalars (`finalizers`) become a union; every other list is
  replaced whole. Directives: `$patch: delete` on a list item (by merge key) or on a map,
  `$patch: replace` on a map or as a list item (replace the whole list),
  `$deleteFromPrimitiveList/<field>`, `$retainKeys`; `$setElementOrder/<field>` is accepted and
  ignored (new items are appended).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from emulators.kube import errors
from emulators.kube.schemas import resolve

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, `null` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: JSON, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise errors.bad_request("a JSON patch must be a list of operations")
    try:
        patch = jsonpatch.JsonPatch(operations)
        return patch.apply(target)
    except jsonpatch.InvalidJsonPatch as exc:
        raise errors.bad_request(f"invalid JSON patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise errors.ApiError(422, "Invalid", f"the JSON patch does not apply: {exc}") from exc


_DELETE = object()


def strategic_merge_patch(original: JSON, patch: Any, schema: JSON) -> JSON:
    """Applies a strategic merge patch to a built-in object; `schema` is the kind's schema."""
    if not isinstance(patch, dict):
        raise errors.bad_request("a strategic merge patch must be a JSON object")
    merged = _merge_map(original, patch, schema)
    return {} if merged is _DELETE else merged


def _child_schema(node: JSON, key: str) -> JSON:
    node = resolve(node)
    props = node.get("properties") or {}
    if key in props:
        return dict(props[key])
    extra = node.get("additionalProperties")
    return dict(extra) if isinstance(extra, dict) else {}


def _strip(value: Any) -> Any:
    """A patch value with its directives removed, for places where there is nothing to merge."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return value


def _merge_map(original: Any, patch: JSON, node: JSON) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip(patch)
    if directive not in (None, "merge"):
        raise errors.bad_request(f"unknown patch directive {directive!r}")
    result = dict(original) if isinstance(original, dict) else {}
    deletions: list[tuple[str, list[Any]]] = []
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            deletions.append((key.split("/", 1)[1], value if isinstance(value, list) else []))
            continue
        if value is None:
            result.pop(key, None)
            continue
        child = _child_schema(node, key)
        if isinstance(value, dict):
            merged = _merge_map(result.get(key), value, child)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, child)
        else:
            result[key] = value
    for key, values in deletions:
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: Any, patch: list[Any], node: JSON) -> list[Any]:
    # The patch annotations sit on the property node itself, not on what a $ref points to.
    strategy = str(node.get("x-kubernetes-patch-strategy", ""))
    merge_key = node.get("x-kubernetes-patch-merge-key")
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if "merge" not in strategy.split(",") or not isinstance(original, list):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if merge_key is None:
        return list(original) + [v for v in patch if v not in original]
    items_schema = dict(resolve(node).get("items") or {})
    result = list(original)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise errors.bad_request(
                f"map: {item!r} does not contain declared merge key: {merge_key}"
            )
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        merged = _merge_map(result[index] if index is not None else {}, item, items_schema)
        if merged is _DELETE:
            if index is not None:
                del result[index]
        elif index is not None:
            result[index] = merged
        else:
            result.append(merged)
    return result
