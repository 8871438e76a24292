"""The floor for `bench/ack.py`: a bare Bolt app on the bot's own HTTP server.

One listener that only acknowledges `/canary`, behind the same Flask route and waitress server
(`bot.server._Server`, same thread count) and with Bolt's default middleware (its own signature
check included). Whatever the bot takes beyond this is ours to explain; this is what Bolt, Flask
and waitress cost on this machine.

Run by `bench/ack.py` as a separate process: `python bench/ack_bare.py PORT SLACK_API_URL
[ANSWER_JSON]`. With ANSWER_JSON (the bot's own status answer, as Slack receives it) the
listener acknowledges with that message instead of an empty body: what answering with a
message costs a plain Bolt app, for comparison.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import common  # first: puts this clone on sys.path
from flask import Flask, Response, request
from slack_bolt import Ack, App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_sdk import WebClient

from bot.server import _Server  # the bot's own server class: the same waitress settings

HTTP_THREADS = 16  # bot.server.HttpServer's default


def bare_app(
    *, signing_secret: str, token: str, api_url: str, answer: dict[str, Any] | None = None
) -> Flask:
    client = WebClient(token=token, base_url=api_url, retry_handlers=[])
    app = App(
        signing_secret=signing_secret,
        client=client,
        process_before_response=True,
        token_verification_enabled=False,
    )

    @app.command("/canary")
    def acknowledge(ack: Ack) -> None:
        if answer is None:
            ack()
        else:
            ack(**answer)

    web = Flask("bare-bolt")
    handler = SlackRequestHandler(app)

    @web.post("/slack/events")
    def slack_events() -> Response:
        answer: Response = handler.handle(request)
        return answer

    @web.get("/healthz")
    def healthz() -> str:
        return "ok"

    return web


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    port, api_url = int(sys.argv[1]), sys.argv[2]
    web = bare_app(
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        token=os.environ["SLACK_BOT_TOKEN"],
        api_url=api_url,
        answer=json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else None,
    )
    server = _Server(web, host="127.0.0.1", port=port, threads=HTTP_THREADS, name="bare")
    print(f"bare Bolt app on {server.url} ({common.ROOT.name})", flush=True)
    server.start()
    server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
