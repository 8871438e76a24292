"""Bearer tokens of the pipeline API: named, scoped to services and verbs, read from a Secret.

A token is matched by comparing the presented value with every configured one in constant time
(`hmac.compare_digest`, all of them, whichever matches), so neither timing nor the order of the
config tells a caller anything. Token values are never logged: only the names are.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from rollout.config import ApiConfig, ApiToken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiTokens:
    configured: tuple[tuple[ApiToken, bytes], ...]

    @classmethod
    def from_env(cls, config: ApiConfig, env: Mapping[str, str]) -> ApiTokens:
        """The tokens whose variable is set; one start-up line for each that is not."""
        found: list[tuple[ApiToken, bytes]] = []
        for token in config.tokens:
            value = env.get(token.token_env, "")
            if not value:
                log.warning(
                    "api token %s: environment variable %s is not set; requests with this "
                    "token are refused until it is set and the bot restarted",
                    token.name,
                    token.token_env,
                )
                continue
            found.append((token, value.encode()))
        return cls(tuple(found))

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(value.decode() for _, value in self.configured)

    def find(self, authorization: str | None) -> ApiToken | None:
        """The token an `Authorization: Bearer …` header presents, or None."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        given = presented.strip().encode("latin-1", errors="replace")
        match: ApiToken | None = None
        for token, value in self.configured:
            if hmac.compare_digest(given, value):
                match = token
        return match
