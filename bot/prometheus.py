"""Prometheus access from the config: TLS verification and credentials, read once at start-up.

Verification is on unless the config says `insecure_skip_verify: true`, and then start-up logs
a warning so nobody turns it off without it showing. Secrets come from the environment
variables the config names (`bearer_token_env`, `password_env`); a named variable that is not
set stops start-up with one line, rather than querying without credentials and reading every
401 as "no data".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from rollout.analysis import PrometheusAccess
from rollout.config import PrometheusConfig

log = logging.getLogger(__name__)


class PrometheusSetupError(Exception):
    """The Prometheus section cannot be used as it stands; the message names the key."""


def prometheus_access(config: PrometheusConfig, env: Mapping[str, str]) -> PrometheusAccess:
    tls, auth = config.tls, config.auth
    verify: bool | str = True
    if tls.insecure_skip_verify:
        log.warning(
            "prometheus.tls.insecure_skip_verify is true: the certificate of %s is NOT "
            "verified, so anyone in the path can read the queries and forge the answers "
            "that decide rollbacks; set prometheus.tls.ca_file instead",
            config.url,
        )
        verify = False
    elif tls.ca_file is not None:
        if not Path(tls.ca_file).is_file():
            raise PrometheusSetupError(
                f"prometheus.tls.ca_file: {tls.ca_file} does not exist or is not a file "
                "(mount the CA bundle there, or fix the path)"
            )
        verify = tls.ca_file
    token = _secret(env, auth.bearer_token_env, "prometheus.auth.bearer_token_env")
    password = _secret(env, auth.password_env, "prometheus.auth.password_env")
    basic = (auth.username, password) if auth.username and password is not None else None
    if (token or basic) and config.url.startswith("http://"):
        log.warning(
            "prometheus.auth is set but prometheus.url %s is plain http: the credentials "
            "travel unencrypted; use https",
            config.url,
        )
    return PrometheusAccess(verify=verify, bearer_token=token, basic_auth=basic)


def _secret(env: Mapping[str, str], name: str | None, key: str) -> str | None:
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise PrometheusSetupError(f"{key} names {name}, but that environment variable is not set")
    return value
