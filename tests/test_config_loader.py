"""The config loader names each problem by the key the user wrote and the line it is on."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.check_config import run_check_config
from bot.config_loader import (
    ConfigError,
    ConfigProblem,
    describe_config,
    load_config,
    load_config_text,
)
from rollout.start import StartRequest, draft

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config.yaml"

BASE = """\
slack:
  release_channels: [C0RELEASES]
  approvers: [U02BOB, S0SRE]
cluster_name: test-1
defaults:
  steps: [5, 25, 50]
  step_interval: 10m
  rules:
    - {metric: error_rate, above: 0.01, for: 2m}
    - {metric: latency_avg_ms, above: 500, for: 1m}
services:
  checkout:
    namespace: shop
    deployment: checkout
  cart:
    namespace: shop
    deployment: cart
"""


def line_of(text: str, needle: str, *, after: str = "") -> int:
    """1-based line of the first line holding `needle` (below the first holding `after`)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines) if i >= start and needle in line) + 1


def problems(text: str) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return caught.value.problems


def only_problem(text: str) -> ConfigProblem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_the_example_loads_and_is_summarised_in_one_line() -> None:
    config = load_config(EXAMPLE)
    assert describe_config(config) == (
        "valid: 2 services (checkout: replicas, cart: replicas), 1 release channel, "
        "cluster prod-eu-1"
    )
    assert config.services["checkout"].policy.steps == (10, 50)
    assert config.services["cart"].policy.approval is False
    assert config.services["cart"].policy.step_interval.total_seconds() == 15 * 60


def test_summary_of_a_config_open_to_any_channel() -> None:
    text = BASE.replace("  release_channels: [C0RELEASES]\n", "")
    assert describe_config(load_config_text(text)) == (
        "valid: 2 services (checkout: replicas, cart: replicas), any channel, cluster test-1"
    )


def test_overrides_merge_over_defaults_per_service() -> None:
    text = BASE.replace(
        "    deployment: checkout\n",
        "    deployment: checkout\n    steps: [10, 50]\n"
        "    rules:\n      - {metric: error_rate, above: 0.05}\n",
    )
    config = load_config_text(text)
    checkout, cart = config.services["checkout"].policy, config.services["cart"].policy
    assert checkout.steps == (10, 50)
    assert checkout.step_interval == timedelta(minutes=10)  # not overridden: from defaults
    assert [(r.metric, r.threshold) for r in checkout.rules] == [("error_rate", 0.05)]
    assert cart.steps == (5, 25, 50)
    assert [r.metric for r in cart.rules] == ["error_rate", "latency_avg_ms"]
    assert cart.rules[1].for_ == timedelta(minutes=1)
    assert config.defaults == cart


def test_bad_duration_names_the_key_and_line() -> None:
    text = BASE.replace("step_interval: 10m", "step_interval: soon")
    problem = only_problem(text)
    assert problem.path == "defaults.step_interval"
    assert problem.line == line_of(text, "step_interval")
    assert "'soon' is not a duration" in problem.message
    assert "Value error" not in problem.message
    assert str(problem).startswith(f"defaults.step_interval (line {problem.line}): 'soon'")


def test_steps_that_do_not_rise() -> None:
    text = BASE.replace("steps: [5, 25, 50]", "steps: [5, 50, 25]")
    problem = only_problem(text)
    assert (problem.path, problem.line) == ("defaults.steps", line_of(text, "steps:"))
    assert "must rise strictly" in problem.message


def test_step_of_100_is_refused() -> None:
    text = BASE.replace("steps: [5, 25, 50]", "steps: [5, 25, 100]")
    problem = only_problem(text)
    assert problem.path == "defaults.steps"
    assert "step 100 is out of range" in problem.message


def test_unknown_key_suggests_the_close_one() -> None:
    text = BASE.replace("    deployment: cart\n", "    deployment: cart\n    stepz: [10]\n")
    problem = only_problem(text)
    assert problem.path == "services.cart.stepz"
    assert problem.line == line_of(text, "stepz")
    assert problem.message == "unknown key 'stepz'; did you mean 'steps'?"


def test_unknown_key_without_a_close_one_has_no_suggestion() -> None:
    problem = only_problem(BASE + "colour: blue\n")
    assert (problem.path, problem.message) == ("colour", "unknown key 'colour'")


def test_unknown_key_in_a_rule_suggests_for() -> None:
    text = BASE.replace("above: 500, for: 1m", "above: 500, fr: 1m")
    problem = only_problem(text)
    assert problem.path == "defaults.rules[1].fr"
    assert problem.message == "unknown key 'fr'; did you mean 'for'?"


def test_wrong_strategy_lists_the_allowed_values() -> None:
    text = BASE.replace("    deployment: cart\n", "    deployment: cart\n    strategy: linkerd\n")
    problem = only_problem(text)
    assert problem.path == "services.cart.strategy"
    assert problem.line == line_of(text, "strategy")
    assert problem.message == (
        "must be one of replicas, service, nginx, alb, istio, gateway, argo (got 'linkerd')"
    )


