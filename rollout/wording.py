"""How the domain words numbers for people: rates as percentages, latencies in ms, windows.

Used for rollback reasons and alerts, which the store keeps and Slack shows, so the same breach
reads the same everywhere.
"""

from __future__ import annotations

import re

from rollout.analysis import RuleResult
from rollout.config import Rule
from rollout.durations import format_duration

_RATE_METRICS = frozenset({"error_rate", "success_rate", "cpu_saturation", "memory_saturation"})
_SYMBOLS = {
    "above": ">",
    "below": "<",
    "above_stable_by": "> stable +",
    "above_stable_ratio": "> stable x",
}


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    if metric in _RATE_METRICS:
        return f"{value * 100:.2f}%"
    if metric.endswith("_ms"):
        return f"{value:.0f} ms"
    if metric == "request_rate":
        return f"{value:.2f} req/s"
    return f"{value:.4g}"


def format_threshold(rule: Rule) -> str:
    key = rule.threshold_key
    if key == "above_stable_ratio":
        return f"{_SYMBOLS[key]} {rule.threshold:g}"
    return f"{_SYMBOLS[key]} {format_value(rule.metric, rule.threshold)}"


def describe_breach(result: RuleResult) -> str:
    """`error_rate 4.20% (threshold > 1.00%, for 2m; stable 0.10%)`."""
    rule = result.rule
    text = (
        f"{rule.metric} {format_value(rule.metric, result.canary)} "
        f"(threshold {format_threshold(rule)}, for {format_duration(rule.for_)}"
    )
    if result.stable is not None:
        text += f"; stable {format_value(rule.metric, result.stable)}"
    return text + ")"


# Reasons (a rollout's `reason`, the reason of a pause or rollback event) are a small markup
# that Slack shows as is: `<@ID>` names a person, and is written only by the bot through
# `person`; any other text inside a reason, and above all what a person typed, goes through
# `quote`, which escapes `&`, `<` and `>` the way Slack does. So a reason like
# `<!subteam^S1> <https://evil.example|approve>` typed into `/canary pause` reaches Slack as
# text, while "paused by <@U1>" still mentions U1.


def person(user_id: str) -> str:
    """A Slack user as a mention; a pipeline's token name (`ci:github-actions`) as text."""
    if re.fullmatch(r"[UW][A-Z0-9]{2,}", user_id):
        return f"<@{user_id}>"
    return quote(user_id)


def quote(text: str) -> str:
    """Outside text (typed by a person, or an error message) for use inside a reason."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unquote(reason: str) -> str:
    """A reason as plain text, for places that escape everything themselves."""
    return reason.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
