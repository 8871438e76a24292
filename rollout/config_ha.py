"""The `store:` and `ha:` sections of the config (DESIGN.md "High availability"): one replica
on a SQLite file, or several on PostgreSQL that elect a leader on a Kubernetes Lease.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import field_validator, model_validator

from rollout.config_base import K8S_NAME, Duration, Frozen


class StoreConfig(Frozen):
    """SQLite at `path` (one replica), or PostgreSQL at `url` (several; DESIGN.md "High
    availability"). `CANARY_STORE_URL` overrides `url` and is where the password goes."""

    path: str = "canary-bot.db"
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError(
                "store.url must be a PostgreSQL URL like postgresql://canary@db:5432/canary "
                "(leave it out to use the SQLite file at store.path)"
            )
        userinfo = rest.split("/", 1)[0].rpartition("@")[0]
        if ":" in userinfo or "password=" in rest:
            raise ValueError(
                "store.url holds a password; a config file is no place for one: write "
                "postgresql://user@host:5432/db here and give the whole URL, password "
                "included, in the CANARY_STORE_URL environment variable (from a Secret)"
            )
        return url


class HaConfig(Frozen):
    """Leader election on a Lease (DESIGN.md "High availability"); used only with `store.url`.

    The order matters: a leader that has not renewed within `renew_deadline` steps down, and
    the others take over only once `lease_duration` has passed since they last saw it renew,
    so the old leader has stopped before anyone else starts."""

    lease_name: str = "canary-bot"
    lease_namespace: str = "canary-bot"
    lease_duration: Duration = timedelta(seconds=15)
    renew_deadline: Duration = timedelta(seconds=10)
    retry_period: Duration = timedelta(seconds=2)

    @field_validator("lease_name", "lease_namespace")
    @classmethod
    def _k8s_name(cls, value: str) -> str:
        if not K8S_NAME.match(value):
            raise ValueError(f"{value!r}: use lower-case letters, digits and '-'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> HaConfig:
        if not timedelta(0) < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "need 0 < retry_period < renew_deadline < lease_duration (got "
                f"{self.retry_period.total_seconds():g}s, "
                f"{self.renew_deadline.total_seconds():g}s, "
                f"{self.lease_duration.total_seconds():g}s), like 2s, 10s, 15s"
            )
        return self