def test_rule_with_two_thresholds_points_at_the_rule() -> None:
    text = BASE.replace("above: 500, for: 1m", "above: 500, below: 10, for: 1m")
    problem = only_problem(text)
    assert problem.path == "defaults.rules[1]"
    assert problem.line == line_of(text, "latency_avg_ms")
    assert "exactly one threshold" in problem.message
    assert "found above, below" in problem.message


def test_rule_duration_is_shown_under_its_yaml_name() -> None:
    text = BASE.replace("above: 0.01, for: 2m", "above: 0.01, for: a while")
    problem = only_problem(text)
    assert problem.path == "defaults.rules[0].for"
    assert problem.line == line_of(text, "error_rate")


def test_error_in_an_override_points_at_the_service_not_defaults() -> None:
    text = BASE.replace(
        "    deployment: checkout\n", "    deployment: checkout\n    step_interval: 0s\n"
    )
    problem = only_problem(text)
    assert problem.path == "services.checkout.step_interval"
    assert problem.line == line_of(text, "step_interval: 0s")
    assert problem.message == "must be at least 1s"


def test_defaults_error_is_reported_once_however_many_services_inherit_it() -> None:
    text = BASE.replace("step_interval: 10m", "step_interval: 10")
    problem = only_problem(text)  # not once for defaults, checkout and cart each
    assert problem.path == "defaults.step_interval"
    assert problem.line == line_of(text, "step_interval")
    assert "no unit" in problem.message


def test_type_errors_say_what_was_expected() -> None:
    text = BASE.replace("steps: [5, 25, 50]", "steps: [5, many]\n  approval: maybe")
    found = {(p.path, p.message) for p in problems(text)}
    assert found == {
        ("defaults.steps[1]", "must be a whole number (got 'many')"),
        ("defaults.approval", "must be true or false (got 'maybe')"),
    }


def test_bad_slack_ids_name_the_value() -> None:
    text = BASE.replace("[U02BOB, S0SRE]", "[U02BOB, bob]").replace("[C0RELEASES]", "['#releases']")
    found = problems(text)
    assert [(p.path, p.line) for p in found] == [
        ("slack.release_channels", line_of(text, "release_channels")),
        ("slack.approvers", line_of(text, "approvers")),
    ]
    assert found[0].message == "'#releases' is not a Slack channel ID"
    assert found[1].message == "'bob' is not a Slack user (U...) or user-group (S...) ID"


def test_missing_required_key_points_at_the_service() -> None:
    text = BASE.replace("    deployment: cart\n", "")
    problem = only_problem(text)
    assert problem.path == "services.cart.deployment"
    assert problem.line == line_of(text, "cart:")
    assert problem.message == "required, but missing"


@pytest.mark.parametrize(
    ("strategy", "given", "missing"),
    [
        ("nginx", "service: cart", "ingress"),
        ("alb", "service: cart", "ingress"),
        ("istio", "virtual_service: cart", "service"),
        ("gateway", "service: cart", "http_route"),
        ("argo", "service: cart", "argo_rollout"),
    ],
)
def test_strategy_needs_its_objects_named(strategy: str, given: str, missing: str) -> None:
    text = BASE.replace(
        "    deployment: cart\n", f"    deployment: cart\n    strategy: {strategy}\n    {given}\n"
    )
    problem = only_problem(text)
    assert problem.path == f"services.cart.{missing}"
    assert problem.line == line_of(text, "cart:")
    assert problem.message.startswith(f"strategy {strategy} needs {missing}:")


def test_strategy_with_its_objects_named_is_valid() -> None:
    text = BASE.replace(
        "    deployment: cart\n",
        "    deployment: cart\n    strategy: istio\n    service: cart\n    virtual_service: cart\n",
    )
    assert load_config_text(text).services["cart"].strategy == "istio"


def test_every_problem_is_reported_in_file_order() -> None:
    text = (
        BASE.replace("step_interval: 10m", "step_interval: soon")
        .replace("    deployment: cart\n", "    deployment: cart\n    strategy: istio\n")
        .replace("[U02BOB, S0SRE]", "[bob]")
    )
    found = problems(text)
    assert [p.path for p in found] == [
        "slack.approvers",
        "defaults.step_interval",
        "services.cart.virtual_service",
        "services.cart.service",
    ]
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert str(caught.value).splitlines() == [str(p) for p in found]


def test_a_policy_key_under_a_service_is_not_silently_dropped() -> None:
    text = BASE.replace(
        "    deployment: cart\n", "    deployment: cart\n    policy:\n      steps: [1]\n"
    )
    problem = only_problem(text)
    assert (problem.path, problem.line) == ("services.cart.policy", line_of(text, "policy:"))


def test_duplicate_keys_are_reported() -> None:
    text = BASE.replace("    deployment: cart\n", "    deployment: cart\n    namespace: web\n")
    problem = only_problem(text)
    assert problem.path == "services.cart.namespace"
    assert problem.line == line_of(text, "namespace: web")
    first = line_of(text, "namespace: shop", after="cart:")
    assert problem.message.startswith(f"duplicate key (first at line {first})")


