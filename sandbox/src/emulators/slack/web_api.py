"""The HTTP face of the emulator: Slack's Web API, the upload URLs and the response URLs.

It answers the way slack.com does where a client can tell the difference: HTTP 200 with
`ok: false` for API errors, 429 with `Retry-After` for rate limits, `not_authed` / `invalid_auth`
before anything else runs, and arguments accepted as query, form or JSON alike, because
slack_sdk uses all three. Every call is recorded, faulted ones included.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from emulators.slack import response_urls
from emulators.slack.api_args import Args, SlackError
from emulators.slack.faults import RATE_LIMITED, SlackFaults
from emulators.slack.limits import SlackRateLimits
from emulators.slack.methods import METHODS
from emulators.slack.methods.files import receive_bytes
from emulators.slack.records import ApiCall, JsonObject
from emulators.slack.state import Workspace


def build_app(
    ws: Workspace,
    faults: Callable[[], SlackFaults],
    limits: Callable[[], SlackRateLimits | None] = lambda: None,
) -> Flask:
    """`faults` and `limits` are asked on every call, so a test may swap or set them."""
    app = Flask("slack_emulator")

    @app.route("/api/<method>", methods=["GET", "POST"])
    def api(method: str) -> Response:
        at, wall = time.monotonic(), time.time()
        status = 200
        body: JsonObject = {}
        args: dict[str, Any] = {}
        retry_after: int | None = None  # set when the enforced rate limits refuse the call
        faults().wait_if_held(method)  # outside the lock: only this call waits
        # One lock hold for handling and recording, so `calls` is in the order Slack acted.
        with ws.lock:
            try:
                args = _arguments()
            except SlackError as error:
                body = {"ok": False, "error": error.error}
            else:
                token = _bearer() or args.pop("token", None)
                enforced = limits()
                if enforced is not None and token == ws.bot_token:
                    retry_after = enforced.admit(method, args)
                if retry_after is not None:
                    status, body = 429, {"ok": False, "error": RATE_LIMITED}
                else:
                    status, body = _dispatch(ws, faults(), method=method, token=token, args=args)
            ws.calls.append(
                ApiCall(
                    method=method,
                    args=args,
                    at=at,
                    wall=wall,
                    ok=bool(body.get("ok")),
                    error=body.get("error"),
                    status=status,
                    response=body,
                )
            )
        held = faults().delay(method)
        if held > 0:
            time.sleep(held)  # outside the workspace lock: other calls go on meanwhile
        response = Response(json.dumps(body), status=status, mimetype="application/json")
        if status == 429:
            wait = retry_after if retry_after is not None else faults().retry_after
            response.headers["Retry-After"] = str(wait)
        return response

    @app.post("/upload/v1/<file_id>")
    def upload(file_id: str) -> Response:
        # slack_sdk POSTs the raw bytes; other clients send multipart with a `file` part.
        content = request.get_data()
        if request.mimetype == "multipart/form-data":
            part = request.files.get("file") or request.files.get("filename")
            content = part.read() if part is not None else b""
        status, text = receive_bytes(ws, file_id, content)
        return Response(text, status=status, mimetype="text/plain")

    @app.post("/actions/<team_id>/<key>")
    def respond(team_id: str, key: str) -> Response:
        try:
            body = json.loads(request.get_data() or b"{}")
        except json.JSONDecodeError:
            return Response("invalid_payload", status=400, mimetype="text/plain")
        if not isinstance(body, dict):
            return Response("invalid_payload", status=400, mimetype="text/plain")
        status, text = response_urls.receive(ws, key=key, url=request.url, body=body)
        return Response(text, status=status, mimetype="text/plain")

    return app


def _arguments() -> dict[str, Any]:
    args: dict[str, Any] = dict(request.args.to_dict())
    if request.mimetype == "application/json":
        try:
            payload = json.loads(request.get_data() or b"{}")
        except json.JSONDecodeError:
            raise SlackError("invalid_json") from None
        if not isinstance(payload, dict):
            raise SlackError("invalid_json")
        args.update(payload)
    else:
        args.update(request.form.to_dict())
    return args


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _dispatch(
    ws: Workspace, faults: SlackFaults, *, method: str, token: Any, args: dict[str, Any]
) -> tuple[int, JsonObject]:
    handler = METHODS.get(method)
    if handler is None:
        return 200, {"ok": False, "error": "unknown_method", "req_method": method}
    if not token:
        return 200, {"ok": False, "error": "not_authed"}
    if token != ws.bot_token:
        return 200, {"ok": False, "error": "invalid_auth"}
    fault = faults.draw(method)
    if fault is not None:
        return (429 if fault == RATE_LIMITED else 200), {"ok": False, "error": fault}
    try:
        return 200, {"ok": True, **handler(ws, Args(args))}
    except SlackError as error:
        return 200, {"ok": False, "error": error.error, **error.extra}


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug logs every request to stderr; tests make thousands, so stay silent."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class ServerThread:
    """A threaded werkzeug server on 127.0.0.1 with a port the OS chose, stoppable at once."""

    def __init__(self, app: Flask) -> None:
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        # A short poll interval: stop() waits for the serving loop to notice, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="slack-emulator",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
