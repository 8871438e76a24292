"""`canary-bot release SERVICE IMAGE [--wait]`: start a canary from a pipeline step.

Starts the rollout through the pipeline API (`/api/v1`, token from `CANARY_API_TOKEN`), then
with `--wait` follows it and prints one line per change (step, weight, verdict, approval asked,
who approved) until it ends. Exit status: 0 succeeded, 2 rolled back (the rule and the measured
value printed), 3 timeout or failure (including a refused start). Ctrl-C asks whether to roll
back. Connection errors are retried (tenacity); the start carries an `Idempotency-Key`, so a
retried POST starts one rollout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TextIO

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from rollout.durations import DurationError, format_duration, parse_duration

SUCCEEDED, ROLLED_BACK, FAILED = 0, 2, 3
TOKEN_ENV = "CANARY_API_TOKEN"
URL_ENV = "CANARY_API_URL"
REQUEST_TIMEOUT_S = 10.0
RETRY_ATTEMPTS = 6


class ReleaseError(Exception):
    """The release cannot go on; the message says why and what to do."""


def add_parser(sub: Any) -> None:
    release = sub.add_parser(
        "release",
        help="for CI: start a canary through the pipeline API (and --wait for its outcome)",
        description="Exit status: 0 succeeded, 2 rolled back, 3 timeout or failure.",
    )
    release.add_argument("service")
    release.add_argument("image", help="a tag (v2.3.5) or a full image reference")
    release.add_argument("--wait", action="store_true", help="follow it until it ends")
    release.add_argument("--timeout", default="2h", help="with --wait (default 2h)")
    release.add_argument("--api-url", help=f"the bot's main URL (default: ${URL_ENV})")
    release.add_argument("--steps", help="canary weights, like 5,25,50 (if the policy allows)")
    release.add_argument("--interval", help="time per step, like 30m (if the policy allows)")
    release.add_argument("--expected-digest", help="sha256:... the pipeline built")
    release.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="commit=, pipeline_url=, triggered_by= (default: from the CI's variables)",
    )
    release.add_argument(
        "--poll-interval", type=float, default=5.0, help="seconds between looks (default 5)"
    )


def ci_context(env: Mapping[str, str]) -> dict[str, str]:
    """What common CI systems say about the run: GitHub Actions, GitLab CI, Jenkins."""
    found: dict[str, str] = {}
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        found["pipeline_url"] = (
            f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        )
    commit = env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA") or env.get("GIT_COMMIT")
    url = found.get("pipeline_url") or env.get("CI_PIPELINE_URL") or env.get("BUILD_URL")
    who = env.get("GITHUB_ACTOR") or env.get("GITLAB_USER_LOGIN") or env.get("BUILD_USER_ID")
    for key, value in (("commit", commit), ("pipeline_url", url), ("triggered_by", who)):
        if value:
            found[key] = value
    return found


def _run_key(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """One key per pipeline run and release: a re-sent start (a retry of this step) finds
    the rollout it started. Outside CI, one per invocation."""
    run = env.get("GITHUB_RUN_ID") or env.get("CI_PIPELINE_ID") or env.get("BUILD_TAG")
    attempt = env.get("GITHUB_RUN_ATTEMPT", "")
    base = f"{run}.{attempt}" if run else uuid.uuid4().hex
    return f"{base}:{args.service}:{args.image}"[:200]


@dataclass
class Api:
    url: str
    token: str
    session: requests.Session

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """One request, retried on connection errors and timeouts (never on an answer)."""
        retrying = Retrying(
            retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout)),
            wait=wait_exponential(multiplier=0.5, max=10),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            reraise=True,
        )
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        try:
            answer: requests.Response = retrying(
                self.session.request,
                method,
                f"{self.url}{path}",
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
                **kw,
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ReleaseError(
                f"cannot reach the bot at {self.url} ({type(error).__name__}) after "
                f"{RETRY_ATTEMPTS} attempts; check --api-url / ${URL_ENV}"
            ) from None
        return answer

    def json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        answer = self.call(method, path, **kw)
        try:
            body: dict[str, Any] = answer.json()
        except ValueError:
            body = {}
        if answer.status_code >= 400:
            error = body.get("error") or {}
            raise ReleaseError(
                f"{answer.status_code} {error.get('code', 'error')}: "
                f"{error.get('message', answer.text[:300])}"
            )
        return body


def run(args: argparse.Namespace, *, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    try:
        api = _api(args, env)
        body = _start_body(args, env)
        timeout = _seconds(args.timeout)
        rollout = api.json(
            "POST",
            "/api/v1/rollouts",
            json=body,
            headers={"Idempotency-Key": _run_key(args, env)},
        )
        follower = Follower(api, rollout, out=out, poll=args.poll_interval)
        try:
            # Inside the try: a Ctrl-C any time after the start is confirmed asks.
            follower.say(
                f"started {rollout['id']}: {rollout['service']} -> {rollout['canary_image']}"
            )
            return follower.follow(timeout=timeout) if args.wait else SUCCEEDED
        except KeyboardInterrupt:
            return follower.interrupted()
    except ReleaseError as error:
        print(f"canary-bot release: {error}", file=err)
        return FAILED
    except KeyboardInterrupt:
        print("canary-bot release: interrupted before the start was confirmed", file=err)
        return FAILED


def _api(args: argparse.Namespace, env: Mapping[str, str]) -> Api:
    url = (args.api_url or env.get(URL_ENV) or "").rstrip("/")
    if not url:
        raise ReleaseError(
            f"no API URL: pass --api-url https://canary-bot.example or set {URL_ENV}"
        )
    token = env.get(TOKEN_ENV, "")
    if not token:
        raise ReleaseError(f"no token: set {TOKEN_ENV} to a token configured in api.tokens")
    return Api(url=url, token=token, session=requests.Session())


def _start_body(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    context = ci_context(env)
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or key not in ("commit", "pipeline_url", "triggered_by"):
            raise ReleaseError(
                f"--context {item!r}: use commit=SHA, pipeline_url=URL or triggered_by=NAME"
            )
        context[key] = value
    body: dict[str, Any] = {"service": args.service, "image": args.image, "context": context}
    if args.steps:
        try:
            body["steps"] = [int(step) for step in args.steps.split(",")]
        except ValueError:
            raise ReleaseError(f"--steps {args.steps!r}: use weights like 5,25,50") from None
    for key in ("interval", "expected_digest"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    return body


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except DurationError:
        raise ReleaseError(f"{text!r} is not a duration: use 30s, 10m, 2h") from None


class Follower:
    """Polls the rollout and prints what changed since the last look."""

    def __init__(
        self,
        api: Api,
        rollout: dict[str, Any],
        *,
        out: TextIO,
        poll: float,
        ask: Callable[[str], str] = input,
    ) -> None:
        self._api = api
        self._id = rollout["id"]
        self._out = out
        self._poll = poll
        self._ask = ask
        self._seen: dict[str, Any] = {}

    def follow(self, *, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            rollout = self._api.json("GET", f"/api/v1/rollouts/{self._id}")
            self._report(rollout)
            if rollout["done"] or rollout["phase"] == "failed":
                return self._outcome(rollout)
            if time.monotonic() >= deadline:
                self.say(
                    f"timed out after {_human(timeout)}: {self._id} is still "
                    f"{rollout['phase']} (it goes on; follow it in Slack)"
                )
                return FAILED
            time.sleep(self._poll)

    def _report(self, rollout: dict[str, Any]) -> None:
        """One line per change: a step once reached (and full traffic once promoted),
        verdict, approval asked, who approved, phase (from `progressing` on)."""
        seen = self._seen
        step, weight, steps = rollout["step"], rollout["weight"], rollout["steps"]
        # Announced when the step is reached (as in Slack), with the weight read back.
        if step > 0 and rollout["step_ready"] and step != seen.get("step"):
            self.say(f"step {step}/{len(steps)}: canary at {weight:g}%")
            seen["step"] = step
        if weight >= 100 and not seen.get("full"):
            self.say("canary at 100%: stable is being updated")
            seen["full"] = True
        if rollout["verdict"] and rollout["verdict"] != seen.get("verdict"):
            self.say(f"analysis: {rollout['verdict'].replace('_', ' ')}")
        if rollout["approval_requested"] and not seen.get("asked"):
            self.say("approval asked in Slack")
        for person in rollout["approvals"]:
            if person not in seen.get("approvals", ()):
                self.say(f"approved by {person}")
        if rollout["phase"] not in (seen.get("phase"), "pending"):
            self.say(f"phase: {rollout['phase'].replace('_', ' ')}")
        seen.update(
            verdict=rollout["verdict"],
            asked=rollout["approval_requested"],
            approvals=tuple(rollout["approvals"]),
            phase=rollout["phase"],
        )

    def _outcome(self, rollout: dict[str, Any]) -> int:
        if rollout["phase"] == "succeeded":
            self.say(f"succeeded: {rollout['service']} runs {rollout['canary_image']}")
            return SUCCEEDED
        if rollout["phase"] == "rolled_back":
            if rollout.get("breach"):
                self.say(f"rolled back: rule breached: {rollout['breach']}")
            else:
                self.say(f"rolled back: {rollout.get('reason') or 'no reason given'}")
            return ROLLED_BACK
        self.say(f"failed: {rollout.get('reason') or rollout['phase']} (see the Slack thread)")
        return FAILED

    def interrupted(self) -> int:
        try:
            answer = self._ask(f"\nInterrupted. Roll back {self._id}? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            self.say(f"left running: {self._id} goes on; follow or roll it back in Slack")
            return FAILED
        self._api.json(
            "POST",
            f"/api/v1/rollouts/{self._id}/rollback",
            json={"reason": "interrupted in the pipeline"},
        )
        self.say(f"rollback requested for {self._id}")
        return ROLLED_BACK

    def say(self, line: str) -> None:
        print(line, file=self._out, flush=True)


def _human(seconds: float) -> str:
    return format_duration(timedelta(seconds=int(seconds)))


def run_from_cli(args: argparse.Namespace) -> int:
    return run(args, env=os.environ, out=sys.stdout, err=sys.stderr)
