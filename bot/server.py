"""The HTTP side: Slack's `POST /slack/events`, `GET /healthz` and `GET /metrics`.

Flask routes behind waitress, a production WSGI server with a thread pool: Bolt acknowledges
on the request thread and runs the slow part of a listener on its own executor, so a slow
cluster never holds up the HTTP answer Slack is waiting for.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from jsonschema import Draft202012Validator
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_bolt.request.internals import parse_body
from waitress.server import BaseWSGIServer, create_server
from werkzeug.exceptions import RequestEntityTooLarge

from bot.runtime import Runtime

log = logging.getLogger(__name__)

# Slack's payloads are a few KB; anything far larger is not from Slack.
MAX_BODY_BYTES = 256 * 1024

# The fields of Slack's interaction payloads that Bolt and the listeners read, with the types
# Slack sends them as (https://api.slack.com/reference/interaction-payloads).
_TEXT: dict[str, Any] = {"type": "string"}
_OBJECT: dict[str, Any] = {"type": "object"}
_PAYLOAD = Draft202012Validator(
    {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": _TEXT,
            "user": {"type": "object", "required": ["id"], "properties": {"id": _TEXT}},
            "team": {"type": ["object", "null"], "properties": {"id": _TEXT}},
            "enterprise": {"type": ["object", "string", "null"]},
            "authorizations": {"type": "array", "items": _OBJECT},
            "is_enterprise_install": {"type": ["boolean", "string"]},
            "api_app_id": _TEXT,
            "token": _TEXT,
            "trigger_id": _TEXT,
            "response_url": _TEXT,
            "channel": {"type": "object", "properties": {"id": _TEXT}},
            "container": _OBJECT,
            "message": _OBJECT,
            "actions": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["action_id"],
                    "properties": {
                        "action_id": _TEXT,
                        "block_id": _TEXT,
                        "action_ts": _TEXT,
                        "value": _TEXT,
                    },
                },
            },
            "view": {
                "type": "object",
                "required": ["callback_id"],
                "properties": {
                    "callback_id": _TEXT,
                    "private_metadata": _TEXT,
                    "state": {
                        "type": "object",
                        "properties": {
                            "values": {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": "object",
                                        "properties": {"value": {"type": ["string", "null"]}},
                                    },
                                },
                            }
                        },
                    },
                },
            },
        },
        "allOf": [
            {
                "if": {"properties": {"type": {"const": "block_actions"}}},
                "then": {"required": ["user", "actions"]},
            },
            {
                "if": {"properties": {"type": {"const": "view_submission"}}},
                "then": {"required": ["user", "view"]},
            },
        ],
    }
)
_COMMAND_FIELDS = ("command", "user_id", "channel_id")


def create_web_app(runtime: Runtime) -> Flask:
    web = Flask("canary-bot")
    web.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    slack = SlackRequestHandler(runtime.app)
    metrics = runtime.metrics
    metrics.watch_audit(Path(runtime.store.path))

    @web.post("/slack/events")
    def slack_events() -> Response:
        started = time.perf_counter()
        response = _slack_answer(slack)
        # Group memberships a check found missing or ageing are fetched once this answer
        # has been sent: nothing Slack waits for calls Slack.
        response.call_on_close(runtime.directory.wake)
        metrics.ack_seconds.observe(time.perf_counter() - started)
        metrics.requests.labels(status=str(response.status_code)).inc()
        return response

    @web.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            active = len(runtime.store.active())
        except Exception as error:  # the database is the one thing the bot cannot do without
            return jsonify(ok=False, error=f"store: {type(error).__name__}"), 503
        return jsonify(ok=True, active_rollouts=active), 200

    @web.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    return web


def _slack_answer(slack: SlackRequestHandler) -> Response:
    """Bolt's answer, or a 4xx for a body that cannot be a Slack request (never a 500).

    Bolt reads the body before it checks the signature, and trusts its shape; the listeners
    trust it too. So the shape of what Slack always sends is checked here first: a body that
    is not Slack's is refused whole, whoever signed it, and nothing reads it further.
    """
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _refusal(413, "request body too large")
    stamp = request.headers.get("X-Slack-Request-Timestamp", "")
    if not (stamp.isascii() and stamp.isdigit()):
        return _refusal(401, "invalid request")  # Bolt would fail on int() of it: a 500
    try:
        body = request.get_data(as_text=True)
    except RequestEntityTooLarge:  # no Content-Length (chunked): found out while reading
        return _refusal(413, "request body too large")
    problem = envelope_problem(body, content_type=request.mimetype)
    if problem:
        return _refusal(400, problem)
    try:
        answer: Response = slack.handle(request)
    except Exception as error:  # Bolt could not read a body of a shape it did not expect
        log.warning("unreadable Slack request: %s", type(error).__name__)
        return _refusal(400, "unreadable request body")
    return answer


def envelope_problem(body: str, *, content_type: str) -> str | None:
    """What makes `body` not a Slack command or interaction, read the way Bolt reads it."""
    try:
        data = parse_body(body, content_type)
    except ValueError:
        return "malformed request body"
    if not isinstance(data, dict):
        return "the request body is not an object"
    if "type" in data:  # an interaction payload (or an Events API body: same envelope)
        errors = sorted(_PAYLOAD.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(map(str, errors[0].absolute_path)) or "payload"
            return f"malformed interaction payload at {where}"
    elif "command" in data and not all(isinstance(data.get(k), str) for k in _COMMAND_FIELDS):
        return "a slash command needs " + ", ".join(_COMMAND_FIELDS)
    return None


def _refusal(status: int, error: str) -> Response:
    answer = jsonify(error=error)
    answer.status_code = status
    return answer


class HttpServer:
    """waitress in a background thread, so the CLI, the demo and tests share one code path."""

    def __init__(self, runtime: Runtime, *, host: str, port: int, threads: int = 16) -> None:
        server = create_server(
            create_web_app(runtime), host=host, port=port, threads=threads, ident="canary-bot"
        )
        assert isinstance(server, BaseWSGIServer)  # one host and port: never a multi-socket one
        self._server = server
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            # Closing the listening socket from another thread wakes the loop on a dead file
            # descriptor; that is the expected way out once stop() was called.
            if not self._stopping.is_set():
                raise

    @property
    def url(self) -> str:
        sock = self._server.socket
        assert sock is not None  # bound in create_server
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)
