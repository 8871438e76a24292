"""Where an acknowledgement's CPU goes: the bot's WSGI app next to the bare Bolt app's.

`bench/ack.py` times both servers from outside; this script looks inside. In one process it
builds the bot's runtime on a sandbox (emulated cluster and Slack, one rollout at its first
step) and the bare Bolt app of `bench/ack_bare.py`, then calls each WSGI app directly with
the same signed `/canary status checkout` request, one at a time on one thread: no waitress,
no other request, no background work beside it. It prints each app's CPU per request and,
from cProfile, the functions the bot spends time in that the bare app does not (call counts
per request side by side), so what is ours and what is Bolt's can be told apart.

Run: `python bench/ack_profile.py` (about 20 s); `--requests N`, `--top N`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import common  # first: puts this clone on sys.path
from ack import signed_command
from ack_bare import bare_app
from werkzeug.test import EnvironBuilder

from bot.server import create_web_app
from canary_sandbox.sandbox import ALICE, BOT_TOKEN, RELEASE_CHANNEL, SIGNING_SECRET, Sandbox

Wsgi = Callable[[dict[str, Any], Any], Iterable[bytes]]


def call(app: Wsgi, environ: dict[str, Any]) -> int:
    """One request through a WSGI app as waitress would make it: body read, iterable closed."""
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> None:
        status.append(line)

    result = app(dict(environ, **{"wsgi.input": io.BytesIO(environ["_body"])}), start_response)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0])


def environ_for(box: Sandbox, text: str) -> dict[str, Any]:
    body, headers = signed_command(box, text)
    environ = EnvironBuilder(
        path="/slack/events", method="POST", data=body, headers=headers
    ).get_environ()
    environ["_body"] = body
    return environ


def cpu_per_request(app: Wsgi, environ: dict[str, Any], requests: int) -> float:
    """Milliseconds of this process's CPU per request, the best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(requests):
            call(app, environ)
        best = min(best, (time.process_time() - started) * 1000 / requests)
    return best


def profile(app: Wsgi, environ: dict[str, Any], requests: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        call(app, environ)
    profiler.disable()
    return pstats.Stats(profiler)


def per_function(stats: pstats.Stats, requests: int) -> dict[str, tuple[float, float, float]]:
    """name -> (calls, own ms, cumulative ms), per request."""
    table: dict[str, tuple[float, float, float]] = {}
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = _short(file)
        key = f"{where}:{line}({name})" if where != "~" else name
        table[key] = (calls / requests, own * 1000 / requests, cumulative * 1000 / requests)
    return table


def _short(file: str) -> str:
    for marker in ("site-packages/", str(common.ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ack-profile-") as tmp:
        box = Sandbox(workdir=Path(tmp))
        box.start()
        try:
            box.start_bot()
            box.driver.command("start checkout v2.3.5", user=ALICE, channel=RELEASE_CHANNEL)
            box.drain()
            assert box.runtime is not None
            bot = create_web_app(box.runtime).wsgi_app
            bare = bare_app(
                signing_secret=SIGNING_SECRET, token=BOT_TOKEN, api_url=box.slack.api_url
            ).wsgi_app
            environ = environ_for(box, "status checkout")
            for app in (bot, bare):
                assert call(app, environ) == 200
            report(bot=bot, bare=bare, environ=environ, requests=args.requests, top=args.top)
        finally:
            box.stop()
    return 0


def report(*, bot: Wsgi, bare: Wsgi, environ: dict[str, Any], requests: int, top: int) -> None:
    cpu = {
        name: cpu_per_request(app, environ, requests)
        for name, app in (("bot", bot), ("bare", bare))
    }
    print(
        f"CPU per request, one thread, no server: bot {cpu['bot']:.3f} ms, "
        f"bare Bolt app {cpu['bare']:.3f} ms (+{cpu['bot'] - cpu['bare']:.3f} ms)"
    )
    tables = {
        name: per_function(profile(app, environ, requests), requests)
        for name, app in (("bot", bot), ("bare", bare))
    }
    print(f"\nfunctions by own time in the bot (cProfile, per request; {requests} requests)")
    print(f"{'own ms':>7} {'cum ms':>7} {'calls':>6} {'bare calls':>10}  function")
    rows = sorted(tables["bot"].items(), key=lambda item: -item[1][1])[:top]
    for key, (calls, own, cumulative) in rows:
        bare_calls = tables["bare"].get(key, (0.0, 0.0, 0.0))[0]
        print(f"{own:7.4f} {cumulative:7.4f} {calls:6.1f} {bare_calls:10.1f}  {key}")
    print("\nthe bot's own code (not in site-packages), by cumulative time per request")
    ours = [
        (key, value)
        for key, value in tables["bot"].items()
        if key.split(":")[0].split("/")[0] in {"bot", "handlers", "rollout"}
    ]
    for key, (calls, own, cumulative) in sorted(ours, key=lambda item: -item[1][2])[:top]:
        print(f"{own:7.4f} {cumulative:7.4f} {calls:6.1f}  {key}")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
