"""The pipeline API (`/api/v1`): start, follow and roll back rollouts from CI.

Its own WSGI app, built with flask-openapi3 from the pydantic models in `models`, so the
OpenAPI document served at `/api/v1/openapi.json` is the one the requests are checked against.
`bot.server` mounts it on the main port beside `/slack/events`.
"""

from handlers.api.app import create_api_app
from handlers.api.services import ApiServices
from handlers.api.tokens import ApiTokens

__all__ = ["ApiServices", "ApiTokens", "create_api_app"]
