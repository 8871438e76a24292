"""The HTTP side: two servers, so that the public ingress exposes only what Slack needs.

- main port (`server.port`): `POST /slack/events` and a plain `GET /healthz` for load
  balancers; never `/metrics`.
- admin port (`server.admin_port`): `GET /healthz` (alive), `GET /readyz` (reconciled) and
  `GET /metrics`, for the kubelet and Prometheus inside the cluster.

Flask routes behind waitress, a production WSGI server with a thread pool: Bolt acknowledges
on the request thread and runs the slow part of a listener on its own executor, so a slow
cluster never holds up the HTTP answer Slack is waiting for. waitress itself refuses a body
over the limit as soon as it has read the headers (or, when chunked, once the limit is
crossed), so an oversized body is neither buffered in memory nor spooled to disk.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from jsonschema import Draft202012Validator
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.flask.handler import to_flask_response
from slack_bolt.request.internals import parse_body
from slack_sdk.signature import SignatureVerifier
from waitress.server import BaseWSGIServer, create_server
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bot.logging_setup import install_redaction
from bot.runtime import Runtime
from handlers.api import ApiServices, ApiTokens, create_api_app

log = logging.getLogger(__name__)

# Slack's payloads are a few KB; anything far larger is not from Slack.
MAX_BODY_BYTES = 256 * 1024
# Slack's rule: a request signed more than five minutes from now (either way) is refused.
SIGNATURE_MAX_AGE_S = 5 * 60
# waitress keeps a request body in memory up to this size before it spools it to a temporary
# file; above MAX_BODY_BYTES, so a body the bot accepts never touches the disk.
_IN_MEMORY_BYTES = 2 * MAX_BODY_BYTES

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
    """The main port: what Slack (and a load balancer in front of the bot) reaches."""
    web = Flask("canary-bot")
    web.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    _mount_pipeline_api(web, runtime)
    metrics = runtime.metrics
    _answer_http_errors_plainly(web)
    # The request counter of each HTTP status, looked up once (`labels` takes a lock and
    # builds its key on every call, on the path of every acknowledgement).
    counted: dict[int, Any] = {}

    @web.post("/slack/events")
    def slack_events() -> Response:
        started = time.perf_counter()
        with runtime.foreground.serving():  # background work waits for this answer
            response = _slack_answer(runtime.app, runtime.signatures)
        # Group memberships a check found missing or ageing are fetched once this answer
        # has been sent: nothing Slack waits for calls Slack.
        response.call_on_close(runtime.directory.wake)
        metrics.ack_seconds.observe(time.perf_counter() - started)
        code = response.status_code
        counter = counted.get(code)
        if counter is None:
            counter = counted[code] = metrics.requests.labels(status=str(code))
        counter.inc()
        return response

    @web.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return _alive(runtime)

    return web


def _mount_pipeline_api(web: Flask, runtime: Runtime) -> None:
    """`/api/v1/...` goes to the pipeline API's own app (handlers/api), the rest to `web`:
    one port, one body limit, two apps that share nothing but the runtime."""
    tokens = ApiTokens.from_env(runtime.config.api, runtime.env)
    install_redaction(*tokens.secrets)
    services = ApiServices(
        engine=runtime.engine, clock=runtime.clock, tokens=tokens, later=runtime.after_answer
    )
    api = create_api_app(services, max_body_bytes=MAX_BODY_BYTES).wsgi_app
    slack = web.wsgi_app

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        path: str = environ.get("PATH_INFO", "")
        return (api if path.startswith("/api/") else slack)(environ, start_response)

    web.wsgi_app = dispatch  # type: ignore[method-assign]


def create_admin_app(runtime: Runtime) -> Flask:
    """The admin port: probes and the bot's own metrics, never exposed by the public ingress."""
    web = Flask("canary-bot-admin")
    metrics = runtime.metrics
    metrics.watch_audit(runtime.store.audit_after)
    _answer_http_errors_plainly(web)

    @web.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return _alive(runtime)

    @web.get("/readyz")
    def readyz() -> tuple[Response, int]:
        # 503 until start-up reconciliation has finished: the pod gets no Slack traffic and
        # the kubelet's startupProbe waits, but liveness (/healthz) is never at stake.
        ready = runtime.ready
        return jsonify(ready=ready, status=runtime.readiness), 200 if ready else 503

    @web.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    return web


def _alive(runtime: Runtime) -> tuple[Response, int]:
    """Liveness: the process answers and its database is readable; nothing waits on the cluster."""
    try:
        active = len(runtime.store.active())
    except Exception as error:  # the database is the one thing the bot cannot do without
        return jsonify(ok=False, error=f"store: {type(error).__name__}"), 503
    return jsonify(ok=True, active_rollouts=active), 200


def _answer_http_errors_plainly(web: Flask) -> None:
    """Flask's own 404/405/413 as one JSON answer and one log line (no HTML, no traceback)."""

    @web.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if code >= 500:  # a defect of the bot, not of the request: Flask logged it already
            return _refusal(code, "internal error", log_it=False)
        return _refusal(code, (error.description or error.name).rstrip("."))


