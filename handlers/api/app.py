"""The pipeline API's WSGI app: authentication, error shape, and the OpenAPI document.

Every request but the document's needs a bearer token (`tokens`); every refusal is one JSON
error (`errors`) and one log line naming the token, never its value. The routes are in
`routes`.
"""

from __future__ import annotations

import logging

from flask import Response, g, request
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI
from werkzeug.exceptions import HTTPException

from handlers.api import routes
from handlers.api.errors import ApiError, error_response, validation_error
from handlers.api.models import ErrorOut
from handlers.api.services import ApiServices
from handlers.api.tokens import ApiTokens

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
DOCUMENT = f"{PREFIX}/openapi.json"
# Only the document is served without a token (flask-openapi3's UI index page is not).


def create_api_app(services: ApiServices, *, max_body_bytes: int) -> OpenAPI:
    api = OpenAPI(
        "canary-bot-api",
        info=Info(
            title="canary-bot pipeline API",
            version="1",
            description="Start a canary from CI, follow it, roll it back; approve in Slack.",
        ),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        responses={401: ErrorOut, 403: ErrorOut},
        validation_error_status=422,
        validation_error_model=ErrorOut,
        validation_error_callback=validation_error,
        doc_prefix=PREFIX,
        doc_url="/openapi.json",
        static_folder=None,
    )
    api.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    _authenticate(api, services.tokens)
    _answer_errors(api)
    routes.register(api, services)
    return api


def _authenticate(api: OpenAPI, tokens: ApiTokens) -> None:
    @api.before_request
    def bearer() -> Response | None:
        if request.path == DOCUMENT or not request.path.startswith(PREFIX):
            return None
        token = tokens.find(request.headers.get("Authorization"))
        if token is None:
            log.warning("refused %s %s: 401 no valid API token", request.method, request.path)
            return error_response(
                401,
                "unauthorized",
                "No valid API token: send `Authorization: Bearer <token>` with the value of "
                "a token configured in api.tokens (its token_env variable in the bot's Secret).",
            )
        g.token = token
        return None


def _answer_errors(api: OpenAPI) -> None:
    @api.errorhandler(ApiError)
    def refused(error: ApiError) -> Response:
        name = getattr(g, "token", None)
        who = name.name if name is not None else "-"
        log.warning(
            "refused %s %s for %s: %d %s",
            request.method,
            request.path,
            who,
            error.status,
            error.code,
        )
        return error_response(error.status, error.code, error.message)

    @api.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.response is not None:  # flask-openapi3's validation answer (abort(response))
            answer: Response = error.response  # type: ignore[assignment]
            return answer
        code = error.code or 500
        if code >= 500:
            return error_response(code, "internal_error", "Internal error; try again.")
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        hint = f" See {DOCUMENT} for the API's paths and methods." if code in (404, 405) else ""
        text = (error.description or error.name).rstrip(".")
        return error_response(code, codes.get(code, "bad_request"), f"{text}.{hint}")
