"""The API's one error shape, `{"error": {"code", "message"}}`, for every refusal."""

from __future__ import annotations

from flask import Response, jsonify, request
from pydantic import ValidationError


class ApiError(Exception):
    """A refusal: the status, a stable code a pipeline can branch on, and a message that says
    what is wrong and how to do it right. Raised before anything is changed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    answer = jsonify(error={"code": code, "message": message})
    answer.status_code = status
    return answer


def validation_error(error: ValidationError) -> Response:
    """flask-openapi3's callback for a request its models refuse: 400 for a body that is not
    JSON at all, else 422 naming the first field that is wrong and why."""
    if request.get_data(cache=True) and request.get_json(silent=True) is None:
        return error_response(
            400,
            "malformed_json",
            "The body is not JSON: send a JSON object, like "
            '{"service": "checkout", "image": "v2.3.5"}, with Content-Type: application/json.',
        )
    problems = error.errors(include_url=False)
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = f"{where}: {first['msg']}{more}. See /api/v1/openapi.json for the request schema."
    return error_response(422, "invalid_request", message)