def _slack_answer(app: App, signatures: SignatureVerifier) -> Response:
    """Bolt's answer, or a 4xx for a request that cannot be Slack's (never a 500).

    The signature is checked on the raw bytes before anything parses them: an unsigned body
    costs the bot one HMAC and nothing else, however it is built. Bolt trusts the shape of
    what it reads, and so do the listeners; so the shape of what Slack always sends is then
    checked here, on the very dict Bolt parsed (the body is parsed once: parsing it a second
    time for this check cost each acknowledgement about 15 us, bench/ack.py): a signed body
    that is not Slack's is refused whole, and no listener reads it.
    """
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _refusal(413, "request body too large")
    stamp = request.headers.get("X-Slack-Request-Timestamp", "")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return _refusal(401, "invalid request")  # Bolt would fail on int() of it: a 500
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:  # no Content-Length (chunked): found out while reading
        return _refusal(413, "request body too large")
    if not _signed(
        signatures, raw, timestamp=stamp, signature=request.headers.get("X-Slack-Signature")
    ):
        return _refusal(401, "invalid request")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _refusal(400, "the request body is not UTF-8 text")
    try:
        bolt_request = BoltRequest(
            body=body,
            query=request.query_string.decode("utf-8"),
            headers=request.headers,  # type: ignore[arg-type]  # Bolt reads any mapping
        )
    except Exception as error:  # Bolt could not read it: say what is wrong with the body
        problem = envelope_problem(body, content_type=request.mimetype)
        return _refusal(400, problem or "unreadable request body", cause=type(error).__name__)
    problem = payload_problem(bolt_request.body)
    if problem:
        return _refusal(400, problem)
    try:
        answer = app.dispatch(bolt_request)
    except Exception as error:  # Bolt could not read a body of a shape it did not expect
        return _refusal(400, "unreadable request body", cause=type(error).__name__)
    return to_flask_response(answer)


def _signed(
    verifier: SignatureVerifier, raw: bytes, *, timestamp: str, signature: str | None
) -> bool:
    """Slack's v0 signature over the raw bytes, made within five minutes of now.

    Computed here on bytes, as Slack signs them: slack_sdk's verifier decodes the body as
    UTF-8 first, which fails (a 500) on a body that is not UTF-8, before any signature is known.
    """
    if signature is None or abs(verifier.clock.now() - int(timestamp)) > SIGNATURE_MAX_AGE_S:
        return False
    base = b"v0:" + timestamp.encode() + b":" + raw
    expected = hmac.new(verifier.signing_secret.encode(), base, hashlib.sha256).hexdigest()
    # WSGI hands headers over as latin-1 text, so this encoding never fails.
    return hmac.compare_digest(f"v0={expected}".encode(), signature.encode("latin-1"))


def envelope_problem(body: str, *, content_type: str) -> str | None:
    """What makes `body` not a Slack command or interaction, read the way Bolt reads it."""
    try:
        data = parse_body(body, content_type)
    except (ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        return "malformed request body"
    return payload_problem(data)


def payload_problem(data: object) -> str | None:
    """What makes a parsed body not a Slack command or interaction payload."""
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


def _refusal(status: int, error: str, *, cause: str | None = None, log_it: bool = True) -> Response:
    """A 4xx with a JSON reason, and exactly one log line saying what was refused and why."""
    if log_it:
        why = f"{error} ({cause})" if cause else error
        log.warning("refused %s %s: %d %s", request.method, request.path, status, why)
    answer = jsonify(error=error)
    answer.status_code = status
    return answer


class _Server:
    """waitress in a background thread, so the CLI, the demo and tests share one code path."""

    def __init__(self, web: Flask, *, host: str, port: int, threads: int, name: str) -> None:
        server = create_server(
            web,
            host=host,
            port=port,
            threads=threads,
            ident="canary-bot",
            # waitress answers 413 itself, from the Content-Length before reading the body, or
            # while reading a chunked one; it refuses a body of this size or more.
            max_request_body_size=MAX_BODY_BYTES + 1,
            inbuf_overflow=_IN_MEMORY_BYTES,
        )
        assert isinstance(server, BaseWSGIServer)  # one host and port: never a multi-socket one
        self._server = server
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
        # Python runs a signal handler in the main thread only, once that thread is between
        # bytecodes. A blocking join is woken by a signal delivered to this thread, but not by
        # one the kernel gave another thread, nor by one landing just before the join blocks:
        # either would leave SIGTERM unanswered until the kubelet's SIGKILL. Waking twice a
        # second runs such a handler.
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)


class HttpServer(_Server):
    """The main port: `/slack/events` and a plain `/healthz`."""

    def __init__(self, runtime: Runtime, *, host: str, port: int, threads: int = 16) -> None:
        super().__init__(
            create_web_app(runtime), host=host, port=port, threads=threads, name="http"
        )


class AdminServer(_Server):
    """The admin port: `/healthz`, `/readyz`, `/metrics`; a few threads are plenty."""

    def __init__(self, runtime: Runtime, *, host: str, port: int, threads: int = 4) -> None:
        super().__init__(
            create_admin_app(runtime), host=host, port=port, threads=threads, name="admin"
        )
