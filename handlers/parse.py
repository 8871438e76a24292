"""Turn the text after `/canary` into a typed command, or a refusal that teaches the syntax.

Parsing is kept apart from acting so it can be pure: no service lookup, no permission check,
no Slack call. The caller gets either a `Command` to carry out or a `UsageError` whose message
says what was wrong and shows the right usage line, ready for an ephemeral reply. Nothing a user
can type makes this module raise (a Hypothesis test holds it to that).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta

from rollout.config import validate_steps
from rollout.durations import DurationError, parse_duration


@dataclass(frozen=True)
class Start:
    service: str
    image: str
    steps: tuple[int, ...] | None = None
    interval: timedelta | None = None
    # None: the service's policy decides; False: `--no-approval`.
    approval: bool | None = None
    # Header (`name=value`) or cookie routing to the canary, for strategies that support it.
    header: str | None = None
    cookie: str | None = None


@dataclass(frozen=True)
class Status:
    service: str | None = None


@dataclass(frozen=True)
class ListRollouts:
    pass


@dataclass(frozen=True)
class Pause:
    service: str
    reason: str | None = None


@dataclass(frozen=True)
class Resume:
    service: str


@dataclass(frozen=True)
class Promote:
    service: str


@dataclass(frozen=True)
class Rollback:
    service: str
    reason: str | None = None


@dataclass(frozen=True)
class History:
    service: str


@dataclass(frozen=True)
class Help:
    pass


Command = Start | Status | ListRollouts | Pause | Resume | Promote | Rollback | History | Help


@dataclass(frozen=True)
class UsageError:
    """What was wrong with the command and how to write it right (plain text, not mrkdwn)."""

    message: str


USAGE = {
    "start": "/canary start <service> <tag-or-image> [--steps 5,25,50] [--interval 30m] "
    "[--no-approval] [--header name=value] [--cookie NAME]",
    "status": "/canary status [service]",
    "list": "/canary list",
    "pause": "/canary pause <service> [reason...]",
    "resume": "/canary resume <service>",
    "promote": "/canary promote <service>",
    "rollback": "/canary rollback <service> [reason...]",
    "history": "/canary history <service>",
    "help": "/canary help",
}

_FLAGS = ("--steps", "--interval", "--no-approval", "--header", "--cookie")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,100}=[^\s=]{1,200}$")
_COOKIE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_STEPS_EXAMPLE = "Use canary weights in percent, rising, e.g. `--steps 5,25,50`."
_INTERVAL_EXAMPLE = "Use a duration such as `--interval 30m` or `--interval 1h30m`."
# Phones and macOS turn a typed `--` into a dash; read those as the flag the user meant.
_DASHES = re.compile(r"^[\u2012\u2013\u2014\u2015\u2212]-?")
# With "escape channels, users and links" on, Slack wraps things that look like links.
_SLACK_LINK = re.compile(r"<((?:https?|mailto):[^|>]*)(?:\|([^>]*))?>")


def parse_command(text: str) -> Command | UsageError:
    """Read `/canary` text as Slack delivers it (entities escaped, links possibly wrapped)."""
    cleaned = _unslack(text).strip()
    words = cleaned.split(maxsplit=1)
    if not words:
        return Help()
    verb = words[0].lower()
    rest = words[1] if len(words) > 1 else ""
    if verb in ("help", "-h", "--help"):
        return Help()
    if verb not in USAGE:
        return _unknown_command(words[0])
    if verb == "start":
        return _start(rest.split())
    if verb in ("pause", "rollback"):
        return _with_reason(verb, rest)
    return _simple(verb, rest.split())


def _unslack(text: str) -> str:
    unwrapped = _SLACK_LINK.sub(lambda m: m.group(2) or m.group(1), text)
    # `&amp;` last so that a typed `&lt;` (delivered as `&amp;lt;`) stays `&lt;`.
    return unwrapped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _show(word: str, limit: int = 40) -> str:
    """A user's word, safe to quote inside backticks in a short message."""
    flat = " ".join(word.replace("`", "'").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _usage(verb: str) -> str:
    return f"Usage: `{USAGE[verb]}`"


def _unknown_command(word: str) -> UsageError:
    close = difflib.get_close_matches(word.lower(), USAGE, n=1, cutoff=0.6)
    if close:
        return UsageError(
            f"`{_show(word)}` is not a /canary command; did you mean `{close[0]}`? "
            + _usage(close[0])
        )
    return UsageError(
        f"`{_show(word)}` is not a /canary command. Use one of: {', '.join(USAGE)} "
        "(`/canary help` shows examples)."
    )


def _simple(verb: str, args: list[str]) -> Command | UsageError:
    """Commands that take no argument, or exactly one service (optional for `status`)."""
    if verb == "list":
        if args:
            return UsageError(f"`/canary list` takes no arguments; remove `{_show(args[0])}`.")
        return ListRollouts()
    if verb == "status" and not args:
        return Status(None)
    if not args:
        return UsageError(f"`/canary {verb}` needs a service name. {_usage(verb)}")
    if len(args) > 1:
        return UsageError(
            f"`/canary {verb}` takes only a service name; remove `{_show(' '.join(args[1:]))}`. "
            + _usage(verb)
        )
    service = args[0]
    if verb == "status":
        return Status(service)
    if verb == "resume":
        return Resume(service)
    if verb == "promote":
        return Promote(service)
    return History(service)


def _with_reason(verb: str, rest: str) -> Command | UsageError:
    parts = rest.split(maxsplit=1)
    if not parts:
        return UsageError(f"`/canary {verb}` needs a service name. {_usage(verb)}")
    service = parts[0]
    reason = parts[1].strip() if len(parts) > 1 else ""
    if verb == "pause":
        return Pause(service, reason or None)
    return Rollback(service, reason or None)


def _start(args: list[str]) -> Command | UsageError:
    positionals: list[str] = []
    values: dict[str, str] = {}
    approval: bool | None = None
    index = 0
    while index < len(args):
        word = _DASHES.sub("--", args[index])
        index += 1
        if not word.startswith("-"):
            positionals.append(word)
            continue
        name, has_value, value = word.partition("=")
        if name not in _FLAGS:
            return _unknown_flag(name)
        if name in values or (name == "--no-approval" and approval is not None):
            return UsageError(f"`{name}` is given twice; give it once. {_usage('start')}")
        if name == "--no-approval":
            if has_value:
                return UsageError(
                    "`--no-approval` takes no value; write just `--no-approval`. " + _usage("start")
                )
            approval = False
            continue
        if not has_value:
            if index >= len(args) or args[index].startswith("-"):
                return _missing_value(name)
            value = args[index]
            index += 1
        if not value:
            return _missing_value(name)
        values[name] = value
    if len(positionals) < 2:
        missing = "a service and an image" if not positionals else "an image tag or reference"
        return UsageError(
            f"`/canary start` needs {missing}, e.g. `/canary start checkout v2.3.5`. "
            + _usage("start")
        )
    if len(positionals) > 2:
        return UsageError(
            f"`/canary start` takes one service and one image; remove "
            f"`{_show(' '.join(positionals[2:]))}`. " + _usage("start")
        )
    steps = _steps(values["--steps"]) if "--steps" in values else None
    if isinstance(steps, UsageError):
        return steps
    interval = _interval(values["--interval"]) if "--interval" in values else None
    if isinstance(interval, UsageError):
        return interval
    header, cookie = values.get("--header"), values.get("--cookie")
    if header is not None and not _HEADER.match(header):
        return UsageError(
            f"`{_show(header)}` is not a header match: write `--header name=value`, "
            "e.g. `--header x-user-tier=premium`. " + _usage("start")
        )
    if cookie is not None and not _COOKIE.match(cookie):
        return UsageError(
            f"`{_show(cookie)}` is not a cookie name: write `--cookie NAME`, "
            "e.g. `--cookie canary`. " + _usage("start")
        )
    return Start(positionals[0], positionals[1], steps, interval, approval, header, cookie)


def _unknown_flag(name: str) -> UsageError:
    close = difflib.get_close_matches(name.lower(), _FLAGS, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else f"the flags are {', '.join(_FLAGS)}. "
    return UsageError(f"`{_show(name)}` is not a flag of `/canary start`; {hint}{_usage('start')}")


def _missing_value(name: str) -> UsageError:
    example = "--steps 5,25,50" if name == "--steps" else "--interval 30m"
    return UsageError(f"`{name}` needs a value, e.g. `{example}`. {_usage('start')}")


def _steps(raw: str) -> tuple[int, ...] | UsageError:
    weights: list[int] = []
    for item in raw.split(","):
        number = item.strip().removesuffix("%")
        if not number:
            return UsageError(f"`--steps {_show(raw)}` has an empty step. {_STEPS_EXAMPLE}")
        if not number.isascii() or not number.isdigit():
            return UsageError(f"`{_show(item)}` in --steps is not a number. {_STEPS_EXAMPLE}")
        # Anything above 99 is refused below; capping keeps absurdly long digit strings cheap.
        weights.append(int(number) if len(number) <= 3 else 1000)
    try:
        return validate_steps(tuple(weights))
    except ValueError as error:
        return UsageError(f"--steps {_show(raw)}: {_show(str(error), 120)}. {_STEPS_EXAMPLE}")


def _interval(raw: str) -> timedelta | UsageError:
    try:
        interval = parse_duration(raw)
    except DurationError:
        return UsageError(f"`{_show(raw)}` after --interval is not a duration. {_INTERVAL_EXAMPLE}")
    if interval < timedelta(seconds=1):
        return UsageError(f"--interval must be at least 1s. {_INTERVAL_EXAMPLE}")
    return interval
