"""`/canary` text -> command: every form DESIGN.md lists, and a teaching refusal for the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.parse import (
    USAGE,
    Help,
    History,
    ListRollouts,
    Pause,
    Promote,
    Resume,
    Rollback,
    Start,
    Status,
    UsageError,
    parse_command,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("   ", Help()),
        ("help", Help()),
        ("HELP start", Help()),
        ("start checkout v2.3.5", Start("checkout", "v2.3.5")),
        (
            "start checkout registry:5000/shop/app@sha256:" + "a" * 64,
            Start("checkout", "registry:5000/shop/app@sha256:" + "a" * 64),
        ),
        (
            "start checkout v2 --steps 5,25,50 --interval 30m --no-approval",
            Start("checkout", "v2", (5, 25, 50), timedelta(minutes=30), False),
        ),
        (
            "start checkout v2 --no-approval --interval=1h30m --steps=10,50",
            Start("checkout", "v2", (10, 50), timedelta(hours=1, minutes=30), False),
        ),
        ("start checkout v2 --steps 5%,25%", Start("checkout", "v2", (5, 25))),
        # macOS and phones turn `--` into an em dash.
        ("start checkout v2 \u2014steps 10,20", Start("checkout", "v2", (10, 20))),
        ("Start  Checkout   v2", Start("Checkout", "v2")),
        ("status", Status(None)),
        ("status checkout", Status("checkout")),
        ("list", ListRollouts()),
        ("pause checkout", Pause("checkout", None)),
        (
            "pause checkout waiting for the db   migration",
            Pause("checkout", "waiting for the db   migration"),
        ),
        ("resume checkout", Resume("checkout")),
        ("promote checkout", Promote("checkout")),
        ("rollback checkout", Rollback("checkout", None)),
        ("rollback checkout p99 > 2s für alle 🙈", Rollback("checkout", "p99 > 2s für alle 🙈")),
        ("history checkout", History("checkout")),
    ],
)
def test_each_command_form(text: str, expected: object) -> None:
    assert parse_command(text) == expected


def test_slack_escaping_is_undone_once() -> None:
    # Slack sends `&`, `<`, `>` as entities; a typed `&lt;` arrives as `&amp;lt;`.
    assert parse_command("rollback checkout 5xx &gt; 1% &amp; p99 &lt; ok &amp;lt;") == Rollback(
        "checkout", "5xx > 1% & p99 < ok &lt;"
    )


def test_links_that_slack_wrapped_are_unwrapped() -> None:
    text = "start checkout <http://reg.example.com/app:v2|reg.example.com/app:v2>"
    assert parse_command(text) == Start("checkout", "reg.example.com/app:v2")


def _error(text: str) -> str:
    result = parse_command(text)
    assert isinstance(result, UsageError), result
    return result.message


def test_a_bad_step_names_the_word_and_shows_the_right_form() -> None:
    assert _error("start checkout v2 --steps 5,abc") == (
        "`abc` in --steps is not a number. Use canary weights in percent, rising, "
        "e.g. `--steps 5,25,50`."
    )


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ("50,25", "must rise strictly"),
        ("5,5", "must rise strictly"),
        ("0,50", "out of range"),
        ("5,100", "out of range"),
        ("5,,25", "empty step"),
        ("99999999999999999999", "out of range"),
        ("-5", "needs a value"),
    ],
)
def test_step_rules_come_from_the_config_validator(steps: str, fragment: str) -> None:
    message = _error(f"start checkout v2 --steps {steps}")
    assert fragment in message
    assert "--steps 5,25,50" in message


def test_a_bad_interval_says_how_to_write_one() -> None:
    message = _error("start checkout v2 --interval soon")
    assert "`soon`" in message
    assert "--interval 30m" in message
    assert "at least 1s" in _error("start checkout v2 --interval 0s")


def test_an_unknown_command_suggests_the_closest() -> None:
    message = _error("strat checkout v2")
    assert "did you mean `start`?" in message
    assert USAGE["start"] in message
    assert "did you mean `rollback`?" in _error("rolback checkout")
    assert "help" in _error("deploy checkout")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("start", ("needs a service and an image", USAGE["start"])),
        ("start checkout", ("needs an image", USAGE["start"])),
        ("start checkout v2 v3", ("remove `v3`", USAGE["start"])),
        ("start checkout v2 --stpes 5", ("did you mean `--steps`?",)),
        ("start checkout v2 --force", ("not a flag", "--no-approval")),
        ("start checkout v2 --steps", ("`--steps` needs a value",)),
        ("start checkout v2 --interval --no-approval", ("`--interval` needs a value",)),
        ("start checkout v2 --steps=", ("`--steps` needs a value",)),
        ("start checkout v2 --steps 5 --steps 10", ("given twice",)),
        ("start checkout v2 --no-approval --no-approval", ("given twice",)),
        ("start checkout v2 --no-approval=yes", ("takes no value",)),
        ("pause", ("needs a service name", USAGE["pause"])),
        ("rollback", ("needs a service name", USAGE["rollback"])),
        ("resume", ("needs a service name", USAGE["resume"])),
        ("resume checkout now", ("remove `now`", USAGE["resume"])),
        ("history", ("needs a service name",)),
        ("status checkout cart", ("remove `cart`",)),
        ("list everything", ("takes no arguments",)),
    ],
)
def test_usage_errors_say_what_is_wrong_and_how_to_do_it(
    text: str, fragments: tuple[str, ...]
) -> None:
    message = _error(text)
    for fragment in fragments:
        assert fragment in message


def test_echoed_user_text_is_short_and_cannot_break_the_code_span() -> None:
    message = _error("start checkout v2 --steps 5,`" + "x" * 300)
    assert len(message) < 300
    assert "``" not in message


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(
                [
                    *USAGE,
                    "--steps",
                    "--steps=",
                    "--interval",
                    "--no-approval",
                    "5,25",
                    "1h",
                    "checkout",
                    "v2",
                    "&amp;",
                    "<http://x|y>",
                    "\u2014",
                    "`",
                    "=",
                    ",",
                    "999",
                ]
            )
            | st.text(max_size=12),
            max_size=8,
        ).map(" ".join),
    )
)
def test_any_text_gives_a_command_or_a_short_usage_error(text: str) -> None:
    result = parse_command(text)
    if isinstance(result, UsageError):
        assert 0 < len(result.message) < 500
    else:
        assert isinstance(
            result,
            Start | Status | ListRollouts | Pause | Resume | Promote | Rollback | History | Help,
        )


def test_header_and_cookie_routing_flags() -> None:
    parsed = parse_command("start checkout v2 --header x-user-tier=premium --cookie canary")
    assert isinstance(parsed, Start)
    assert (parsed.header, parsed.cookie) == ("x-user-tier=premium", "canary")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("start checkout v2 --header premium", "--header name=value"),
        ("start checkout v2 --header 'a b'=c", "--header name=value"),
        ("start checkout v2 --cookie a;b", "--cookie NAME"),
    ],
)
def test_malformed_routing_flags_say_how_to_write_them(text: str, expected: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, UsageError)
    assert expected in parsed.message
