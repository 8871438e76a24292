"""The pipeline API's config (`api.channel`, `api.tokens`), tokens and CI context, unit-sized."""

from __future__ import annotations

import argparse
import logging

import pytest

from bot.config_loader import ConfigError, load_config_text
from bot.release import _start_body as start_body
from bot.release import ci_context
from handlers.api import ApiTokens

BASE = """\
slack: {release_channels: [C0RELEASES]}
services:
  checkout: {namespace: shop, deployment: checkout}
"""
TOKENS = """\
api:
  tokens:
    - {name: "ci:github-actions", token_env: TOKEN_GHA, services: [checkout]}
    - {name: dashboards, token_env: TOKEN_READ, services: ["*"], verbs: [read]}
"""


def test_api_channel_defaults_to_the_first_release_channel() -> None:
    config = load_config_text(BASE + TOKENS)
    assert config.api_channel == "C0RELEASES"
    both = BASE.replace("[C0RELEASES]", "[C0RELEASES, C0DEPLOYS]")
    assert load_config_text(both + TOKENS + "  channel: C0DEPLOYS\n").api_channel == "C0DEPLOYS"
    assert config.api.tokens[0].may("start", "checkout")
    assert not config.api.tokens[1].may("start", "checkout")
    assert config.api.tokens[1].may("read", "anything")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (BASE.replace("[C0RELEASES]", "[]") + TOKENS, "api.channel"),
        (BASE + TOKENS.replace("[checkout]", "[payments]"), "unknown service(s) payments"),
        (BASE + TOKENS + "  channel: C0DEPLOYS\n", "not one of slack.release_channels"),
        (BASE + TOKENS.replace("TOKEN_GHA", "'gha-secret-value!'"), "environment variable name"),
        (BASE + TOKENS.replace('"ci:github-actions"', "U0ALICE"), "lower case"),
        (BASE + TOKENS.replace("verbs: [read]", "verbs: [approve]"), "start, read, rollback"),
        (BASE + TOKENS.replace("dashboards", '"ci:github-actions"'), "used twice"),
    ],
)
def test_bad_api_config_is_refused_with_what_to_do(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(text)
    assert says in str(refused.value.problems), refused.value.problems


def test_a_token_whose_variable_is_unset_is_one_start_up_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config_text(BASE + TOKENS)
    with caplog.at_level(logging.WARNING):
        tokens = ApiTokens.from_env(config.api, {"TOKEN_GHA": "s3cret-gha"})
    (line,) = [r.getMessage() for r in caplog.records]
    assert "dashboards" in line and "TOKEN_READ is not set" in line
    assert "s3cret" not in caplog.text
    assert tokens.find("Bearer s3cret-gha") == config.api.tokens[0]
    for wrong in (None, "", "Bearer", "Bearer s3cret", "Basic s3cret-gha", "s3cret-gha"):
        assert tokens.find(wrong) is None, wrong


def test_ci_context_from_github_actions_gitlab_and_jenkins() -> None:
    github = {
        "GITHUB_SHA": "abc123",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_RUN_ID": "42",
        "GITHUB_ACTOR": "alice",
    }
    assert ci_context(github) == {
        "commit": "abc123",
        "pipeline_url": "https://github.com/acme/shop/actions/runs/42",
        "triggered_by": "alice",
    }
    jenkins = {"GIT_COMMIT": "def456", "BUILD_URL": "https://jenkins.example/job/shop/7/"}
    assert ci_context(jenkins) == {
        "commit": "def456",
        "pipeline_url": "https://jenkins.example/job/shop/7/",
    }
    gitlab = {"CI_COMMIT_SHA": "0a1b", "CI_PIPELINE_URL": "https://gitlab.example/p/1"}
    assert ci_context(gitlab)["pipeline_url"] == "https://gitlab.example/p/1"
    assert ci_context({}) == {}


def test_release_flags_override_the_ci_context() -> None:
    args = argparse.Namespace(
        service="checkout",
        image="v2.3.5",
        context=["commit=feed", "triggered_by=bob"],
        steps="5,25",
        interval="30m",
        expected_digest=None,
    )
    body = start_body(args, {"GIT_COMMIT": "def456", "BUILD_URL": "https://j.example/7"})
    assert body == {
        "service": "checkout",
        "image": "v2.3.5",
        "context": {"commit": "feed", "pipeline_url": "https://j.example/7", "triggered_by": "bob"},
        "steps": [5, 25],
        "interval": "30m",
    }


def test_the_example_pipelines_call_release_with_flags_the_cli_accepts() -> None:
    import re
    import shlex
    from pathlib import Path

    import yaml

    from bot.cli import _parser

    examples = Path(__file__).resolve().parents[1] / "examples" / "pipelines"
    workflow = yaml.safe_load((examples / "github-actions.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["release"]["steps"]]
    (github,) = [run for run in runs if "canary-bot release" in run]
    jenkins = re.search(r"canary-bot (release [^']+)'", (examples / "Jenkinsfile").read_text())
    assert jenkins is not None
    for command in (github.split("canary-bot ", 1)[1], jenkins.group(1)):
        args = _parser().parse_args(shlex.split(command))
        assert (args.command, args.service, args.wait, args.timeout) == (
            "release",
            "checkout",
            True,
            "2h",
        )
