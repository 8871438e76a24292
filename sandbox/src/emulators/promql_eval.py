"""A small PromQL evaluator over samples kept in memory: the demo's stand-in for Prometheus.

`emulators.direct_metrics` keeps the traffic exporter's samples; this module answers a parsed
query over them. It covers what the bot's built-in queries and plain custom ones use: selectors
with every matcher, `rate`/`irate`/`increase`, `sum`/`avg`/`min`/`max`/`count` by or without,
arithmetic and comparisons (`bool` too) with one-to-one matching (`on`/`ignoring`),
`or`/`and`/`unless`, `histogram_quantile`, `label_replace`, `scalar` and `vector`. Anything
else raises `QueryFailed`, which the bot treats as no data for that metric, exactly as when
Prometheus rejects a query. A rate is the slope between the first and last samples of its range:
Prometheus also extrapolates to the range's edges, which changes a rate by a few percent and
cancels out of every ratio the rules look at.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

import promql_parser as pq

from rollout.analysis import QueryFailed, Series

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, `__name__` included
Vector = dict[Labels, float]
Value = float | Vector
Points = deque[tuple[float, float]]  # (time, value), oldest first

LOOKBACK_S = 300.0  # how far back an instant selector finds a series' latest sample
NAME = "__name__"


def evaluate(expr: pq.Expr, series: Mapping[Labels, Points], *, now: float) -> list[Series]:
    """The query's result at `now`, in the same time base as the samples' times."""
    result = _Evaluator(series, now=now).eval(expr)
    if isinstance(result, float):
        return [Series({}, result)]
    return [Series(dict(_drop_name(key)), value) for key, value in result.items()]


def series_key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


class _Evaluator:
    def __init__(self, series: Mapping[Labels, Points], *, now: float) -> None:
        self._series = series
        self._now = now

    def eval(self, expr: pq.Expr) -> Value:
        if isinstance(expr, pq.NumberLiteral):
            return float(expr.val)
        if isinstance(expr, pq.ParenExpr):
            return self.eval(expr.expr)
        if isinstance(expr, pq.UnaryExpr):
            return _arith("*", -1.0, self.eval(expr.expr))
        if isinstance(expr, pq.VectorSelector):
            return self._instant(expr)
        if isinstance(expr, pq.AggregateExpr):
            return _aggregate(str(expr.op), expr.modifier, self.vector(expr.expr))
        if isinstance(expr, pq.BinaryExpr):
            return _binary(str(expr.op), self.eval(expr.lhs), self.eval(expr.rhs), expr.modifier)
        if isinstance(expr, pq.Call):
            return self._call(expr.func.name, expr.args)
        raise QueryFailed(f"not supported without Prometheus: {type(expr).__name__}")

    def vector(self, expr: pq.Expr) -> Vector:
        value = self.eval(expr)
        if isinstance(value, float):
            raise QueryFailed("expected an instant vector, got a scalar")
        return value

    def _selected(self, selector: pq.VectorSelector) -> Iterable[tuple[Labels, Points]]:
        if selector.offset is not None or selector.at is not None:
            raise QueryFailed("offset and @ are not supported without Prometheus")
        for key, points in self._series.items():
            if _selects(selector, dict(key)):
                yield key, points

    def _instant(self, selector: pq.VectorSelector) -> Vector:
        out: Vector = {}
        for key, points in self._selected(selector):
            if points and points[-1][0] >= self._now - LOOKBACK_S:
                out[key] = points[-1][1]
        return out

    def _range(self, expr: object) -> dict[Labels, list[tuple[float, float]]]:
        if not isinstance(expr, pq.MatrixSelector):
            raise QueryFailed("expected a range vector such as metric[1m]")
        start = self._now - expr.range.total_seconds()
        ranged = {
            key: [p for p in points if start < p[0] <= self._now]
            for key, points in self._selected(expr.vector_selector)
        }
        return {key: points for key, points in ranged.items() if len(points) >= 2}

    def _call(self, name: str, args: list[pq.Expr]) -> Value:
        if name in ("rate", "irate", "increase"):
            out: Vector = {}
            for key, points in self._range(args[0]).items():
                used = points[-2:] if name == "irate" else points
                grown = _increase(used)
                seconds = used[-1][0] - used[0][0]
                out[_drop_name(key)] = grown if name == "increase" else grown / seconds
            return out
        if name == "histogram_quantile":
            return _quantile(_scalar(self.eval(args[0])), self.vector(args[1]))
        if name == "label_replace":
            dst, replacement, src, regex = (_string(arg) for arg in args[1:])
            return _label_replace(self.vector(args[0]), dst, replacement, src, regex)
        if name == "scalar":
            vector = self.vector(args[0])
            return next(iter(vector.values())) if len(vector) == 1 else math.nan
        if name == "vector":
            return {(): _scalar(self.eval(args[0]))}
        raise QueryFailed(f"function {name}() is not supported without Prometheus")


def _drop_name(key: Labels) -> Labels:
    return tuple(pair for pair in key if pair[0] != NAME)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise QueryFailed(f"bad regular expression {pattern!r}: {error}") from error


def _matcher_holds(matcher: pq.Matcher, labels: Mapping[str, str]) -> bool:
    value = labels.get(matcher.name, "")
    if matcher.op == pq.MatchOp.Equal:
        return value == matcher.value
    if matcher.op == pq.MatchOp.NotEqual:
        return value != matcher.value
    matched = _regex(matcher.value).fullmatch(value) is not None
    return matched if matcher.op == pq.MatchOp.Re else not matched


def _selects(selector: pq.VectorSelector, labels: Mapping[str, str]) -> bool:
    if selector.name and labels.get(NAME) != selector.name:
        return False
    # `{a="x" or b="y"}` parses into several groups; a series needs to satisfy one of them.
    groups = [g for g in (selector.matchers.matchers, *selector.matchers.or_matchers) if g]
    return not groups or any(all(_matcher_holds(m, labels) for m in g) for g in groups)


def _increase(points: list[tuple[float, float]]) -> float:
    """How much a counter grew; a drop means the counter restarted from zero."""
    total = 0.0
    for (_, before), (_, after) in itertools.pairwise(points):
        total += after - before if after >= before else after
    return total


def _scalar(value: Value) -> float:
    if not isinstance(value, float):
        raise QueryFailed("expected a number")
    return value


def _string(expr: object) -> str:
    if not isinstance(expr, pq.StringLiteral):
        raise QueryFailed("expected a string literal")
    return expr.val


def _aggregate(op: str, modifier: pq.AggModifier | None, vector: Vector) -> Vector:
    groups: dict[Labels, list[float]] = defaultdict(list)
    for key, value in vector.items():
        labels = dict(_drop_name(key))
        if modifier is None:
            kept: dict[str, str] = {}
        elif modifier.type == pq.AggModifierType.By:
            kept = {k: v for k, v in labels.items() if k in modifier.labels}
        else:
            kept = {k: v for k, v in labels.items() if k not in modifier.labels}
        groups[series_key(kept)].append(value)
    reducers: dict[str, Callable[[list[float]], float]] = {
        "sum": math.fsum,
        "avg": lambda values: math.fsum(values) / len(values),
        "min": min,
        "max": max,
        "count": lambda values: float(len(values)),
    }
    if op not in reducers:
        raise QueryFailed(f"aggregation {op} is not supported without Prometheus")
    return {key: reducers[op](values) for key, values in groups.items()}


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else (math.nan if a == 0 or math.isnan(a) else math.inf * a),
    "^": lambda a, b: a**b,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def _arith(op: str, lhs: Value, rhs: Value) -> Value:
    return _binary(op, lhs, rhs, None)


def _binary(op: str, lhs: Value, rhs: Value, modifier: pq.BinModifier | None) -> Value:
    if op in ("and", "or", "unless"):
        if isinstance(lhs, float) or isinstance(rhs, float):
            raise QueryFailed(f"`{op}` needs vectors on both sides")
        return _set_op(op, lhs, rhs, modifier)
    keep_bool = modifier is not None and modifier.return_bool

    def one(a: float, b: float) -> float | None:
        if op in _ARITH:
            return _ARITH[op](a, b)
        if op in _COMPARE:
            holds = _COMPARE[op](a, b)
            return float(holds) if keep_bool else (a if holds else None)
        raise QueryFailed(f"operator {op} is not supported without Prometheus")

    if isinstance(lhs, float) and isinstance(rhs, float):
        result = one(lhs, rhs)
        return math.nan if result is None else result
    renamed = op in _ARITH or keep_bool  # arithmetic drops the metric name, filters keep it
    out: Vector = {}
    if isinstance(rhs, float) or isinstance(lhs, float):
        vector, number = (lhs, rhs) if isinstance(rhs, float) else (rhs, lhs)
        assert isinstance(vector, dict) and isinstance(number, float)
        for key, value in vector.items():
            a, b = (value, number) if vector is lhs else (number, value)
            result = one(a, b)
            if result is not None:
                out[_drop_name(key) if renamed else key] = result
        return out
    if modifier is not None and modifier.card != pq.VectorMatchCardinality.OneToOne:
        raise QueryFailed("group_left/group_right are not supported without Prometheus")
    right: dict[Labels, float] = {}
    for key, value in rhs.items():
        signature = _signature(key, modifier)
        if signature in right:
            raise QueryFailed("many-to-many matching: several series on the right side match")
        right[signature] = value
    for key, value in lhs.items():
        signature = _signature(key, modifier)
        if signature in right:
            result = one(value, right[signature])
            if result is not None:
                out[_signature(key, modifier) if renamed else key] = result
    return out


def _signature(key: Labels, modifier: pq.BinModifier | None) -> Labels:
    """The labels two sides are matched on; also what a one-to-one arithmetic result keeps."""
    matching = modifier.matching if modifier is not None else None
    labels = _drop_name(key)
    if matching is None:
        return labels
    if matching.type == pq.LabelModifierType.Include:
        return tuple(pair for pair in labels if pair[0] in matching.labels)
    return tuple(pair for pair in labels if pair[0] not in matching.labels)


def _set_op(op: str, lhs: Vector, rhs: Vector, modifier: pq.BinModifier | None) -> Vector:
    right = {_signature(key, modifier) for key in rhs}
    if op == "and":
        return {k: v for k, v in lhs.items() if _signature(k, modifier) in right}
    if op == "unless":
        return {k: v for k, v in lhs.items() if _signature(k, modifier) not in right}
    left = {_signature(key, modifier) for key in lhs}
    return {**lhs, **{k: v for k, v in rhs.items() if _signature(k, modifier) not in left}}


def _quantile(phi: float, buckets: Vector) -> Vector:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket of the rank."""
    groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for key, count in buckets.items():
        labels = dict(_drop_name(key))
        le = labels.pop("le", None)
        if le is not None:
            groups[series_key(labels)].append((float(le), count))
    out: Vector = {}
    for key, pairs in groups.items():
        pairs.sort()
        if not pairs or pairs[-1][0] != math.inf or pairs[-1][1] <= 0 or not 0 <= phi <= 1:
            out[key] = math.nan
            continue
        rank = phi * pairs[-1][1]
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in pairs:
            if count >= rank:
                if bound == math.inf:
                    out[key] = lower_bound
                elif count == lower_count:
                    out[key] = bound
                else:
                    share = (rank - lower_count) / (count - lower_count)
                    out[key] = lower_bound + (bound - lower_bound) * share
                break
            lower_bound, lower_count = bound, count
    return out


def _label_replace(vector: Vector, dst: str, replacement: str, src: str, regex: str) -> Vector:
    pattern = _regex(regex)
    out: Vector = {}
    for key, value in vector.items():
        labels = dict(key)
        found = pattern.fullmatch(labels.get(src, ""))
        if found is not None:
            new = _expand(found, replacement)
            if new:
                labels[dst] = new
            else:
                labels.pop(dst, None)
        out[series_key(labels)] = value
    return out


def _expand(found: re.Match[str], replacement: str) -> str:
    """`$1`, `${1}` or `$name` in a label_replace replacement; a missing group is empty."""

    def group(reference: re.Match[str]) -> str:
        name = reference.group(1)
        try:
            return found.group(int(name) if name.isdigit() else name) or ""
        except IndexError:
            return ""

    return re.sub(r"\$\{?(\w+)\}?", group, replacement)
