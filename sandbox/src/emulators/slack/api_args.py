"""Reading Web API arguments the way Slack does, whatever encoding the client chose.

slack_sdk sends some methods as JSON and others as form fields (where lists and objects arrive
as JSON strings and booleans as "true"/"1"); the handlers should not care which.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from emulators.slack.records import JsonObject


class SlackError(Exception):
    """Ends a method with `{"ok": false, "error": ...}` and any extra fields Slack adds."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def missing(name: str) -> SlackError:
    return SlackError(
        "invalid_arguments",
        response_metadata={"messages": [f"[ERROR] missing required field: {name}"]},
    )


class Args:
    """The merged query, form and JSON arguments of one call."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def get(self, name: str) -> Any:
        value = self._values.get(name)
        return None if value == "" else value

    def text(self, name: str) -> str | None:
        value = self.get(name)
        return None if value is None else str(value)

    def require(self, name: str, *, error: str | None = None) -> str:
        value = self.text(name)
        if value is None:
            raise SlackError(error) if error else missing(name)
        return value

    def flag(self, name: str) -> bool:
        value = self.get(name)
        if isinstance(value, bool):
            return value
        return str(value).lower() in {"1", "true", "yes"}

    def integer(self, name: str) -> int:
        value = self.require(name)
        try:
            return int(value)
        except ValueError:
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] {name} must be an integer"]},
            ) from None

    def json_value(self, name: str, *, error: str = "invalid_arguments") -> Any:
        """A list or object that may have been sent as a JSON string (form encoding)."""
        value = self.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise SlackError(error) from None
        return value

    def json_object(self, name: str) -> JsonObject:
        value = self.json_value(name)
        if not isinstance(value, dict):
            raise missing(name) if value is None else SlackError("invalid_arguments")
        return value
