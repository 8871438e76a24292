"""The bot's side of image registries and job gates: settings from config and environment."""

from __future__ import annotations

from collections.abc import Mapping

from bot.logging_setup import install_redaction
from rollout.config import Config
from rollout.oci import Credentials, RegistrySettings


class RegistryLoginMissing(Exception):
    """A login's password variable is not set (start-up stops with this message)."""


def registry_settings(config: Config, env: Mapping[str, str]) -> RegistrySettings:
    """How the bot reaches image registries; a login's password variable must be set."""
    logins: dict[str, Credentials] = {}
    for login in config.registry.logins:
        password = env.get(login.password_env)
        if not password:
            raise RegistryLoginMissing(
                f"registry.logins: {login.password_env} (the password for {login.registry}) "
                "is not set; set it from a Secret or remove the login"
            )
        logins[login.registry.lower()] = Credentials(username=login.username, password=password)
    install_redaction(*(credentials.password for credentials in logins.values()))
    return RegistrySettings(
        timeout=config.registry.timeout.total_seconds(),
        ca_file=config.registry.ca_file,
        plain_http=frozenset(host.lower() for host in config.registry.plain_http),
        logins=logins,
    )


def gateway_timeout(config: Config) -> float:
    return config.kubernetes.request_timeout.total_seconds()
