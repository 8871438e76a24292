"""The metric snapshot: what a reader of the rollout thread learns from it, within Slack's limits.

Every test goes through `Message.payload()`, which runs slack_sdk's validation, so a snapshot
that Slack would refuse fails here. Texts are compared after undoing Slack's `&gt;` escaping,
i.e. as the reader sees them.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.blocks import Message, snapshot_message
from rollout.analysis import Analysis, Measurement, RuleResult, TrackValues, Verdict
from rollout.config import Rule
from tests.blocks_support import payload
from tests.builders import progressing_rollout

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ERROR_RULE = Rule.model_validate({"metric": "error_rate", "above": 0.01, "for": "2m"})
LATENCY_RULE = Rule.model_validate({"metric": "latency_avg_ms", "above": 500, "for": "2m"})
SUCCESS_RULE = Rule.model_validate({"metric": "success_rate", "below": 0.999, "for": "0s"})
HEALTHY_VALUES = {
    "cpu_saturation": TrackValues(0.41, 0.38),
    "error_rate": TrackValues(0.002, 0.001),
    "latency_avg_ms": TrackValues(120.4, 118.0),
    "memory_saturation": TrackValues(0.5, 0.52),
    "request_rate": TrackValues(3.25, 29.5),
    "success_rate": TrackValues(0.998, 0.999),
}


def result(
    rule: Rule,
    verdict: Verdict,
    values: TrackValues,
    **extra: Any,
) -> RuleResult:
    return RuleResult(rule, verdict, values.canary, values.stable, rule.for_, **extra)


def metric_rows(message: Message) -> dict[str, dict[str, Any]]:
    """Metric name -> {"text": section text, "canary"/"stable": field values}, as shown."""
    rows: dict[str, dict[str, Any]] = {}
    for block in payload(message)["blocks"]:
        if block["type"] != "section" or not block["text"]["text"].startswith("*"):
            continue
        text = html.unescape(block["text"]["text"])
        name = text.split("\n", 1)[0].strip("*")
        row: dict[str, Any] = {"text": text}
        for cell in block.get("fields", []):
            label, value = cell["text"].split("\n", 1)
            row[label.strip("*").lower()] = value
        rows[name] = row
    return rows


def heading(message: Message) -> str:
    return html.unescape(payload(message)["blocks"][0]["text"]["text"])


def contexts(message: Message) -> list[str]:
    return [
        element["text"]
        for block in payload(message)["blocks"]
        if block["type"] == "context"
        for element in block["elements"]
    ]


def test_healthy_snapshot_lists_every_metric_with_traffic_first_and_each_rules_verdict() -> None:
    latest = Measurement(at=NOW - timedelta(seconds=5), values=HEALTHY_VALUES)
    analysis = Analysis(
        at=NOW,
        results=(
            result(ERROR_RULE, Verdict.HEALTHY, HEALTHY_VALUES["error_rate"]),
            result(LATENCY_RULE, Verdict.HEALTHY, HEALTHY_VALUES["latency_avg_ms"]),
            result(SUCCESS_RULE, Verdict.HEALTHY, HEALTHY_VALUES["success_rate"]),
        ),
        latest=latest,
    )
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Step 2 of 3 reached")

    rows = metric_rows(message)
    assert list(rows) == [
        "request_rate",
        "error_rate",
        "latency_avg_ms",
        "success_rate",
        "cpu_saturation",
        "memory_saturation",
    ]
    assert (rows["request_rate"]["canary"], rows["request_rate"]["stable"]) == (
        "3.25 req/s",
        "29.50 req/s",
    )
    assert (rows["error_rate"]["canary"], rows["error_rate"]["stable"]) == ("0.20%", "0.10%")
    assert (rows["latency_avg_ms"]["canary"], rows["latency_avg_ms"]["stable"]) == (
        "120 ms",
        "118 ms",
    )
    assert ":white_check_mark: *Healthy* · threshold > 1.00% for 2m" in rows["error_rate"]["text"]
    assert "threshold > 500 ms for 2m" in rows["latency_avg_ms"]["text"]
    assert "threshold < 99.90% for 0s" in rows["success_rate"]["text"]
    # Metrics without a rule show their values and no verdict.
    assert ":" not in rows["cpu_saturation"]["text"]
    assert rows["cpu_saturation"]["canary"] == "41.00%"

    top = heading(message)
    assert top.startswith(":white_check_mark: *Step 2 of 3 reached*")
    assert "3 of 3 rules healthy." in top
    assert message.text == "Step 2 of 3 reached: 3 of 3 rules healthy."
    (footer,) = contexts(message)
    assert "`registry:5000/shop/checkout:v2` at 25% of traffic" in footer
    assert "<!date^1714564795^" in footer  # when it was measured, in the reader's time zone


def test_breached_rule_shows_the_measured_value_threshold_and_window() -> None:
    values = {**HEALTHY_VALUES, "error_rate": TrackValues(0.042, 0.001)}
    analysis = Analysis(
        at=NOW,
        results=(
            result(
                ERROR_RULE,
                Verdict.BREACHED,
                values["error_rate"],
                since=NOW - timedelta(minutes=2),
            ),
            result(LATENCY_RULE, Verdict.HEALTHY, values["latency_avg_ms"]),
        ),
        latest=Measurement(at=NOW, values=values),
    )
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Breach: rolling back")

    row = metric_rows(message)["error_rate"]
    assert ":x: *Breached* · threshold > 1.00% for 2m · canary 4.20%" in row["text"]
    assert row["canary"] == "4.20%"
    assert ":white_check_mark:" in metric_rows(message)["latency_avg_ms"]["text"]
    top = heading(message)
    assert top.startswith(":x: *Breach: rolling back*\n1 of 2 rules breached:")
    assert "error_rate 4.20% (threshold > 1.00%, for 2m; stable 0.10%)" in top
    # The notification alone names what broke.
    assert "error_rate 4.20%" in message.text and message.text.startswith("Breach: rolling back")


def test_missing_values_read_as_no_data_never_as_a_number() -> None:
    values = {"request_rate": TrackValues(None, 12.0), "error_rate": TrackValues(None, None)}
    analysis = Analysis(
        at=NOW,
        results=(
            result(
                ERROR_RULE,
                Verdict.NO_DATA,
                values["error_rate"],
                note="no data from Prometheus for the canary",
            ),
            # A rule on a metric that was not measured at all still shows its verdict.
            result(LATENCY_RULE, Verdict.NO_DATA, TrackValues(None, None), note="no data"),
        ),
        latest=Measurement(at=NOW, values=values),
    )
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Holding step 2")

    rows = metric_rows(message)
    assert list(rows) == ["request_rate", "error_rate", "latency_avg_ms"]
    assert rows["request_rate"]["canary"] == "_no data_"
    assert rows["request_rate"]["stable"] == "12.00 req/s"
    assert rows["error_rate"]["canary"] == rows["error_rate"]["stable"] == "_no data_"
    assert rows["latency_avg_ms"]["canary"] == "_no data_"
    assert (
        ":grey_question: *No data* · threshold > 1.00% for 2m — "
        "_no data from Prometheus for the canary_" in rows["error_rate"]["text"]
    )
    assert ":grey_question: *No data*" in rows["latency_avg_ms"]["text"]
    top = heading(message)
    assert top.startswith(":grey_question:")
    assert "No data for 2 of 2 rules" in top


def test_without_any_measurement_it_says_prometheus_gave_nothing_and_lists_the_rules() -> None:
    analysis = Analysis(
        at=NOW,
        results=tuple(
            RuleResult(rule, Verdict.NO_DATA, None, None, rule.for_, "no samples yet")
            for rule in (ERROR_RULE, LATENCY_RULE)
        ),
        latest=None,
    )
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Step 1 of 3 reached")

    assert "No data from Prometheus" in heading(message)
    assert message.text.startswith("Step 1 of 3 reached: No data from Prometheus")
    rows = metric_rows(message)
    assert list(rows) == ["error_rate", "latency_avg_ms"]
    for row in rows.values():
        assert ":grey_question: *No data*" in row["text"]
        assert "_no samples yet_" in row["text"]
        assert "canary" not in row  # no columns of "no data" under a heading that says so
    (footer,) = contexts(message)
    assert "judged <!date^1714564800^" in footer


def test_pending_rule_is_not_called_healthy_nor_breached() -> None:
    values = {**HEALTHY_VALUES, "latency_avg_ms": TrackValues(640.0, 120.0)}
    analysis = Analysis(
        at=NOW,
        results=(
            result(ERROR_RULE, Verdict.HEALTHY, values["error_rate"]),
            result(
                LATENCY_RULE,
                Verdict.HEALTHY,
                values["latency_avg_ms"],
                note="beyond threshold for 1m of 2m",
                since=NOW - timedelta(minutes=1),
                pending=True,
            ),
        ),
        latest=Measurement(at=NOW, values=values),
    )
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Step 2 of 3")

    text = metric_rows(message)["latency_avg_ms"]["text"]
    assert ":hourglass: *Beyond threshold, not yet for the whole window*" in text
    assert "threshold > 500 ms for 2m · canary 640 ms" in text
    assert "_beyond threshold for 1m of 2m_" in text
    assert ":white_check_mark:" not in text and ":x:" not in text
    top = heading(message)
    assert top.startswith(":hourglass:")
    assert "1 of 2 rules beyond the threshold, not yet for the whole window" in top


def test_relative_rules_show_the_threshold_against_stable_and_both_values() -> None:
    ratio = Rule.model_validate(
        {"metric": "latency_p99_ms", "above_stable_ratio": 1.5, "for": "1m"}
    )
    by = Rule.model_validate({"metric": "error_rate", "above_stable_by": 0.005, "for": "5m"})
    values = {
        "latency_p99_ms": TrackValues(900.0, 400.0),
        "error_rate": TrackValues(0.02, 0.01),
    }
    analysis = Analysis(
        at=NOW,
        results=(
            result(ratio, Verdict.BREACHED, values["latency_p99_ms"]),
            result(by, Verdict.HEALTHY, values["error_rate"]),
        ),
        latest=Measurement(at=NOW, values=values),
    )
    rows = metric_rows(snapshot_message(progressing_rollout(now=NOW), analysis, title="Breach"))

    assert (
        ":x: *Breached* · threshold > stable x 1.5 for 1m · canary 900 ms vs stable 400 ms"
        in rows["latency_p99_ms"]["text"]
    )
    assert "threshold > stable + 0.50% for 5m" in rows["error_rate"]["text"]
    # Slack must receive `>` escaped, or it could start a link or a quote.
    raw = [
        block["text"]["text"]
        for block in payload(
            snapshot_message(progressing_rollout(now=NOW), analysis, title="Breach")
        )["blocks"]
        if block["type"] == "section" and block["text"]["text"].startswith("*latency_p99_ms*")
    ]
    assert "threshold &gt; stable x 1.5 for 1m" in raw[0]


def test_many_metrics_and_rules_stay_within_slack_limits_and_say_what_is_hidden() -> None:
    values = {f"metric_{i:03}": TrackValues(float(i), float(i) / 2) for i in range(120)}
    values["request_rate"] = TrackValues(5.0, 50.0)
    rules = [Rule.model_validate({"metric": f"metric_{i:03}", "above": 1e9}) for i in range(80)]
    results = [result(rule, Verdict.HEALTHY, values[rule.metric]) for rule in rules]
    # The one breach sits on a metric far past what fits: the heading must still name it.
    results[-1] = result(rules[-1], Verdict.BREACHED, values[rules[-1].metric])
    analysis = Analysis(at=NOW, results=tuple(results), latest=Measurement(at=NOW, values=values))
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Breach: rolling back")

    blocks = payload(message)["blocks"]
    assert len(blocks) == 50
    rows = metric_rows(message)
    assert list(rows)[:2] == ["request_rate", "metric_000"]
    hidden = 121 - len(rows)
    assert f"… and {hidden} more metrics, with {80 - (len(rows) - 1)} rules, not shown" in (
        contexts(message)
    )
    assert "1 of 80 rules breached" in heading(message)
    assert "metric_079 79" in heading(message)


def test_many_rules_on_one_metric_are_cut_between_lines_not_inside_one() -> None:
    rules = [
        Rule.model_validate({"metric": "error_rate", "above": i / 1000, "for": f"{i}m"})
        for i in range(1, 201)
    ]
    values = {"error_rate": TrackValues(0.5, 0.001)}
    analysis = Analysis(
        at=NOW,
        results=tuple(
            result(rule, Verdict.BREACHED, values["error_rate"], note="x" * 250) for rule in rules
        ),
        latest=Measurement(at=NOW, values=values),
    )
    message = snapshot_message(progressing_rollout(now=NOW), analysis, title="Breach")

    text = metric_rows(message)["error_rate"]["text"]
    last = text.split("\n")[-1]
    assert last.startswith("… and ") and last.endswith(" more rules")
    shown = text.count(":x: *Breached*")
    assert shown + int(last.split()[2]) == 200
    assert all(line.endswith("_") for line in text.split("\n")[1:-1])
    assert heading(message).split("\n")[-1].endswith("more breached rules")


def test_user_and_config_text_is_escaped() -> None:
    rule = Rule.model_validate({"metric": "<!channel>", "above": 1})
    values = {"<!channel>": TrackValues(2.0, 1.0)}
    analysis = Analysis(
        at=NOW,
        results=(result(rule, Verdict.BREACHED, values["<!channel>"], note="<@U999> & co"),),
        latest=Measurement(at=NOW, values=values),
    )
    raw = str(
        payload(snapshot_message(progressing_rollout(now=NOW), analysis, title="<!here>\nhi"))
    )
    assert "<!channel>" not in raw and "<!here>" not in raw and "<@U999>" not in raw
    assert "&lt;!channel&gt;" in raw and "&lt;@U999&gt; &amp; co" in raw


_VERDICTS = st.sampled_from(list(Verdict))
_VALUE = st.none() | st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=60, deadline=None)
@given(
    metrics=st.lists(st.text(min_size=1, max_size=300), max_size=70, unique=True),
    rule_specs=st.lists(
        st.tuples(st.integers(0, 69), _VERDICTS, st.booleans(), st.text(max_size=400)),
        max_size=70,
    ),
    canary=_VALUE,
    stable=_VALUE,
    measured=st.booleans(),
    title=st.text(max_size=500),
)
def test_any_analysis_makes_a_valid_message(
    metrics: list[str],
    rule_specs: list[tuple[int, Verdict, bool, str]],
    canary: float | None,
    stable: float | None,
    measured: bool,
    title: str,
) -> None:
    names = metrics or ["error_rate"]
    results = tuple(
        RuleResult(
            Rule.model_validate({"metric": names[index % len(names)], "below": 1}),
            verdict,
            canary,
            stable,
            timedelta(minutes=index),
            note or None,
            pending=pending,
        )
        for index, verdict, pending, note in rule_specs
    )
    values = {name: TrackValues(canary, stable) for name in metrics}
    latest = Measurement(at=NOW, values=values) if measured else None
    message = snapshot_message(
        progressing_rollout(now=NOW), Analysis(at=NOW, results=results, latest=latest), title=title
    )
    blocks = payload(message)["blocks"]
    assert all(len(block.get("text", {}).get("text", "")) <= 3000 for block in blocks)
