"""Label and field selectors, parsed from the query-string syntax the API server accepts.

Label selectors support equality (`=`, `==`, `!=`), sets (`in`, `notin`) and existence (`key`,
`!key`), like `k8s.io/apimachinery/pkg/labels`. Field selectors support `=`, `==` and `!=` on
`metadata.name`, `metadata.namespace` and the few extra fields each kind declares in
`FIELD_LABELS`; any other field is a 400, as on a real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from emulators.kube.errors import bad_request

JSON = dict[str, Any]

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    requirements = []
    for part in _split_top_level(text):
        requirements.append(_parse_requirement(part))
    return LabelSelector(tuple(requirements))


def _parse_requirement(part: str) -> Requirement:
    if m := _SET_RE.match(part):
        values = [v.strip() for v in m["values"].split(",")]
        if not values or any(not _VALUE_RE.match(v) for v in values):
            raise bad_request(f"unable to parse requirement: invalid values in {part.strip()!r}")
        return Requirement(m["key"], m["op"], frozenset(values))
    if m := _EQ_RE.match(part):
        op = "!=" if m["op"] == "!=" else "="
        return Requirement(m["key"], op, frozenset([m["value"]]))
    if m := _EXISTS_RE.match(part):
        return Requirement(m["key"], "!exists" if m["neg"] else "exists")
    raise bad_request(f"unable to parse requirement: {part.strip()!r}")


_EXPRESSION_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def from_label_selector_object(selector: JSON | None) -> LabelSelector:
    """A `metav1.LabelSelector` (matchLabels + matchExpressions) as a `LabelSelector`."""
    selector = selector or {}
    requirements = [
        Requirement(k, "=", frozenset([v]))
        for k, v in sorted((selector.get("matchLabels") or {}).items())
    ]
    for expr in selector.get("matchExpressions") or []:
        op = _EXPRESSION_OPS[expr["operator"]]
        requirements.append(Requirement(expr["key"], op, frozenset(expr.get("values") or [])))
    return LabelSelector(tuple(requirements))


def format_label_selector(selector: JSON | None) -> str:
    """The string form of a `metav1.LabelSelector`, as `Scale.status.selector` shows it."""
    parts = []
    for req in from_label_selector_object(selector).requirements:
        if req.op == "=":
            parts.append(f"{req.key}={next(iter(req.values))}")
        elif req.op in ("in", "notin"):
            parts.append(f"{req.key} {req.op} ({','.join(sorted(req.values))})")
        elif req.op == "exists":
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts)


def _dotted(path: str) -> Callable[[JSON], Any]:
    keys = path.split(".")

    def get(obj: JSON) -> Any:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return get


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
# Extra selectable fields per (group, kind), from the apiserver's field label conversions.
FIELD_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec.nodeName", "spec.restartPolicy", "status.phase", "status.podIP"),
    ("", "Event"): (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.fieldPath",
        "reason",
        "type",
    ),
    ("events.k8s.io", "Event"): (
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "reason",
        "type",
    ),
}


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    def matches(self, obj: JSON) -> bool:
        for path, equal, value in self.terms:
            actual = _dotted(path)(obj)
            actual = "" if actual is None else str(actual)
            if (actual == value) != equal:
                return False
        return True


def parse_field_selector(text: str | None, *, group: str, kind: str) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    allowed = set(_COMMON_FIELDS) | set(FIELD_LABELS.get((group, kind), ()))
    terms = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: "{path}"')
        terms.append((path, op != "!=", value))
    return FieldSelector(tuple(terms))
