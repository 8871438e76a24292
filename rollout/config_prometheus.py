"""The `prometheus:` section of the config: where the metrics are, how its certificate is
checked, and which environment variables hold its credentials (never the secrets themselves).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from rollout.config_base import Duration, Frozen, env_name


class PrometheusTls(Frozen):
    """How the bot checks Prometheus' certificate: always, unless told in so many words."""

    ca_file: str | None = None  # a PEM bundle of the CAs to trust; default: the system's
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> PrometheusTls:
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError(
                "ca_file and insecure_skip_verify: true contradict each other: keep ca_file "
                "to verify against it, or drop it to skip verification"
            )
        return self


class PrometheusAuth(Frozen):
    """Credentials for Prometheus (Thanos, Mimir and managed Prometheus want them).

    The config names environment variables, never the secrets themselves, so the file can
    be committed and shown; start-up fails if a named variable is not set.
    """

    bearer_token_env: str | None = None
    username: str | None = None
    password_env: str | None = None

    _names = field_validator("bearer_token_env", "password_env")(env_name)

    @model_validator(mode="after")
    def _one_scheme(self) -> PrometheusAuth:
        if self.bearer_token_env is not None and (self.username or self.password_env):
            raise ValueError(
                "choose one way to authenticate: bearer_token_env, or username with "
                "password_env, not both"
            )
        if (self.username is None) != (self.password_env is None):
            raise ValueError(
                "basic auth needs both username and password_env (the variable holding "
                "the password)"
            )
        return self


class PrometheusConfig(Frozen):
    url: str = "http://127.0.0.1:9090"
    timeout: Duration = timedelta(seconds=10)
    tls: PrometheusTls = Field(default_factory=PrometheusTls)
    auth: PrometheusAuth = Field(default_factory=PrometheusAuth)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")
