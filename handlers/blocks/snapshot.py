"""The metric snapshot: canary vs stable for every metric, and how each rule stands.

Posted in the rollout's thread at every step and on a breach, so a reader of the thread sees
why the bot moved on, held or rolled back without opening Prometheus.

Layout: one section per metric. Its text names the metric and lists the verdict of each rule
on it; its two fields hold the canary and the stable value. Slack lays fields out as two
columns on every client, a phone included, whereas a monospace table wider than a phone's
~40 characters wraps into an unreadable jumble; and a rule sits beside the values it judged,
so nobody matches rows across two tables. A message holds at most 50 blocks: beyond that the
last metrics (those without rules come last) are summed up in one context line, and the
heading still counts every rule, so a breach is never hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from handlers.blocks.common import (
    MAX_BLOCKS,
    SECTION_MAX,
    Message,
    code,
    context,
    escape,
    fallback,
    one_line,
    percent,
    plain,
    section,
    slack_date,
)
from rollout.analysis import Analysis, Measurement, RuleResult, Verdict
from rollout.durations import format_duration
from rollout.model import Rollout
from rollout.wording import describe_breach, format_threshold, format_value

VERDICT_SYMBOL = {
    Verdict.HEALTHY: ":white_check_mark:",
    Verdict.BREACHED: ":x:",
    Verdict.NO_DATA: ":grey_question:",
}
VERDICT_LABEL = {
    Verdict.HEALTHY: "Healthy",
    Verdict.BREACHED: "Breached",
    Verdict.NO_DATA: "No data",
}
PENDING_SYMBOL = ":hourglass:"
PENDING_LABEL = "Beyond threshold, not yet for the whole window"
NO_DATA = "_no data_"
REQUEST_RATE = "request_rate"

TITLE_MAX = 150
NAME_MAX = 100
NOTE_MAX = 300
# Room left in a section for the "… and N more" line that replaces what does not fit.
_TAIL_ROOM = 40
# The heading and the footer; a truncated snapshot adds one context line.
_FIXED_BLOCKS = 2


def snapshot_message(rollout: Rollout, analysis: Analysis, *, title: str) -> Message:
    """The thread reply for one analysis; `title` is a short heading ("Step 2 of 3 reached")."""
    heading = one_line(title, TITLE_MAX)
    symbol, headline = _summary(analysis)
    breaches = [
        escape(describe_breach(result))
        for result in analysis.results
        if result.verdict is Verdict.BREACHED
    ]
    lines = [f"{symbol} *{heading}*", headline, *(f"• {breach}" for breach in breaches)]
    blocks: list[Block] = [section(_fit(lines, what="breached rules"))]

    metrics = _metric_order(analysis)
    room = MAX_BLOCKS - _FIXED_BLOCKS
    shown = metrics if len(metrics) <= room else metrics[: room - 1]
    for metric in shown:
        results = [r for r in analysis.results if r.rule.metric == metric]
        blocks.append(_metric_block(metric, results, latest=analysis.latest))
    hidden = set(metrics[len(shown) :])
    if hidden:
        hidden_rules = sum(1 for r in analysis.results if r.rule.metric in hidden)
        rules = f", with {_count(hidden_rules, 'rule')}," if hidden_rules else ""
        blocks.append(context(f"… and {_count(len(hidden), 'more metric')}{rules} not shown"))

    blocks.append(context(_footer(rollout, analysis)))
    # The notification alone should say what broke, for whoever reads it on a lock screen.
    text = " ".join([f"{heading}: {headline}", *breaches])
    return Message(text=fallback(text), blocks=tuple(blocks))


def _summary(analysis: Analysis) -> tuple[str, str]:
    """The overall verdict: a symbol and one sentence."""
    results = analysis.results
    total = _count(len(results), "rule")
    if analysis.latest is None:
        return (
            VERDICT_SYMBOL[Verdict.NO_DATA],
            "No data from Prometheus: nothing has been measured for this rollout yet.",
        )
    if not results:
        return ":information_source:", "No rules to judge."
    counts = {verdict: 0 for verdict in Verdict}
    for result in results:
        counts[result.verdict] += 1
    if counts[Verdict.BREACHED]:
        return VERDICT_SYMBOL[Verdict.BREACHED], f"{counts[Verdict.BREACHED]} of {total} breached:"
    if counts[Verdict.NO_DATA]:
        return (
            VERDICT_SYMBOL[Verdict.NO_DATA],
            f"No data for {counts[Verdict.NO_DATA]} of {total}: missing data never counts "
            "as healthy.",
        )
    if analysis.pending:
        return (
            PENDING_SYMBOL,
            f"{len(analysis.pending)} of {total} beyond the threshold, not yet for the whole "
            "window; none breached.",
        )
    return VERDICT_SYMBOL[Verdict.HEALTHY], f"{len(results)} of {total} healthy."


def _metric_order(analysis: Analysis) -> list[str]:
    """Traffic first (it says how much the rest can be trusted), then judged metrics, then the rest.

    A rule's metric is listed even when it was not measured, so every rule shows its verdict.
    """
    measured = list(analysis.latest.values) if analysis.latest is not None else []
    ruled = list(dict.fromkeys(result.rule.metric for result in analysis.results))
    first = [REQUEST_RATE] if REQUEST_RATE in measured or REQUEST_RATE in ruled else []
    judged = [metric for metric in ruled if metric != REQUEST_RATE]
    rest = sorted(metric for metric in measured if metric not in ruled and metric != REQUEST_RATE)
    return first + judged + rest


def _metric_block(
    metric: str, results: Sequence[RuleResult], *, latest: Measurement | None
) -> SectionBlock:
    lines = [f"*{plain(metric, NAME_MAX)}*", *(_rule_line(result) for result in results)]
    text = _fit(lines, what="rules")
    if latest is None:
        # Two cells of "no data" per metric would only repeat the heading.
        return section(text)
    values = latest.get(metric)
    cells = [
        MarkdownTextObject(text=f"*Canary*\n{_value(metric, values.canary)}"),
        MarkdownTextObject(text=f"*Stable*\n{_value(metric, values.stable)}"),
    ]
    return SectionBlock(text=MarkdownTextObject(text=text), fields=cells)


def _rule_line(result: RuleResult) -> str:
    """`:x: *Breached* · threshold > 1.00% for 2m · canary 4.20%`, then the judge's note."""
    rule = result.rule
    if result.pending:
        symbol, label = PENDING_SYMBOL, PENDING_LABEL
    else:
        symbol, label = VERDICT_SYMBOL[result.verdict], VERDICT_LABEL[result.verdict]
    # format_threshold writes `>`/`<`, which Slack would read as the start of a link.
    parts = [
        f"{symbol} *{label}*",
        f"threshold {escape(format_threshold(rule))} for {format_duration(result.window)}",
    ]
    if result.verdict is Verdict.BREACHED or result.pending:
        # The value that tripped the rule, next to its threshold; relative rules need stable's.
        measured = f"canary {_value(rule.metric, result.canary)}"
        if rule.threshold_key.startswith("above_stable"):
            measured += f" vs stable {_value(rule.metric, result.stable)}"
        parts.append(measured)
    line = " · ".join(parts)
    if result.note:
        line += f" — _{plain(result.note, NOTE_MAX)}_"
    return line


def _value(metric: str, value: float | None) -> str:
    return NO_DATA if value is None else format_value(metric, value)


def _footer(rollout: Rollout, analysis: Analysis) -> str:
    when = (
        f"measured {slack_date(analysis.latest.at)}"
        if analysis.latest is not None
        else f"judged {slack_date(analysis.at)}"
    )
    return (
        f"{code(rollout.service, NAME_MAX)} · canary {code(rollout.canary_image)} at "
        f"{percent(rollout.weight)} of traffic · stable {code(rollout.stable_image)} · {when}"
    )


def _fit(lines: Sequence[str], *, what: str) -> str:
    """Whole lines up to a section's limit, then `… and N more`, never a line cut in half."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        if used + len(line) + 1 > SECTION_MAX - _TAIL_ROOM:
            kept.append(f"… and {len(lines) - index} more {what}")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


def _count(amount: int, noun: str) -> str:
    return f"{amount} {noun}" if amount == 1 else f"{amount} {noun}s"
