"""The `api:` section of the config: the pipeline API's channel and its bearer tokens, each
naming the environment variable that holds its secret, the services and the verbs it may use.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from rollout.config_base import CHANNEL, Frozen, check_ids, env_name

ApiVerb = Literal["start", "read", "rollback"]
_TOKEN_NAME = re.compile(r"^[a-z0-9][a-z0-9:._/-]{0,62}$")


class ApiToken(Frozen):
    """One pipeline's bearer token: its name is the actor in the audit log and on the card;
    the secret itself is read from the environment variable `token_env` (a Secret)."""

    name: str
    token_env: str
    services: tuple[str, ...] = Field(min_length=1)
    verbs: tuple[ApiVerb, ...] = ("start", "read", "rollback")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOKEN_NAME.match(value):
            raise ValueError(
                f"{value!r}: name a token in lower case, like ci:github-actions (letters, "
                "digits and : . _ / -); it is shown as the actor, never as a Slack mention"
            )
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        checked = env_name(value)
        assert checked is not None
        return checked

    def may(self, verb: str, service: str) -> bool:
        return verb in self.verbs and ("*" in self.services or service in self.services)


class ApiConfig(Frozen):
    """The pipeline API (`/api/v1`): where its rollouts are announced, and who may call it."""

    channel: str | None = None
    tokens: tuple[ApiToken, ...] = ()

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        return check_ids(value, CHANNEL, "channel")

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: tuple[ApiToken, ...]) -> tuple[ApiToken, ...]:
        names = [token.name for token in tokens]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"token name(s) {', '.join(twice)} used twice: give each its own")
        return tokens