def test_yaml_merge_keys_may_be_overridden() -> None:
    text = (
        BASE.replace(
            "  cart:\n    namespace: shop\n",
            "  cart: &cart\n    namespace: shop\n",
        )
        + "  basket:\n    <<: *cart\n    deployment: basket\n"
    )
    assert load_config_text(text).services["basket"].deployment == "basket"


def test_yaml_syntax_error_has_its_line() -> None:
    text = BASE.replace("    deployment: cart\n", "    deployment: cart\n   broken: [\n")
    problem = only_problem(text)
    assert problem.path == ""
    assert problem.line == line_of(text, "broken")
    assert problem.message.startswith("not valid YAML:")
    assert str(problem).startswith(f"line {problem.line}: not valid YAML")


def test_unreadable_characters_are_a_yaml_problem() -> None:
    text = BASE.replace("cluster_name: test-1", "cluster_name: test\x00")
    problem = only_problem(text)
    assert problem.line == line_of(text, "cluster_name")
    assert problem.message == "not valid YAML: #x0000: special characters are not allowed"


@pytest.mark.parametrize("text", ["", "# nothing yet\n"])
def test_empty_file(text: str) -> None:
    assert "empty" in only_problem(text).message


def test_top_level_must_be_a_mapping() -> None:
    problem = only_problem("- checkout\n- cart\n")
    assert problem.line == 1
    assert "must be a mapping" in problem.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"cannot read {path}: No such file or directory"


def test_check_config_valid_prints_the_summary(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_check_config(str(EXAMPLE), out=out, err=err) == 0
    assert out.getvalue() == describe_config(load_config(EXAMPLE)) + "\n"
    assert err.getvalue() == ""


def test_check_config_invalid_prints_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = BASE.replace("step_interval: 10m", "step_interval: soon").replace(
        "    deployment: cart\n", "    deployment: cart\n    stepz: [1]\n"
    )
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    assert run_check_config(str(path), out=out, err=err) == 1
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert lines[0] == f"{path}: 2 problems"
    assert (
        lines[1]
        .strip()
        .startswith(f"defaults.step_interval (line {line_of(text, 'step_interval')}): 'soon'")
    )
    assert lines[2].strip() == (
        f"services.cart.stepz (line {line_of(text, 'stepz')}): "
        "unknown key 'stepz'; did you mean 'steps'?"
    )


def test_check_config_missing_file_is_one_problem(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_check_config(str(tmp_path / "nope.yaml"), out=out, err=err) == 1
    assert err.getvalue().splitlines()[0] == f"{tmp_path / 'nope.yaml'}: 1 problem"


def test_route_is_refused_for_a_strategy_that_splits_no_route() -> None:
    text = BASE.replace("    deployment: cart\n", "    deployment: cart\n    route: main\n")
    problem = only_problem(text)
    assert problem.path.startswith("services.cart")
    assert "strategies istio and gateway" in problem.message
    assert "remove `route: main`" in problem.message


def test_route_may_be_a_rule_index_for_the_gateway() -> None:
    text = BASE.replace(
        "    deployment: cart\n",
        "    deployment: cart\n    strategy: gateway\n    service: cart\n"
        "    http_route: cart\n    route: 2\n",
    )
    assert load_config_text(text).services["cart"].route == "2"


def test_kubernetes_request_timeout_defaults_to_ten_seconds_and_is_configurable() -> None:
    assert load_config_text(BASE).kubernetes.request_timeout == timedelta(seconds=10)
    text = BASE + "kubernetes:\n  request_timeout: 3s\n  parallel_rollouts: 2\n"
    loaded = load_config_text(text)
    assert loaded.kubernetes.request_timeout == timedelta(seconds=3)
    assert loaded.kubernetes.parallel_rollouts == 2


def test_a_request_timeout_of_zero_is_refused_with_an_example() -> None:
    problem = only_problem(BASE + "kubernetes:\n  request_timeout: 0s\n")
    assert problem.path == "kubernetes.request_timeout"
    assert "longer than 0s, for example 10s" in problem.message


def test_promotion_deadline_defaults_to_the_progress_deadline() -> None:
    text = BASE.replace("  step_interval: 10m\n", "  step_interval: 10m\n  progress_deadline: 7m\n")
    text = text.replace(
        "    deployment: cart\n", "    deployment: cart\n    promotion_deadline: 20m\n"
    )
    config = load_config_text(text)
    now = datetime(2026, 12, 5, tzinfo=UTC)

    def deadline(service: str) -> timedelta:
        request = StartRequest(service=service, image="v2", by="U02BOB", channel="C0RELEASES")
        return draft(request, config.services[service], now=now).plan.promotion_deadline

    assert deadline("checkout") == timedelta(minutes=7)
    assert deadline("cart") == timedelta(minutes=20)
