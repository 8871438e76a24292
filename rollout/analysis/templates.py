"""The placeholders of custom PromQL in the config (DESIGN.md "Query placeholders").

A service's `metrics:` entries are PromQL with `{{ namespace }}`, `{{ service }}`,
`{{ deployment }}`, `{{ track }}` and `{{ window }}`. Rendering is plain substitution, not a
template engine: PromQL is full of braces, and anything cleverer would mangle it. An unknown
placeholder is an error (a typo would otherwise reach Prometheus as literal text);
`check_template` lets config validation report it at start-up.
"""

from __future__ import annotations

import re
from datetime import timedelta

PLACEHOLDERS = frozenset({"namespace", "service", "deployment", "track", "window"})
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A custom query names a placeholder that does not exist."""


def check_template(template: str) -> None:
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - PLACEHOLDERS)
    if unknown:
        raise TemplateError(
            f"unknown placeholder {', '.join('{{ ' + n + ' }}' for n in unknown)}; "
            f"use {', '.join('{{ ' + n + ' }}' for n in sorted(PLACEHOLDERS))}"
        )


def render(
    template: str,
    *,
    namespace: str,
    service: str,
    deployment: str,
    track: str,
    window: timedelta,
) -> str:
    check_template(template)
    values = {
        "namespace": namespace,
        "service": service,
        "deployment": deployment,
        "track": track,
        "window": prometheus_duration(window),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def prometheus_duration(value: timedelta) -> str:
    """A range for PromQL: the largest single unit that is exact (`1m`, `90s`, `2h`, `500ms`)."""
    millis = round(value.total_seconds() * 1000)
    if millis <= 0:
        raise ValueError(f"a query window must be positive, not {value}")
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"
